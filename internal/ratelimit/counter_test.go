package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// longWindow is MaxWindow in seconds: its windows start on multiples of 315360000 since the
// epoch (the current one in December 2019, the next in December 2029), so tests that count
// across several calls do not straddle a boundary.
const longWindow = maxWindowSeconds

// backend is one Redis implementation the counter must work on, reached through the client
// the sidecar uses. The observers (admin, exists, ttl) go around the client under test, so
// that they cannot share its bugs.
type backend struct {
	rdb    *redisconn.Client
	admin  admin
	exists func(t *testing.T, key string) bool
	ttl    func(t *testing.T, key string) int64
	// stop makes the server unreachable, as an outage.
	stop func()
}

// flushScripts makes the server forget every script, as a restart or a failover does.
func (b *backend) flushScripts(t *testing.T) {
	t.Helper()
	if v := b.admin.do(t, "SCRIPT", nil, "FLUSH"); v != "OK" {
		t.Fatalf("SCRIPT FLUSH: %v", v)
	}
}

// backends are the servers every counter case runs against: a real redis-server over a
// socket, and miniredis, the embedded store the sidecar offers when no Redis is configured.
var backends = []struct {
	name  string
	start func(t testing.TB) *backend
}{
	{"redis-server", startRedisServer},
	{"miniredis", startMiniredis},
}

func startRedisServer(t testing.TB) *backend {
	s := redistest.Start(t)
	a := admin{newClient(t, s.URL(), false)}
	return &backend{
		rdb:    newClient(t, s.URL(), true),
		admin:  a,
		exists: func(t *testing.T, key string) bool { return a.integer(t, "EXISTS", []string{key}) == 1 },
		ttl:    func(t *testing.T, key string) int64 { return a.integer(t, "TTL", []string{key}) },
		stop:   s.Stop,
	}
}

