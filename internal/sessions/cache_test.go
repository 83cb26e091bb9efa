package sessions

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/keyspace"
	"github.com/extauthz/extauthz/internal/redistest"
)

func cachedStore(t *testing.T, rdb Redis, observe func(string)) *Store {
	t.Helper()
	opts := richOptions
	opts.Cache = &CacheOptions{TTL: time.Minute, NegativeTTL: time.Minute, MaxEntries: 1000, Observe: observe}
	return newStore(t, rdb, opts)
}

type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) observe(s string) { r.mu.Lock(); r.n[s]++; r.mu.Unlock() }
func (r *results) get(s string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.n[s] }

func TestCache(t *testing.T) {
	b := startRedisServer(t)
	ctx := t.Context()
	c := &countingRedis{Redis: b.rdb}
	res := &results{n: map[string]int{}}
	s := cachedStore(t, c, res.observe)
	b.set(t, "sess:abc", richSession)
	cookie := cookieHeader("abc", "new-secret")

	// Inactive: every request asks Redis.
	for range 3 {
		if _, err := s.Resolve(ctx, cookie); err != nil {
			t.Fatal(err)
		}
	}
	if g := c.gets.Load(); g != 3 || res.get("bypass") != 3 {
		t.Fatalf("inactive cache: %d GETs, %d bypass; want 3, 3", g, res.get("bypass"))
	}

	inv := s.Invalidation()
	inv.SetActive(true)
	c.gets.Store(0)
	first, err := s.Resolve(ctx, cookie)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		got, err := s.Resolve(ctx, cookie)
		if err != nil || got != first {
			t.Fatalf("cached Resolve = %v, %v; want the first session", got, err)
		}
	}
	if g := c.gets.Load(); g != 1 {
		t.Fatalf("active cache: %d GETs for 6 requests, want 1", g)
	}
	if res.get("miss") != 1 || res.get("hit") != 5 {
		t.Fatalf("observed miss=%d hit=%d, want 1 and 5", res.get("miss"), res.get("hit"))
	}

	// A logout: the key goes, the watcher invalidates, the next request asks Redis again.
	if err := b.rdb.Del(ctx, "sess:abc").Err(); err != nil {
		t.Fatal(err)
	}
	inv.Invalidate("abc")
	if _, err := s.Resolve(ctx, cookie); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after logout: %v, want ErrNoSession", err)
	}
	// Unknown sids are remembered as such...
	c.gets.Store(0)
	for range 3 {
		if _, err := s.Resolve(ctx, cookie); !errors.Is(err, ErrNoSession) {
			t.Fatalf("negative entry: %v", err)
		}
	}
	if g := c.gets.Load(); g != 0 || res.get("negative_hit") != 3 {
		t.Fatalf("negative entry: %d GETs, %d negative hits; want 0, 3", g, res.get("negative_hit"))
	}
	// ...until the session is saved (a login), whose SET is a notification too.
	b.set(t, "sess:abc", richSession)
	inv.Invalidate("abc")
	if _, err := s.Resolve(ctx, cookie); err != nil {
		t.Fatalf("after login: %v", err)
	}
	// Deactivation (a lost subscription) stops serving at once.
	inv.SetActive(false)
	c.gets.Store(0)
	if _, err := s.Resolve(ctx, cookie); err != nil || c.gets.Load() != 1 {
		t.Fatalf("after deactivation: err %v, %d GETs; want a GET", err, c.gets.Load())
	}
}

// A session whose cookie.expires is near is not served from the cache past it.
func TestCacheHonoursCookieExpires(t *testing.T) {
	b := startRedisServer(t)
	c := &countingRedis{Redis: b.rdb}
	s := cachedStore(t, c, nil)
	s.Invalidation().SetActive(true)
	exp := time.Now().Add(300 * time.Millisecond).UTC().Format("2006-01-02T15:04:05.000Z")
	b.set(t, "sess:soon", `{"cookie":{"originalMaxAge":300,"expires":"`+exp+`"},"passport":{"user":1}}`)
	cookie := cookieHeader("soon", "new-secret")
	for range 2 {
		if _, err := s.Resolve(t.Context(), cookie); err != nil {
			t.Fatal(err)
		}
	}
	if g := c.gets.Load(); g != 1 {
		t.Fatalf("%d GETs before expiry, want 1", g)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := s.Resolve(t.Context(), cookie); err != nil {
		t.Fatal(err)
	}
	if g := c.gets.Load(); g != 2 {
		t.Fatalf("%d GETs after cookie.expires, want 2", g)
	}
}

// With a real keyspace watcher on a real Redis, a logout made by someone else (the app's DEL)
// is seen by the very next request once its notification arrives: well under 100ms here.
func TestCacheWithKeyspaceWatcher(t *testing.T) {
	srv := redistest.Start(t, "--notify-keyspace-events", "KA")
	rdb := newTestClient(t, srv.Addr())
	s := cachedStore(t, rdb, nil)
	w := keyspace.New(rdb, nil, keyspace.Options{})
	w.Watch("session", "sess:", s.Invalidation())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(3 * time.Second)
	for !w.Active() {
		if time.Now().After(deadline) {
			t.Fatal("watcher not active")
		}
		time.Sleep(5 * time.Millisecond)
	}

	do := func(args ...string) {
		if line, err := srv.Do(t.Context(), args...); err != nil || strings.HasPrefix(line, "-") {
			t.Fatalf("%v: %q %v", args, line, err)
		}
	}
	do("SET", "sess:w1", richSession, "EX", "100")
	cookie := cookieHeader("w1", "new-secret")
	if _, err := s.Resolve(t.Context(), cookie); err != nil {
		t.Fatal(err)
	}
	// A changed session (new role) is seen too, not only a deleted one.
	do("SET", "sess:w1", strings.Replace(richSession, `"roles":["admin","editor",3]`, `"roles":["viewer"]`, 1), "EX", "100")
	waitFor(t, 100*time.Millisecond, func() bool {
		got, err := s.Resolve(t.Context(), cookie)
		return err == nil && len(got.Roles) == 1 && got.Roles[0] == "viewer"
	})
	do("DEL", "sess:w1")
	waitFor(t, 100*time.Millisecond, func() bool {
		_, err := s.Resolve(t.Context(), cookie)
		return errors.Is(err, ErrNoSession)
	})
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("change not seen within %v", within)
		}
		time.Sleep(time.Millisecond)
	}
}
