package apikeys

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// invalidationWithin bounds how long a change made by another connection may take to reach
// the cache: Redis pushes the invalidation as it applies the change, measured at 0.1-0.3 ms
// (at most 2.8 ms) in internal/redisclientcheck. The bound leaves room for -race.
const invalidationWithin = 25 * time.Millisecond

// serverCalls is the number of times srv has run cmd (lower case), from INFO commandstats:
// what reached Redis, counted by Redis rather than by the client under test.
func serverCalls(t *testing.T, srv *redistest.Server, cmd string) int {
	t.Helper()
	for _, line := range strings.Split(serverDo(t, srv, "INFO", "commandstats"), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
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

type results struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *results) observe(s string) { r.mu.Lock(); r.n[s]++; r.mu.Unlock() }
func (r *results) get(s string) int { r.mu.Lock(); defer r.mu.Unlock(); return r.n[s] }

// With the real client on a real Redis: a cached key makes no Redis call, an expiry is judged
// on every hit, a revoke by another process (the CLI) is seen by the next lookups within an
// invalidation's time, and an unknown key is remembered as unknown.
func TestCacheRevokeAndExpiry(t *testing.T) {
	srv, rdb := startRedis(t)
	res := &results{n: map[string]int{}}
	s, clk := newRedisStore(t, rdb, Options{Cache: &CacheOptions{TTL: time.Minute, Observe: res.observe}})

	key, rec, err := s.Create(t.Context(), CreateParams{Owner: "team-a", Tier: "pro", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	before := serverCalls(t, srv, "hgetall")
	for range 5 {
		got, err := s.Lookup(t.Context(), key)
		if err != nil || got.ID != rec.ID || got.Tier != "pro" {
			t.Fatalf("Lookup = %+v, %v", got, err)
		}
	}
	if n := serverCalls(t, srv, "hgetall") - before; n != 1 {
		t.Fatalf("redis ran %d HGETALLs for 5 lookups, want 1", n)
	}
	if res.get("miss") != 1 || res.get("hit") != 4 {
		t.Fatalf("observed %v, want miss 1 and hit 4", res.n)
	}
	// Expiry is judged against the cached record on every hit.
	clk.set(t0.Add(2 * time.Hour))
	if _, err := s.Lookup(t.Context(), key); !errors.Is(err, ErrExpired) {
		t.Fatalf("after expiry: %v, want ErrExpired", err)
	}
	clk.set(t0)
	// A revoke from another process, with its own client and connection.
	other, _ := newRedisStore(t, newClient(t, srv.URL()), Options{})
	if err := other.Revoke(t.Context(), rec.ID); err != nil {
		t.Fatal(err)
	}
	took := waitForLookup(t, s, key, ErrRevoked)
	t.Logf("revoke seen after %v", took)

	// Unknown (well-formed) keys are remembered as unknown...
	unknown, err := s.Generate()
	if err != nil {
		t.Fatal(err)
	}
	before = serverCalls(t, srv, "hgetall")
	for range 3 {
		if _, err := s.Lookup(t.Context(), unknown); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := serverCalls(t, srv, "hgetall") - before; n != 1 || res.get("negative_hit") != 2 {
		t.Fatalf("%d HGETALLs for 3 lookups of an unknown key (observed %v), want 1 and 2 negative hits", n, res.n)
	}
	// ...until it is issued: the record's HSET invalidates the negative entry.
	serverDo(t, srv, "HSET", s.recordKey(Hash(unknown)), "id", "k_AAAAAAAAAAAA", "created", "1", "expires", "0", "disabled", "0")
	waitForLookup(t, s, unknown, nil)
}

// waitForLookup polls Lookup(key) until it returns want (nil: success), within
// invalidationWithin, and returns how long that took.
func waitForLookup(t *testing.T, s *Store, key string, want error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		_, err := s.Lookup(t.Context(), key)
		if errors.Is(err, want) { // errors.Is(nil, nil) holds
			return time.Since(start)
		}
		if time.Since(start) > invalidationWithin {
			t.Fatalf("Lookup = %v after %v, want %v", err, invalidationWithin, want)
		}
		time.Sleep(time.Millisecond)
	}
}
