package ratelimit

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
)

// scriptCounter counts the scripts a caller sends to a real server.
type scriptCounter struct {
	Scripter
	n atomic.Int32
}

func (c *scriptCounter) EvalSha(ctx context.Context, sha string, keys []string, args ...interface{}) *redis.Cmd {
	c.n.Add(1)
	return c.Scripter.EvalSha(ctx, sha, keys, args...)
}

// Without the Cluster option, a call whose keys lie in several slots is still one script on
// one server: atomic, one round trip, exactly as before slots were considered.
func TestOneScriptWithoutClusterSlots(t *testing.T) {
	r := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	cs := &scriptCounter{Scripter: rdb}
	minute := Limit{Requests: 2, Window: time.Minute}
	reqs := []Request{{Key: "rl:{a}x", Limit: minute, Cost: 1}, {Key: "rl:{b}x", Limit: minute, Cost: 1}, {Key: "rl:{c}x", Limit: minute, Cost: 1}}
	if Slot(reqs[0].Key) == Slot(reqs[1].Key) || Slot(reqs[1].Key) == Slot(reqs[2].Key) {
		t.Fatal("the test keys share a slot")
	}
	l := NewLimiter(cs)
	for i := 0; i < 3; i++ {
		_, ds, err := l.Allow(t.Context(), reqs)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := ds[0].Allowed, i < 2; got != want {
			t.Fatalf("call %d: allowed %v, want %v", i, got, want)
		}
	}
	if n := cs.n.Load(); n != 3 {
		t.Fatalf("%d scripts for 3 calls, want 3 (one each)", n)
	}
	cs.n.Store(0)
	hits := []Hit{{Key: "rls:{a}x", Window: 60, Hits: 1}, {Key: "rls:{b}x", Window: 60, Hits: 1}}
	if _, err := NewFixedWindow(cs).Add(t.Context(), hits); err != nil {
		t.Fatal(err)
	}
	if n := cs.n.Load(); n != 1 {
		t.Fatalf("%d scripts for one Add, want 1", n)
	}
}
