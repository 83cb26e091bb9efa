package redisclientcheck

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// panicOf runs f and returns what it panicked with, or nil.
func panicOf(f func()) (p any) {
	defer func() { p = recover() }()
	f()
	return nil
}

// TestCrossSlot shows what rueidis does with one command whose keys lie in different slots,
// and checks that redisconn.Client turns it into an error. rueidis's cluster client panics
// while the command is built, before any I/O: its callers must put every key of one call in
// one slot (one {hash tag}), and a caller that cannot prove it must recover. Commands for
// different slots in one DoMulti are fine: it splits them by node.
func TestCrossSlot(t *testing.T) {
	cl := redistest.StartCluster(t)
	c := newRueidis(t, sidecarOptions(rueidis.ClientOption{InitAddress: cl.Addrs()}))
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
	single := newRueidis(t, sidecarOptions(rueidis.ClientOption{InitAddress: []string{s.Addr()}, ForceSingleClient: true}))
	if p := panicOf(func() { single.B().Mget().Key("{a}:1", "{b}:1").Build() }); p != nil {
		t.Errorf("single node: MGET over two slots panicked: %v", p)
	}

	// redisconn.Client guards that panic: a call with keys in two slots returns an error
	// wrapping ErrCrossSlot, and the client stays usable.
	rc := newClient(t, cl.URL())
	calls := []struct {
		name string
		call func() error
	}{
		{name: "Eval", call: func() error {
			_, err := rc.Eval(ctx, countSHA, countScript, []string{"{a}:1", "{b}:1"}, 600000, "n")
			return err
		}},
		{name: "Tx", call: func() error {
			_, err := rc.Tx(ctx, []redisconn.Cmd{{Name: "INCR", Keys: []string{"{a}:tx"}}, {Name: "INCR", Keys: []string{"{b}:tx"}}})
			return err
		}},
		{name: "Do MGET", call: func() error {
			_, err := rc.Do(ctx, "MGET", []string{"{a}:1", "{b}:1"})
			return err
		}},
	}
	for _, cc := range calls {
		var err error
		p := panicOf(func() { err = cc.call() })
		t.Logf("redisconn.Client cluster: %s over two slots: panic %v, error %v", cc.name, p, err)
		if p != nil {
			t.Errorf("redisconn.Client %s over two slots panicked: %v", cc.name, p)
		} else if !errors.Is(err, redisconn.ErrCrossSlot) {
			t.Errorf("redisconn.Client %s over two slots: %v, want an error wrapping ErrCrossSlot", cc.name, err)
		}
	}
	if n, err := count(ctx, rc, "{a}:after", "after"); err != nil || n != 1 {
		t.Errorf("a call in one slot after the cross-slot ones = %d, %v; want 1", n, err)
	}
}
