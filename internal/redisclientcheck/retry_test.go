package redisclientcheck

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
)

// cutCalls is how many calls per candidate lose their reply after running.
const cutCalls = 10

// TestNeverTwiceReplyLost runs counting calls whose reply is lost after Redis ran them (a
// proxy closes the connection instead of forwarding it): the worst case for a client that
// retries. Each such call must have run exactly once. The script is loaded beforehand, so
// EVALSHA never falls back to EVAL here.
func TestNeverTwiceReplyLost(t *testing.T) {
	s := redistest.Start(t)
	if r, err := s.Do(context.Background(), "SCRIPT", "LOAD", countScript); err != nil || r != countSHA {
		t.Fatalf("SCRIPT LOAD = %q, %v", r, err)
	}
	get := getter(t, s.Addr())
	// go-redis's default MaxRetries (3) retries after a connection error, whatever the
	// command: the reason the sidecar sets -1. It is the case that shows the test can see a
	// second run.
	retrying := nodeClient{name: "go-redis MaxRetries default", dial: func(t *testing.T, addr string) ratelimit.Scripter {
		return newGoRedis(t, &redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, ContextTimeoutEnabled: true})
	}}
	for _, nc := range append(slices.Clone(nodeClients), retrying) {
		t.Run(nc.name, func(t *testing.T) {
			p := startCutProxy(t, s.Addr())
			rdb := nc.dial(t, p.Addr())
			key := "cut:" + nc.name
			var ok int
			for i := range cutCalls {
				reconnect(t, rdb)
				p.arm()
				before := p.cuts.Load()
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				_, err := count(ctx, rdb, key, fmt.Sprintf("%s-%d", cutMarker, i))
				cancel()
				if p.cuts.Load() == before {
					t.Fatalf("call %d: the proxy cut nothing (err %v)", i, err)
				}
				if err == nil {
					ok++
				}
			}
			ran := get(key)
			t.Logf("%s: %d calls lost their reply; %d still returned a count (retried); the server ran the script %d times",
				nc.name, cutCalls, ok, ran)
			switch {
			case nc.name == retrying.name && ran <= cutCalls:
				t.Errorf("%s: ran %d scripts for %d calls: the retry this case documents did not happen", nc.name, ran, cutCalls)
			case nc.name != retrying.name && ran != cutCalls:
				t.Errorf("%s: the server ran %d scripts for %d calls, want exactly %d", nc.name, ran, cutCalls, cutCalls)
			}
		})
	}
}

// reconnect makes calls without the marker until one succeeds, so that the next call goes
// out on a live connection rather than failing on the one the proxy cut.
func reconnect(t *testing.T, rdb ratelimit.Scripter) {
	t.Helper()
	var err error
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = count(ctx, rdb, "reconnect", "reconnect")
		cancel()
		if err == nil {
			return
		}
	}
	t.Fatalf("no call succeeded after a cut: %v", err)
}

// TestRueidisRetries shows which rueidis calls retry after a lost reply: read-only
// commands do (unless DisableRetry), EVALSHA and a DoMulti with EVALSHA never do.
func TestRueidisRetries(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	if r, err := s.Do(ctx, "SCRIPT", "LOAD", countScript); err != nil || r != countSHA {
		t.Fatalf("SCRIPT LOAD = %q, %v", r, err)
	}
	if r, err := s.Do(ctx, "SET", cutMarker+":get", "v"); err != nil || r != "+OK" {
		t.Fatalf("SET = %q, %v", r, err)
	}
	get := getter(t, s.Addr())
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableRetry=%v", disable), func(t *testing.T) {
			p := startCutProxy(t, s.Addr())
			c := newRueidis(t, rueidis.ClientOption{InitAddress: []string{p.Addr()}, DisableRetry: disable})
			rdb := rueidisScripter{c}

			// GET is read-only: retried on a new connection unless retries are off.
			reconnect(t, rdb)
			p.arm()
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			v, err := c.Do(cctx, c.B().Get().Key(cutMarker+":get").Build()).ToString()
			cancel()
			t.Logf("GET with its reply cut: %q, %v (cuts %d)", v, err, p.cuts.Load())
			if disable == (err == nil) {
				t.Errorf("GET with its reply cut, DisableRetry=%v: %q, %v; want an error exactly when retries are off", disable, v, err)
			}

			// DoMulti of two EVALSHA: both run once, neither is retried.
			key := fmt.Sprintf("multi:%v", disable)
			var failed int
			for i := range cutCalls {
				reconnect(t, rdb)
				p.arm()
				mk := func(nonce string) rueidis.Completed {
					return c.B().Evalsha().Sha1(countSHA).Numkeys(1).Key(key).Arg("600000", nonce).Build()
				}
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				for _, r := range c.DoMulti(cctx, mk(fmt.Sprintf("%s-%d-a", cutMarker, i)), mk(fmt.Sprintf("%d-b", i))) {
					if r.Error() != nil {
						failed++
					}
				}
				cancel()
			}
			ran := get(key)
			t.Logf("DoMulti(EVALSHA, EVALSHA) x %d with the replies cut: %d of %d commands failed, the server ran %d", cutCalls, failed, 2*cutCalls, ran)
			if ran > 2*cutCalls {
				t.Errorf("the server ran %d scripts for %d commands: a DoMulti was retried", ran, 2*cutCalls)
			}
			if failed != 2*cutCalls || ran < cutCalls {
				t.Errorf("%d of %d commands failed, the server ran %d: want every command of a cut DoMulti to fail, and at least the first to have run", failed, 2*cutCalls, ran)
			}
		})
	}
}
