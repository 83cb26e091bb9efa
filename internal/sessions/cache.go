package sessions

import (
	"context"
	"errors"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// CacheOptions turns on client-side caching of session reads: Resolve reads the session key
// with Redis.GetCached instead of Get, so that a session (or a sid Redis does not know) read
// recently is answered from this process's memory without a round trip.
//
// The cache is the Redis client's (RESP3 CLIENT TRACKING, see redisconn.Client.GetCached), not
// this package's: Redis itself tells the client when a cached key changes, on every topology
// and with no server configuration, so a logout (the app's DEL), a changed session or a
// touch by anyone invalidates the entry before the next read. Nothing here has to be told
// about changes, and nothing can serve an entry after its invalidation has arrived.
type CacheOptions struct {
	// TTL bounds how long an entry is served locally. The invalidation is what keeps entries
	// fresh; TTL bounds the damage if one were ever lost (a broken connection drops the
	// whole cache of that connection anyway). The client also bounds each entry by the key's
	// own TTL, so an expired session is never served. It must be positive.
	TTL time.Duration
	// Observe, when set, hears every cached read's result, with the words of the cache
	// metrics: "hit" (a session from the cache), "negative_hit" (an unknown sid from the
	// cache) and "miss" (the read went to Redis, whether or not it then failed). It is called
	// only after the signature verified, on the request's goroutine: keep it cheap.
	Observe func(result string)
}

// The cache results Observe hears.
const (
	cacheHit         = "hit"
	cacheNegativeHit = "negative_hit"
	cacheMiss        = "miss"
)

// get reads the session key, through the client-side cache when it is on.
func (s *Store) get(ctx context.Context, key string) (string, error) {
	c := s.cache
	if c == nil {
		return s.rdb.Get(ctx, key)
	}
	data, hit, err := s.rdb.GetCached(ctx, key, c.TTL)
	if c.Observe != nil {
		c.Observe(cacheResult(hit, err))
	}
	return data, err
}

// cacheResult names the outcome of one cached read for CacheOptions.Observe.
func cacheResult(hit bool, err error) string {
	switch {
	case !hit:
		return cacheMiss
	case errors.Is(err, redisconn.ErrNil):
		return cacheNegativeHit
	}
	return cacheHit
}
