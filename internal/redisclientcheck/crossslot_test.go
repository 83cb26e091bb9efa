package redisclientcheck

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redistest"
)

// panicOf runs f and returns what it panicked with, or nil.
func panicOf(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// TestCrossSlot shows what each client does with one command whose keys lie in different
// slots. rueidis's cluster client panics while the command is built, before any I/O: its
// callers must put every key of one call in one slot (one {hash tag}), and a caller that
// cannot prove it must recover. Commands for different slots in one DoMulti are fine: it
// splits them by node.
func TestCrossSlot(t *testing.T) {
	cl := redistest.StartCluster(t)
	c := newRueidis(t, rueidis.ClientOption{InitAddress: cl.Addrs()})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cl.MasterFor("{a}") == cl.MasterFor("{b}") {
		t.Fatalf("{a} and {b} share a master: pick other tags")
	}

	builds := []struct {
		name  string
		build func() rueidis.Completed
	}{
		{name: "MGET", build: func() rueidis.Completed { return c.B().Mget().Key("{a}:1", "{b}:1").Build() }},
		{name: "EVALSHA", build: func() rueidis.Completed {
			return c.B().Evalsha().Sha1(countSHA).Numkeys(2).Key("{a}:1", "{b}:1").Arg("1", "n").Build()
		}},
	}
	for _, b := range builds {
		p := panicOf(func() { b.build() })
		t.Logf("rueidis cluster: %s over two slots panics with %v", b.name, p)
		if p == nil || !strings.Contains(fmt.Sprint(p), "different key slots") {
			t.Errorf("%s over two slots: panic %v, want rueidis's different-key-slots panic", b.name, p)
		}
	}

	// One slot per command: fine, and so is a DoMulti of commands on different slots.
	if err := c.Do(ctx, c.B().Mget().Key("{a}:1", "{a}:2").Build()).Error(); err != nil {
		t.Errorf("MGET in one slot: %v", err)
	}
	for i, r := range c.DoMulti(ctx,
		c.B().Incr().Key("{a}:n").Build(),
		c.B().Incr().Key("{b}:n").Build(),
	) {
		if err := r.Error(); err != nil {
			t.Errorf("DoMulti command %d on its own slot: %v", i, err)
		}
	}

	// The single-node builder checks nothing: the same MGET builds and Redis runs it.
	s := redistest.Start(t)
	single := newRueidis(t, rueidis.ClientOption{InitAddress: []string{s.Addr()}})
	if p := panicOf(func() { single.B().Mget().Key("{a}:1", "{b}:1").Build() }); p != nil {
		t.Errorf("single node: MGET over two slots panicked: %v", p)
	}

	// go-redis, for comparison: Redis answers CROSSSLOT and the call fails with an error.
	err := newClusterClient(t, cl).Eval(ctx, countScript, []string{"{a}:1", "{b}:1"}, 1, "n").Err()
	t.Logf("go-redis cluster: EVAL over two slots: %v", err)
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Errorf("go-redis EVAL over two slots: %v, want CROSSSLOT", err)
	}
}
