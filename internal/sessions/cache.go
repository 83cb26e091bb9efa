package sessions

import (
	"context"
	"errors"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// CacheOptions turns on client-side caching of session reads (redisconn.CacheOptions): a
// session, or a sid Redis does not know, read recently is answered without a round trip, and a
// logout (the app's DEL), a changed session or a touch by anyone invalidates the entry before
// the next read. Observe is called only after the cookie's signature verified.
type CacheOptions = redisconn.CacheOptions

// get reads the session key, through the client-side cache when it is on.
func (s *Store) get(ctx context.Context, key string) (string, error) {
	c := s.cache
	if c == nil {
		return s.rdb.Get(ctx, key)
	}
	data, hit, err := s.rdb.GetCached(ctx, key, c.TTL)
	if c.Observe != nil {
		c.Observe(redisconn.CacheResult(hit, errors.Is(err, redisconn.ErrNil), err))
	}
	return data, err
}
