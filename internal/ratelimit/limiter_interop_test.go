package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// rlrIncrement behaves as rate-limit-redis 5's increment script (source/scripts.ts since
// its PR #218), command for command: PTTL first; at 0 or below (missing key, or no expiry)
// SET the key to 1 with PX windowMs and answer {1, windowMs}; else INCR, PEXPIRE only when
// resetExpiryOnChange (ARGV[1] == "1"), and answer {hits, pttl}. It is written here from
// that description so that the tests exercise the exact keys Express apps leave behind.
const rlrIncrement = `
local windowMs = tonumber(ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  redis.call('SET', KEYS[1], 1, 'PX', windowMs)
  return {1, windowMs}
end
local hits = redis.call('INCR', KEYS[1])
if ARGV[1] == '1' then
  redis.call('PEXPIRE', KEYS[1], windowMs)
  ttl = windowMs
end
return {hits, ttl}
`

// rlrGet behaves as rate-limit-redis's get script: the raw value and PTTL.
const rlrGet = `
local hits = redis.call('GET', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
return {hits, ttl}
`

// expressHit counts one hit the way an Express app with rate-limit-redis (prefix "rl:",
// resetExpiryOnChange off, as its lib.ts sends ARGV) does, and returns its reply.
func expressHit(t *testing.T, b *limiterBackend, key string, window time.Duration) (hits, pttl int64) {
	t.Helper()
	v, ok := b.admin.eval(t, rlrIncrement, []string{key}, "0", strconv.FormatInt(window.Milliseconds(), 10)).([]any)
	if !ok || len(v) != 2 {
		t.Fatalf("rate-limit-redis increment: reply %v", v)
	}
	hits, ok1 := v[0].(int64)
	pttl, ok2 := v[1].(int64)
	if !ok1 || !ok2 {
		t.Fatalf("rate-limit-redis increment: reply %v, want two integers", v)
	}
	return hits, pttl
}

var interopCases = []struct {
	name string
	run  func(t *testing.T, b *limiterBackend)
}{
	{"the sidecar counts on from an Express app's key", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		key := "rl:203.0.113.7"
		r := Request{Key: key, Limit: Limit{Requests: 5, Window: time.Minute}, Cost: 1}
		for want := int64(1); want <= 3; want++ {
			hits, pttl := expressHit(t, b, key, time.Minute)
			if hits != want || pttl <= 0 || pttl > 60000 {
				t.Fatalf("express hit %d: {%d, %d}, want {%d, (0, 60000]}", want, hits, pttl, want)
			}
		}
		d := allowOne(t, l, r)
		if !d.Allowed || d.Remaining != 1 {
			t.Fatalf("sidecar after 3 express hits: %+v, want allowed with 1 left", d)
		}
		b.within(t, "reset", d.Reset, time.Minute, time.Second)
		if hits, _ := expressHit(t, b, key, time.Minute); hits != 5 {
			t.Fatalf("express after the sidecar: %d hits, want 5", hits)
		}
		d = allowOne(t, l, r)
		if d.Allowed || d.Remaining != 0 || d.RetryAfter != d.Reset || d.Reset <= 0 {
			t.Fatalf("sixth hit: %+v, want denied until the window ends", d)
		}
		// Both sides count a denied hit, so the Express app sees 7 and denies too.
		if hits, _ := expressHit(t, b, key, time.Minute); hits != 7 {
			t.Fatalf("express after a denial: %d hits, want 7", hits)
		}
	}},
	{"an Express app counts on from the sidecar's key", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		key := "rl:198.51.100.1"
		r := Request{Key: key, Limit: Limit{Requests: 5, Window: time.Minute}, Cost: 1}
		allowOne(t, l, r)
		allowOne(t, l, r)
		hits, pttl := expressHit(t, b, key, time.Minute)
		if hits != 3 || pttl <= 0 || pttl > 60000 {
			t.Fatalf("express after 2 sidecar hits: {%d, %d}, want {3, (0, 60000]}", hits, pttl)
		}
		v, ok := b.admin.eval(t, rlrGet, []string{key}).([]any)
		if !ok || len(v) != 2 || v[0] != "3" {
			t.Fatalf("rate-limit-redis get: %v, want [\"3\" pttl]", v)
		}
	}},
	{"a key without expiry opens a new window on both sides", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		r := Request{Key: "rl:stale", Limit: Limit{Requests: 5, Window: time.Minute}, Cost: 1}
		b.admin.set(t, r.Key, "9", 0)
		if d := allowOne(t, l, r); !d.Allowed || d.Remaining != 4 {
			t.Fatalf("sidecar on a key without expiry: %+v, want a new window", d)
		}
		if pttl := b.admin.pttl(t, r.Key); pttl <= 0 || pttl > time.Minute {
			t.Fatalf("PTTL %v after opening a window, want (0, 1m]", pttl)
		}
		b.admin.do(t, "PERSIST", []string{r.Key})
		if hits, pttl := expressHit(t, b, r.Key, time.Minute); hits != 1 || pttl != 60000 {
			t.Fatalf("express on a key without expiry: {%d, %d}, want {1, 60000}", hits, pttl)
		}
	}},
}