func startMiniredis(t testing.TB) *backend {
	m, err := miniredis.Run()
	if err != nil {
		t.Fatalf("start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	url := "redis://" + m.Addr()
	return &backend{
		rdb:    newClient(t, url, false),
		admin:  admin{newClient(t, url, false)},
		exists: func(t *testing.T, key string) bool { return m.Exists(key) },
		ttl:    func(t *testing.T, key string) int64 { return int64(m.TTL(key) / time.Second) },
		stop:   m.Close,
	}
}

func add(t *testing.T, f *FixedWindow, hits ...Hit) FixedWindowResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	res, err := f.Add(ctx, hits)
	if err != nil {
		t.Fatalf("Add(%v): %v", hits, err)
	}
	if len(res.Counts) != len(hits) {
		t.Fatalf("Add(%v): %d counts, want %d", hits, len(res.Counts), len(hits))
	}
	return res
}

// windowKey is the key the script touches for h at now.
func windowKey(h Hit, now time.Time) string {
	s := now.Unix()
	return h.Key + ":" + strconv.FormatInt(h.Window, 10) + ":" + strconv.FormatInt(s-s%h.Window, 10)
}

func equalCounts(got []uint64, want ...uint64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

var counterCases = []struct {
	name string
	run  func(t *testing.T, b *backend)
}{
	{"counts after adding", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		h := Hit{Key: "{t}:a", Window: longWindow, Hits: 1}
		if got := add(t, f, h).Counts; !equalCounts(got, 1) {
			t.Fatalf("first add: got %v, want [1]", got)
		}
		h.Hits = 4
		if got := add(t, f, h).Counts; !equalCounts(got, 5) {
			t.Fatalf("second add: got %v, want [5]", got)
		}
	}},
	{"several hits in one call", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		got := add(t, f,
			Hit{Key: "{t}:a", Window: longWindow, Hits: 1},
			Hit{Key: "{t}:b", Window: longWindow, Hits: 5},
			Hit{Key: "{t}:a", Window: longWindow, Hits: 2},
			Hit{Key: "{t}:c", Window: longWindow, Hits: 0},
		).Counts
		if !equalCounts(got, 1, 5, 3, 0) {
			t.Fatalf("got %v, want [1 5 3 0]", got)
		}
	}},
	{"zero hits read without writing", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		h := Hit{Key: "{t}:read", Window: longWindow}
		res := add(t, f, h)
		if !equalCounts(res.Counts, 0) {
			t.Fatalf("read of a missing counter: got %v, want [0]", res.Counts)
		}
		if key := windowKey(h, res.Now); b.exists(t, key) {
			t.Fatalf("a read created %s", key)
		}
		add(t, f, Hit{Key: h.Key, Window: h.Window, Hits: 3})
		for range 2 {
			if got := add(t, f, h).Counts; !equalCounts(got, 3) {
				t.Fatalf("read after adding 3: got %v, want [3]", got)
			}
		}
	}},
	{"expiry set at the end of the window", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		h := Hit{Key: "{t}:ttl", Window: 60, Hits: 1}
		res := add(t, f, h)
		ttl := b.ttl(t, windowKey(h, res.Now))
		if ttl < 1 || ttl > h.Window+1 {
			t.Fatalf("TTL %d, want 1..%d", ttl, h.Window+1)
		}
		// The reset derived from Now must agree with the expiry the script set.
		now := res.Now.Unix()
		if want := now - now%60 + 60 - now + 1; ttl > want || ttl < want-2 {
			t.Fatalf("TTL %d, want about %d", ttl, want)
		}
	}},
	{"windows aligned to the epoch", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		for _, w := range []int64{1, 7, 60, 3600, 86400} {
			h := Hit{Key: "{t}:align", Window: w, Hits: 1}
			res := add(t, f, h)
			now := res.Now.Unix()
			key := h.Key + ":" + strconv.FormatInt(w, 10) + ":" + strconv.FormatInt(now-now%w, 10)
			if !b.exists(t, key) {
				t.Fatalf("window %d: key %s missing after Add at %v", w, key, res.Now)
			}
		}
	}},
	{"windows of one counter use different keys", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		hits := []Hit{{Key: "{t}:w", Window: 60, Hits: 1}, {Key: "{t}:w", Window: 3600, Hits: 1}}
		res := add(t, f, hits...)
		if !equalCounts(res.Counts, 1, 1) {
			t.Fatalf("got %v, want [1 1]: the windows share a counter", res.Counts)
		}
		k1, k2 := windowKey(hits[0], res.Now), windowKey(hits[1], res.Now)
		if k1 == k2 || !b.exists(t, k1) || !b.exists(t, k2) {
			t.Fatalf("keys %s and %s: want two distinct existing keys", k1, k2)
		}
	}},
	{"Now is Redis time", func(t *testing.T, b *backend) {
		res := add(t, NewFixedWindow(b.rdb), Hit{Key: "{t}:now", Window: 60})
		if d := time.Since(res.Now); d < -5*time.Second || d > 5*time.Second {
			t.Fatalf("Now %v is %v from the local clock", res.Now, d)
		}
	}},
	{"the script goes by its SHA1 and survives SCRIPT FLUSH", func(t *testing.T, b *backend) {
		c := &countingScripter{Scripter: b.rdb}
		f := NewFixedWindow(c)
		h := Hit{Key: "{t}:sha", Window: longWindow, Hits: 1}
		add(t, f, h) // a fresh server does not know the script yet: the client EVALs it
		if !b.admin.scriptExists(t, f.sha) {
			t.Fatalf("after the first Add the server does not know script %s: EVALSHA would never hit", f.sha)
		}
		sha0, eval0, counted := b.admin.scriptCalls(t)
		for range 3 {
			add(t, f, h)
		}
		if sha, eval, _ := b.admin.scriptCalls(t); counted && (sha-sha0 != 3 || eval != eval0) {
			t.Fatalf("3 calls with the script loaded: %d EVALSHA, %d EVAL; want 3 and 0", sha-sha0, eval-eval0)
		}
		b.flushScripts(t)
		if got := add(t, f, h).Counts; !equalCounts(got, 5) {
			t.Fatalf("after SCRIPT FLUSH: got %v, want [5]", got)
		}
		if n, bad := c.calls.Load(), c.badSHA.Load(); n != 5 || bad != 0 {
			t.Fatalf("%d script calls, %d not named by their SHA1; want 5 and 0", n, bad)
		}
	}},
	{"concurrent adds are exact", func(t *testing.T, b *backend) {
		const workers, perWorker, limit = 64, 50, 1000
		f := NewFixedWindow(b.rdb)
		h := Hit{Key: "{t}:race", Window: longWindow, Hits: 1}
		var (
			mu     sync.Mutex
			counts []uint64
			wg     sync.WaitGroup
			failed atomic.Int64
		)
		for range workers {
			wg.Go(func() {
				local := make([]uint64, 0, perWorker)
				for range perWorker {
					res, err := f.Add(t.Context(), []Hit{h})
					if err != nil {
						failed.Add(1)
						return
					}
					local = append(local, res.Counts[0])
				}
				mu.Lock()
				counts = append(counts, local...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d workers failed", n)
		}
		seen := make(map[uint64]bool, len(counts))
		allowed := 0
		for _, c := range counts {
			if seen[c] {
				t.Fatalf("count %d returned twice", c)
			}
			seen[c] = true
			if c <= limit {
				allowed++
			}
		}
		if len(counts) != workers*perWorker || !seen[workers*perWorker] {
			t.Fatalf("%d results, want %d ending at %d", len(counts), workers*perWorker, workers*perWorker)
		}
		if allowed != limit {
			t.Fatalf("%d results within the limit, want exactly %d", allowed, limit)
		}
	}},
	{"a counter that is not an integer is an error", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		h := Hit{Key: "{t}:text", Window: longWindow}
		res := add(t, f, h)
		b.admin.set(t, windowKey(h, res.Now), "abc", 0)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		for _, hits := range []uint64{1, 0} {
			h.Hits = hits
			_, err := f.Add(ctx, []Hit{h})
			if err == nil {
				t.Fatalf("%d hits on a non-integer: no error", hits)
			}
			if errors.Is(err, ErrBadReply) {
				t.Fatalf("%d hits on a non-integer: %v, want the server's error", hits, err)
			}
		}
	}},
	{"a server that is down fails fast", func(t *testing.T, b *backend) {
		f := NewFixedWindow(b.rdb)
		add(t, f, Hit{Key: "{t}:down", Window: 60, Hits: 1})
		b.stop()
		// The client redials in the background and may wait for a dial; the caller's
		// deadline must cut any waiting short: Add adds no waiting of its own.
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := f.Add(ctx, []Hit{{Key: "{t}:down", Window: 60, Hits: 1}})
		took := time.Since(start)
		if err == nil {
			t.Fatal("no error with the server down")
		}
		if errors.Is(err, ErrBadReply) || errors.Is(err, ErrInvalidHit) {
			t.Fatalf("error %v: want a connection error", err)
		}
		if took > 500*time.Millisecond {
			t.Fatalf("took %v to fail with a 150ms deadline: %v", took, err)
		}
	}},
}

func TestFixedWindow(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			for _, tc := range counterCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, be.start(t))
				})
			}
		})
	}
}

