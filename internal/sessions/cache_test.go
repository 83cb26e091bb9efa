package sessions

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// invalidationWithin bounds how long a change made by another connection may take to reach
// the cache: Redis pushes the invalidation as it applies the change, and it was measured at
// 0.1-0.3 ms (at most 2.8 ms) in internal/redisclientcheck. The bound leaves room for -race.
const invalidationWithin = 25 * time.Millisecond

func cachedStore(t *testing.T, rdb Redis, observe func(string)) *Store {
	t.Helper()
	opts := richOptions
	opts.Cache = &CacheOptions{TTL: time.Minute, Observe: observe}
	return newStore(t, rdb, opts)
}

type results struct {
	mu sync.Mutex
	n  map[string]int
}

func newResults() *results          { return &results{n: map[string]int{}} }
func (r *results) observe(s string) { r.mu.Lock(); r.n[s]++; r.mu.Unlock() }
func (r *results) get(s string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.n[s] }
func (r *results) reset()           { r.mu.Lock(); clear(r.n); r.mu.Unlock() }
func (r *results) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.n))
	for k, v := range r.n {
		out[k] = v
	}
	return out
}

// serverGets is the number of GETs srv has executed, from INFO commandstats: what reached
// Redis, counted by Redis itself rather than by the client under test.
func serverGets(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	info := serverDo(t, srv, "INFO", "commandstats")
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_get:calls=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
		if err != nil {
			t.Fatalf("INFO commandstats: %q: %v", line, err)
		}
		return n
	}
	return 0
}

// waitFor polls cond every millisecond and fails the test when it is still false after
// within. It returns how long it took.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not seen within %v", what, within)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

// With the real client on a real Redis: a cached session makes no round trip, and a logout, a
// login and a change made by another connection (the Express app) are all seen by the next
// requests within an invalidation's time.
func TestCache(t *testing.T) {
	srv := redistest.Start(t)
	rc := newClient(t, srv.URL())
	res := newResults()
	s := cachedStore(t, rc, res.observe)
	ctx := t.Context()
	cookie := cookieHeader("abc", "new-secret")
	serverDo(t, srv, "SET", "sess:abc", richSession, "EX", "100")

	before := serverGets(t, srv)
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
	if n := serverGets(t, srv) - before; n != 1 {
		t.Fatalf("redis ran %d GETs for 6 requests of one session, want 1", n)
	}
	if got := res.snapshot(); got["miss"] != 1 || got["hit"] != 5 || len(got) != 2 {
		t.Fatalf("observed %v, want miss 1 and hit 5", got)
	}

	// A logout: connect-redis DELs the key; the next requests must stop resolving it.
	serverDo(t, srv, "DEL", "sess:abc")
	took := waitFor(t, invalidationWithin, "logout", func() bool {
		_, err := s.Resolve(ctx, cookie)
		return errors.Is(err, ErrNoSession)
	})
	t.Logf("logout seen after %v", took)

	// The unknown sid is cached as such: no GET reaches Redis for it...
	if _, err := s.Resolve(ctx, cookie); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after logout: %v, want ErrNoSession", err)
	}
	res.reset()
	before = serverGets(t, srv)
	for range 3 {
		if _, err := s.Resolve(ctx, cookie); !errors.Is(err, ErrNoSession) {
			t.Fatalf("negative entry: %v", err)
		}
	}
	if n := serverGets(t, srv) - before; n != 0 || res.get("negative_hit") != 3 {
		t.Fatalf("unknown sid: %d GETs, observed %v; want 0 GETs and 3 negative hits", n, res.snapshot())
	}
	// ...until a login saves it again.
	serverDo(t, srv, "SET", "sess:abc", richSession, "EX", "100")
	waitFor(t, invalidationWithin, "login", func() bool {
		_, err := s.Resolve(ctx, cookie)
		return err == nil
	})
	// A changed session (new roles) is seen too, not only a deleted one.
	serverDo(t, srv, "SET", "sess:abc", strings.Replace(richSession, `"roles":["admin","editor",3]`, `"roles":["viewer"]`, 1), "EX", "100")
	waitFor(t, invalidationWithin, "changed roles", func() bool {
		got, err := s.Resolve(ctx, cookie)
		return err == nil && len(got.Roles) == 1 && got.Roles[0] == "viewer"
	})
}

