package apikeys

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// countingReader counts the HGETALLs that go through it.
type countingReader struct {
	HashReader
	n atomic.Int64
}

func (c *countingReader) HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd {
	c.n.Add(1)
	return c.HashReader.HGetAll(ctx, key)
}

// The sidecar reads records through its pipelined decision client: the whole contract holds
// with Lookup on a redisconn.Pipe, and every Lookup goes through it.
func TestStoreLookupsThroughPipe(t *testing.T) {
	srv, rdb := startRedis(t)
	rc, err := redisconn.New(redisconn.Options{URL: srv.URL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	p := rc.NewPipe(redisconn.PipeOptions{})
	t.Cleanup(func() { _ = p.Close() })
	reader := &countingReader{HashReader: p}
	runContract(t, rdb, Options{Lookups: reader})
	if reader.n.Load() == 0 {
		t.Fatal("no Lookup went through Options.Lookups")
	}
}
