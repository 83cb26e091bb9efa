package apikeys

import (
	"context"
	"fmt"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// CacheOptions turns on client-side caching of record reads (redisconn.CacheOptions): a key
// looked up recently, or a well-formed key never issued, is answered without a round trip, and
// a revoke (Revoke's HSET, from the CLI or any other process) invalidates the entry before the
// next read. Expiry needs no invalidation: it is judged against the record on every Lookup.
// Observe is called only for well-formed keys.
type CacheOptions = redisconn.CacheOptions

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
		c.Observe(redisconn.CacheResult(hit, err == nil && len(m) == 0, err))
	}
	return m, err
}
