package apikeys

import "github.com/extauthz/extauthz/internal/localcache"

// CacheOptions turns on the local record cache: records, and hashes of keys never issued, are
// kept in memory so that a request with a cached key makes no Redis call. The cache serves
// entries only while it is active (see Store.Invalidation): whoever activates it promises to
// invalidate every change of a record key, as the keyspace watcher does, so that a revoke is
// seen at once. Each entry lives at most TTL, which bounds the staleness if a change is ever
// missed. A key's expiry is checked on every hit, against the cached record.
//
// Observe hears every lookup's result (see localcache.Options).
type CacheOptions = localcache.Options

// Invalidation returns the cache's invalidation side, keyed by the record key minus the
// prefix (the key's hash), or nil when the cache is off. The cache starts inactive.
func (s *Store) Invalidation() interface {
	Invalidate(hash string)
	SetActive(on bool)
} {
	if s.cache == nil {
		return nil
	}
	return s.cache
}