// A session key that expires in Redis is not served from the cache past its TTL, even with no
// change to invalidate it: the client bounds every entry by the key's PTTL.
func TestCacheHonoursKeyTTL(t *testing.T) {
	srv := redistest.Start(t)
	res := newResults()
	s := cachedStore(t, newClient(t, srv.URL()), res.observe)
	serverDo(t, srv, "SET", "sess:soon", richSession, "PX", "1000")
	cookie := cookieHeader("soon", "new-secret")
	for range 2 {
		if _, err := s.Resolve(t.Context(), cookie); err != nil {
			t.Fatal(err)
		}
	}
	if res.get("hit") != 1 {
		t.Fatalf("observed %v before the TTL, want a hit", res.snapshot())
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := s.Resolve(t.Context(), cookie); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after the key's TTL: %v, want ErrNoSession", err)
	}
}

// A touch is a change too: the store's own EXPIRE invalidates the cached session, which is
// then read again, and the request still resolves.
func TestCacheWithTouch(t *testing.T) {
	srv := redistest.Start(t)
	res := newResults()
	opts := richOptions
	opts.Cache = &CacheOptions{TTL: time.Minute, Observe: res.observe}
	opts.TouchTTL, opts.TouchEvery = time.Hour, time.Hour
	rc := newClient(t, srv.URL())
	s := newStore(t, rc, opts)
	serverDo(t, srv, "SET", "sess:t", richSession, "EX", "100")
	cookie := cookieHeader("t", "new-secret")
	for range 3 {
		if _, err := s.Resolve(t.Context(), cookie); err != nil {
			t.Fatal(err)
		}
		// Redis pushes the invalidation a touch causes right after the EXPIRE's reply; one
		// more command on the connection cannot be answered before the push was applied.
		if _, err := rc.Do(t.Context(), "EXISTS", []string{"sess:t"}); err != nil {
			t.Fatal(err)
		}
	}
	if ttl := serverDo(t, srv, "TTL", "sess:t"); ttl != ":3600" {
		t.Errorf("TTL after the touch = %s, want :3600 from originalMaxAge", ttl)
	}
	// The first read missed and touched; the touch invalidated the entry, so the second read
	// missed too; nothing touched since, so the third hit.
	if got := res.snapshot(); got["miss"] != 2 || got["hit"] != 1 {
		t.Errorf("observed %v, want miss 2 and hit 1", got)
	}
}

// On Redis Cluster the session is read from its slot's master, cached, and a logout made on
// that master is seen as on a single node.
func TestCacheCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	res := newResults()
	s := cachedStore(t, newClient(t, c.URL()), res.observe)
	node := c.Node(c.MasterFor("sess:cl"))
	serverDo(t, node, "SET", "sess:cl", richSession, "EX", "100")
	cookie := cookieHeader("cl", "new-secret")
	for range 3 {
		got, err := s.Resolve(t.Context(), cookie)
		if err != nil || got.Subject != "42" {
			t.Fatalf("Resolve on cluster = %v, %v", got, err)
		}
	}
	if got := res.snapshot(); got["miss"] != 1 || got["hit"] != 2 {
		t.Fatalf("observed %v, want miss 1 and hit 2", got)
	}
	serverDo(t, node, "DEL", "sess:cl")
	waitFor(t, invalidationWithin, "logout on cluster", func() bool {
		_, err := s.Resolve(t.Context(), cookie)
		return errors.Is(err, ErrNoSession)
	})
}

// With a client that does not cache (the embedded store), a Store with Options.Cache still
// resolves correctly; every read is a miss.
func TestCacheOnEmbeddedStore(t *testing.T) {
	b := startEmbedded(t)
	res := newResults()
	s := cachedStore(t, b.rdb, res.observe)
	b.set(t, "sess:e", richSession)
	cookie := cookieHeader("e", "new-secret")
	for range 2 {
		if _, err := s.Resolve(t.Context(), cookie); err != nil {
			t.Fatal(err)
		}
	}
	b.del(t, "sess:e")
	if _, err := s.Resolve(t.Context(), cookie); !errors.Is(err, ErrNoSession) {
		t.Fatalf("after DEL: %v, want ErrNoSession", err)
	}
	if got := res.snapshot(); got["miss"] != 3 || len(got) != 1 {
		t.Errorf("observed %v, want 3 misses", got)
	}
}

func TestCacheResult(t *testing.T) {
	tests := []struct {
		hit  bool
		err  error
		want string
	}{
		{false, nil, "miss"},
		{false, context.DeadlineExceeded, "miss"},
		{true, nil, "hit"},
		{true, redisconn.ErrNil, "negative_hit"},
	}
	for _, tt := range tests {
		if got := redisconn.CacheResult(tt.hit, errors.Is(tt.err, redisconn.ErrNil), tt.err); got != tt.want {
			t.Errorf("CacheResult(%v, %v) = %q, want %q", tt.hit, tt.err, got, tt.want)
		}
	}
}