func TestAddRejectsInvalidHits(t *testing.T) {
	c := &countingScripter{Scripter: fakeScripter{}}
	f := NewFixedWindow(c)
	for _, h := range []Hit{
		{Key: "", Window: 60, Hits: 1},
		{Key: "k", Window: 0, Hits: 1},
		{Key: "k", Window: -60, Hits: 1},
		{Key: "k", Window: 60, Hits: 1 << 63},
	} {
		if _, err := f.Add(t.Context(), []Hit{{Key: "ok", Window: 1}, h}); !errors.Is(err, ErrInvalidHit) {
			t.Errorf("Add(%+v): error %v, want ErrInvalidHit", h, err)
		}
	}
	res, err := f.Add(t.Context(), nil)
	if err != nil || !res.Now.IsZero() || res.Counts != nil {
		t.Errorf("Add(nil) = %+v, %v; want a zero result", res, err)
	}
	if n := c.calls.Load(); n != 0 {
		t.Errorf("%d calls reached redis, want 0", n)
	}
}

func BenchmarkAdd(b *testing.B) {
	if redistest.Binary() == "" {
		b.Skip("redis-server not installed")
	}
	rdb := startRedisServer(b).rdb
	f := NewFixedWindow(rdb)
	for _, n := range []int{1, 4} {
		hits := make([]Hit, n)
		for i := range hits {
			hits[i] = Hit{Key: "{bench}:" + strconv.Itoa(i), Window: 60, Hits: 1}
		}
		b.Run(strconv.Itoa(n)+"hits", func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				if _, err := f.Add(ctx, hits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
