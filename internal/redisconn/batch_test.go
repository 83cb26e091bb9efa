package redisconn

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
)

const incrScript = "return redis.call('INCR', KEYS[1])"

func batchClient(t *testing.T, s *redistest.Server, timeout time.Duration) redis.UniversalClient {
	t.Helper()
	return newClient(t, Options{URL: s.URL(), Timeout: timeout}).Redis()
}

// Concurrent callers get exactly their own replies, and their commands travel in pipelines.
func TestBatcherConcurrentExactAndBatched(t *testing.T) {
	s := redistest.Start(t)
	var maxBatch, pipelines atomic.Int64
	b := NewBatcher(batchClient(t, s, time.Second), BatchOptions{Slots: 2, Observe: func(n int) {
		pipelines.Add(1)
		for {
			m := maxBatch.Load()
			if int64(n) <= m || maxBatch.CompareAndSwap(m, int64(n)) {
				return
			}
		}
	}})
	const workers, each = 64, 200
	seen := make([]atomic.Bool, workers*each+1)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				n, err := b.Eval(ctx, incrScript, []string{"counter"}).Int64()
				cancel()
				if err != nil || n < 1 || n > workers*each || seen[n].Swap(true) {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed or got another caller's reply", failed.Load())
	}
	got, err := s.Do(context.Background(), "GET", "counter")
	if err != nil || got != "12800" {
		t.Fatalf("counter = %q %v, want 12800", got, err)
	}
	if maxBatch.Load() < 2 {
		t.Fatalf("largest pipeline = %d: concurrent commands were never coalesced", maxBatch.Load())
	}
	if pipelines.Load() >= workers*each {
		t.Fatalf("%d pipelines for %d commands: nothing was coalesced", pipelines.Load(), workers*each)
	}
}

// At light load every command goes out alone, at once.
func TestBatcherSequentialSendsAlone(t *testing.T) {
	s := redistest.Start(t)
	var sizes []int
	var mu sync.Mutex
	b := NewBatcher(batchClient(t, s, time.Second), BatchOptions{Observe: func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}})
	ctx := context.Background()
	if err := b.Get(ctx, "missing").Err(); err != redis.Nil {
		t.Fatalf("GET missing = %v, want redis.Nil", err)
	}
	if _, err := b.Eval(ctx, "return redis.call('SET', KEYS[1], 'v')", []string{"k"}).Result(); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET k = %q %v", v, err)
	}
	if ok, err := b.Expire(ctx, "k", time.Minute).Result(); err != nil || !ok {
		t.Fatalf("EXPIRE = %v %v", ok, err)
	}
	// NOSCRIPT comes back as the command's own error, so EVALSHA-then-EVAL still works.
	if err := b.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(); !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Fatalf("unknown script = %v, want NOSCRIPT", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sizes) != 5 {
		t.Fatalf("%d pipelines for 5 sequential calls", len(sizes))
	}
	for _, n := range sizes {
		if n != 1 {
			t.Fatalf("pipeline sizes %v: sequential calls must go out alone", sizes)
		}
	}
}

// A stuck Redis: every caller gets its deadline's error on time; the batcher works again after.
func TestBatcherDeadlinesAndRecovery(t *testing.T) {
	s := redistest.Start(t)
	rdb := batchClient(t, s, 2*time.Second)
	b := NewBatcher(rdb, BatchOptions{Slots: 1})
	if _, err := s.Do(context.Background(), "CLIENT", "PAUSE", "700", "ALL"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var late, ok atomic.Int64
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := b.Eval(ctx, incrScript, []string{"paused"}).Err()
			if time.Since(start) > 400*time.Millisecond {
				late.Add(1)
			}
			if err == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if late.Load() != 0 || ok.Load() != 0 {
		t.Fatalf("during the pause: %d late, %d succeeded", late.Load(), ok.Load())
	}
	time.Sleep(800 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.Eval(ctx, incrScript, []string{"after"}).Err(); err != nil {
		t.Fatalf("after the pause: %v", err)
	}
}

func TestBatcherRedisDown(t *testing.T) {
	s := redistest.Start(t)
	b := NewBatcher(batchClient(t, s, 100*time.Millisecond), BatchOptions{})
	s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Get(ctx, "k").Err(); err == nil || err == redis.Nil {
		t.Fatalf("redis down: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("redis down: took %v", took)
	}
}

func BenchmarkBatcherParallel(b *testing.B) {
	s := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	b.Cleanup(func() { rdb.Close() })
	for _, mode := range []string{"direct", "batched"} {
		b.Run(mode, func(b *testing.B) {
			var sc interface {
				Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd
			} = rdb
			if mode == "batched" {
				sc = NewBatcher(rdb, BatchOptions{})
			}
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := sc.Eval(ctx, incrScript, []string{"bench"}).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