func TestLimiterRateLimitRedisInterop(t *testing.T) {
	for _, be := range limiterBackends {
		t.Run(be.name, func(t *testing.T) {
			for _, tc := range interopCases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, be.start(t))
				})
			}
		})
	}
}

// TestLimiterConcurrentExactness hammers one subject from 64 goroutines on a real server:
// a limit of 100 must admit exactly 100, whatever the interleaving.
func TestLimiterConcurrentExactness(t *testing.T) {
	const workers, perWorker = 64, 8
	long := time.Duration(longWindow) * time.Second
	for _, tc := range []struct {
		name  string
		reqs  []Request
		want  int
		check func(t *testing.T, b *limiterBackend)
	}{
		{"fixed", []Request{{Key: "rl:{c}", Limit: Limit{Requests: 100, Window: long}, Cost: 1}}, 100,
			func(t *testing.T, b *limiterBackend) {
				// One fixed request per call: every hit is counted, as rate-limit-redis does.
				if got := b.get(t, "rl:{c}"); got != strconv.Itoa(workers*perWorker) {
					t.Fatalf("counter %q, want %d", got, workers*perWorker)
				}
			}},
		{"sliding", []Request{{Key: "{c}", Limit: Limit{Requests: 100, Window: long, Algorithm: AlgorithmSliding}, Cost: 1}}, 100, nil},
		{"gcra", []Request{{Key: "{c}", Limit: Limit{Requests: 100, Window: time.Hour, Algorithm: AlgorithmGCRA, Burst: 100}, Cost: 1}}, 100, nil},
		{"fixed and gcra all or nothing", []Request{
			{Key: "rl:{c}f", Limit: Limit{Requests: 100, Window: long}, Cost: 1},
			{Key: "{c}g", Limit: Limit{Requests: 50, Window: time.Hour, Algorithm: AlgorithmGCRA}, Cost: 1},
		}, 50, func(t *testing.T, b *limiterBackend) {
			if got := b.get(t, "rl:{c}f"); got != "50" {
				t.Fatalf("fixed counter %q, want 50: denied calls were counted", got)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := startLimiterRedis(t)
			l := NewLimiter(b.rdb)
			var allowed, failed atomic.Int64
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range perWorker {
						ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
						_, ds, err := l.Allow(ctx, tc.reqs)
						cancel()
						if err != nil {
							failed.Add(1)
							return
						}
						ok := true
						for _, d := range ds {
							ok = ok && d.Allowed
						}
						if ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if n := failed.Load(); n > 0 {
				t.Fatalf("%d workers failed", n)
			}
			if got := allowed.Load(); got != int64(tc.want) {
				t.Fatalf("%d of %d calls allowed, want exactly %d", got, workers*perWorker, tc.want)
			}
			if tc.check != nil {
				tc.check(t, b)
			}
		})
	}
}

func BenchmarkLimiterAllow(b *testing.B) {
	if redistest.Binary() == "" {
		b.Skip("redis-server not installed")
	}
	l := NewLimiter(startLimiterRedis(b).rdb)
	// Limits high enough that every call is allowed and writes, the common and costlier case.
	fixed := Request{Key: "rl:{bench}f", Limit: Limit{Requests: 1 << 40, Window: time.Minute}, Cost: 1}
	sliding := Request{Key: "{bench}s", Limit: Limit{Requests: 1e9, Window: time.Minute, Algorithm: AlgorithmSliding}, Cost: 1}
	gcra := Request{Key: "{bench}g", Limit: Limit{Requests: 1e9, Window: time.Minute, Algorithm: AlgorithmGCRA}, Cost: 1}
	for _, bc := range []struct {
		name string
		reqs []Request
	}{
		{"1limit/fixed", []Request{fixed}},
		{"1limit/sliding", []Request{sliding}},
		{"1limit/gcra", []Request{gcra}},
		{"3limits", []Request{fixed, sliding, gcra}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if _, _, err := l.Allow(ctx, bc.reqs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
