package redisconn

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// BenchmarkEval is the hot path of a rate-limit decision: one EVALSHA of a counting script
// under the 25 ms deadline, from many goroutines at once, on one key each.
func BenchmarkEval(b *testing.B) {
	s := redistest.Start(b)
	c, err := New(Options{URL: s.URL()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	const script = `local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n`
	sha := sha1Hex(script)
	var next atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		keys := []string{"bench:" + strconv.FormatInt(next.Add(1), 10)}
		for pb.Next() {
			ctx, cancel := c.WithTimeout(context.Background())
			_, err := c.Eval(ctx, sha, script, keys, 60000)
			cancel()
			if err != nil && !IsTimeout(err) {
				b.Error(err)
				return
			}
		}
	})
}
