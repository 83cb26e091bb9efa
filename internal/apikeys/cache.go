package apikeys

import (
	"context"
	"fmt"
	"time"
)

// CacheOptions turns on client-side caching of record reads: Lookup reads the record with
// Redis.HGetAllCached instead of HGetAll, so that a key looked up recently (or a well-formed
// key never issued) is answered from this process's memory without a round trip.
//
// The cache is the Redis client's (RESP3 CLIENT TRACKING, see redisconn.Client.HGetAllCached),
// not this package's: Redis itself tells the client when a cached record changes, on every
// topology and with no server configuration, so a revoke (Revoke's HSET, from the CLI or any
// other process) invalidates the entry before the next read. Expiry needs no invalidation: it
// is judged against the record on every Lookup.
type CacheOptions struct {
	// TTL bounds how long an entry is served locally. The invalidation is what keeps entries
	// fresh; TTL bounds the damage if one were ever lost. It must be positive.
	TTL time.Duration
	// Observe, when set, hears every cached read's result, with the words of the cache
	// metrics: "hit" (a record from the cache), "negative_hit" (a key never issued, from the
	// cache) and "miss" (the read went to Redis, whether or not it then failed). It is called
	// only for well-formed keys, on the request's goroutine: keep it cheap.
	Observe func(result string)
}

// The cache results Observe hears.
const (
	cacheHit         = "hit"
	cacheNegativeHit = "negative_hit"
	cacheMiss        = "miss"
)

func checkCache(c *CacheOptions) error {
	if c != nil && c.TTL <= 0 {
		return fmt.Errorf("apikeys: cache TTL %v is not positive", c.TTL)
	}
	return nil
}

// readRecord is HGETALL of a record key, through the client-side cache when it is on. A
// missing record is an empty map.
func (s *Store) readRecord(ctx context.Context, key string) (map[string]string, error) {
	c := s.cache
	if c == nil {
		return s.rdb.HGetAll(ctx, key)
	}
	m, hit, err := s.rdb.HGetAllCached(ctx, key, c.TTL)
	if c.Observe != nil {
		c.Observe(cacheResult(hit, len(m) == 0, err))
	}
	return m, err
}

// cacheResult names the outcome of one cached read for CacheOptions.Observe.
func cacheResult(hit, empty bool, err error) string {
	switch {
	case !hit || err != nil:
		return cacheMiss
	case empty:
		return cacheNegativeHit
	}
	return cacheHit
}
