package sessions

import (
	"time"

	"github.com/extauthz/extauthz/internal/localcache"
)

// CacheOptions turns on the local session cache: resolved sessions, and sids Redis does not
// know, are kept in memory so that a request for a cached session makes no Redis call (except
// its throttled touch). The cache serves entries only while it is active (see
// Store.Invalidation): whoever activates it promises to invalidate every change of a session
// key, as the keyspace watcher does. Each entry lives at most TTL, and at most until the
// session's own cookie.expires when that is still ahead, which bounds the staleness if a
// change is ever missed.
//
// Observe hears every lookup's result (see localcache.Options).
type CacheOptions = localcache.Options

// cached is one cache entry.
type cached struct {
	sess     *Session
	touchSec int64
}

// Invalidation returns the cache's invalidation side, keyed by sid (the Redis key minus the
// prefix), or nil when the cache is off. The cache starts inactive: it serves nothing until
// SetActive(true).
func (s *Store) Invalidation() interface {
	Invalidate(sid string)
	SetActive(on bool)
} {
	if s.cache == nil {
		return nil
	}
	return s.cache
}

// lifeFrom returns how long a session expiring at exp may stay cached from now: until exp when
// that is ahead, else unbounded (0). A past cookie.expires on a live key means the app renews
// the key's TTL without rewriting the session (rolling sessions with touch), so it says
// nothing about when the key goes.
func lifeFrom(exp, now time.Time) time.Duration {
	if exp.IsZero() {
		return 0
	}
	if d := exp.Sub(now); d > 0 {
		return d
	}
	return 0
}
