package apikeys

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/keyspace"
	"github.com/extauthz/extauthz/internal/redistest"
)

// hgetallCounter counts the record reads that reach Redis.
type hgetallCounter struct {
	Redis
	mu sync.Mutex
	n  int
}

func (c *hgetallCounter) HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Redis.HGetAll(ctx, key)
}

func (c *hgetallCounter) reads() int { c.mu.Lock(); defer c.mu.Unlock(); return c.n }

// With a real keyspace watcher on a real Redis: a cached key makes no Redis call, a revoke is
// seen by the next request once its notification arrives, an expiry is judged on every hit, and
// an unknown key is remembered as unknown.
func TestCacheRevokeAndExpiry(t *testing.T) {
	srv := redistest.Start(t, "--notify-keyspace-events", "KA")
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	cnt := &hgetallCounter{Redis: rdb}
	s, clk := newRedisStore(t, cnt, Options{Cache: &CacheOptions{TTL: time.Minute, NegativeTTL: time.Minute, MaxEntries: 100}})

	w := keyspace.New(rdb, nil, keyspace.Options{})
	w.Watch("apikey", DefaultPrefix, s.Invalidation())
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

	key, rec, err := s.Create(t.Context(), CreateParams{Owner: "team-a", Tier: "pro", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Create's own notifications arrive asynchronously and may void the first lookup's entry;
	// let them land before counting.
	time.Sleep(50 * time.Millisecond)
	for range 5 {
		got, err := s.Lookup(t.Context(), key)
		if err != nil || got.ID != rec.ID || got.Tier != "pro" {
			t.Fatalf("Lookup = %+v, %v", got, err)
		}
	}
	if n := cnt.reads(); n != 1 {
		t.Fatalf("%d record reads for 5 lookups, want 1", n)
	}
	// Expiry is judged against the cached record on every hit.
	clk.set(t0.Add(2 * time.Hour))
	if _, err := s.Lookup(t.Context(), key); !errors.Is(err, ErrExpired) {
		t.Fatalf("after expiry: %v, want ErrExpired", err)
	}
	clk.set(t0)
	// A revoke from another process (the CLI) is seen within a notification's time.
	other, _ := newRedisStore(t, rdb, Options{})
	if err := other.Revoke(t.Context(), rec.ID); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		_, err := s.Lookup(t.Context(), key)
		if errors.Is(err, ErrRevoked) {
			break
		}
		if time.Since(start) > 100*time.Millisecond {
			t.Fatalf("revoke not seen within 100ms: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	// Unknown (well-formed) keys are remembered as unknown.
	unknown, err := s.Generate()
	if err != nil {
		t.Fatal(err)
	}
	before := cnt.reads()
	for range 3 {
		if _, err := s.Lookup(t.Context(), unknown); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown key: %v", err)
		}
	}
	if n := cnt.reads() - before; n != 1 {
		t.Fatalf("%d reads for 3 lookups of an unknown key, want 1", n)
	}
}
