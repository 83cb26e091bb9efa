package redisconn

import "time"

// CacheOptions turns on client-side caching of a store's reads (sessions, API key records):
// the store reads with GetCached or HGetAllCached instead of Get or HGetAll, so that a key read
// recently, or one Redis does not have, is answered from this process's memory without a
// round trip. The cache is this client's (RESP3 CLIENT TRACKING): Redis itself tells it when a
// cached key changes, on every topology and with no server configuration, so a logout (the
// app's DEL), a changed session or a revoke invalidates the entry before the next read.
type CacheOptions struct {
	// TTL bounds how long an entry is served locally. The invalidation is what keeps entries
	// fresh; TTL bounds the damage if one were ever lost (a broken connection drops the whole
	// cache of that connection anyway). The client also bounds each entry by the key's own
	// TTL. It must be positive.
	TTL time.Duration
	// Observe, when set, hears every cached read's result with the words of the cache metrics
	// (CacheHit, CacheNegativeHit, CacheMiss), on the request's goroutine: keep it cheap.
	Observe func(result string)
}

// The results CacheOptions.Observe hears: a value from the cache, a key Redis does not have
// from the cache, and a read that went to Redis (whether or not it then failed).
const (
	CacheHit         = "hit"
	CacheNegativeHit = "negative_hit"
	CacheMiss        = "miss"
)

// CacheResult names the outcome of one cached read: hit as GetCached or HGetAllCached reported
// it, missing when the key did not exist, err the read's error (ErrNil included).
func CacheResult(hit, missing bool, err error) string {
	switch {
	case !hit:
		return CacheMiss
	case missing:
		return CacheNegativeHit
	case err != nil:
		return CacheMiss
	}
	return CacheHit
}
