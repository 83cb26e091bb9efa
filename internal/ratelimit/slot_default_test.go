package ratelimit

import (
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// Without the Cluster option, a call whose keys lie in several slots is still one script on
// one server: atomic, one round trip, exactly as before slots were considered.
func TestOneScriptWithoutClusterSlots(t *testing.T) {
	r := redistest.Start(t)
	cs := &countingScripter{Scripter: newClient(t, r.URL(), true)}
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
	if n := cs.calls.Load(); n != 3 {
		t.Fatalf("%d scripts for 3 calls, want 3 (one each)", n)
	}
	cs.calls.Store(0)
	hits := []Hit{{Key: "rls:{a}x", Window: 60, Hits: 1}, {Key: "rls:{b}x", Window: 60, Hits: 1}}
	if _, err := NewFixedWindow(cs).Add(t.Context(), hits); err != nil {
		t.Fatal(err)
	}
	if n := cs.calls.Load(); n != 1 {
		t.Fatalf("%d scripts for one Add, want 1", n)
	}
}
