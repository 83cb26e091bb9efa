package redisclientcheck

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redisconn"
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
	cases := []struct {
		name string
		dial func(t *testing.T, addr string) scripter
		// retries is set for the control case: rueidis with EVALSHA tagged retryable
		// (ToRetryable) runs a script again after a lost reply, which shows that the test
		// sees a second run when there is one.
		retries bool
	}{
		{name: "redisconn.Client", dial: func(t *testing.T, addr string) scripter {
			return newClient(t, "redis://"+addr+"/0")
		}},
		{name: "rueidis EVALSHA ToRetryable", retries: true, dial: func(t *testing.T, addr string) scripter {
			return rueidisScripter{c: newRueidis(t, sidecarOptions(rueidis.ClientOption{InitAddress: []string{addr}})), retryable: true}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startCutProxy(t, s.Addr())
			rdb := tc.dial(t, p.Addr())
			key := "cut:" + tc.name
			var ok int
			for i := range cutCalls {
				reconnect(t, rdb)
				p.arm()
				before := p.cuts.Load()
				// A second, not 25 ms: a client that retries gets every chance to, and a loaded
				// box cannot hide the control case's retries behind the deadline.
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, err := count(ctx, rdb, key, fmt.Sprintf("%s-%d", cutMarker, i))
				cancel()
				if p.cuts.Load() == before {
					t.Fatalf("call %d: the proxy cut nothing (err %v)", i, err)
				}
				if err == nil {
					ok++
				}
			}
			ran := getInt(t, s, key)
			t.Logf("%s: %d calls lost their reply; %d still returned a count (retried); the server ran the script %d times",
				tc.name, cutCalls, ok, ran)
			switch {
			case tc.retries && ran <= cutCalls:
				t.Errorf("%s: ran %d scripts for %d calls: the retry this case documents did not happen", tc.name, ran, cutCalls)
			case !tc.retries && (ran != cutCalls || ok != 0):
				t.Errorf("%s: the server ran %d scripts for %d calls and %d calls returned a count; want exactly %d runs and 0 counts", tc.name, ran, cutCalls, ok, cutCalls)
			}
		})
	}
}

// TestNeverTwiceWrites holds redisconn.Client's other writing calls to the same promise: a
// MULTI/EXEC (Tx, as API-key creation and revocation use) and a Do of a write command (the
// CLI's) whose reply is lost must each have run exactly once and returned an error.
func TestNeverTwiceWrites(t *testing.T) {
	s := redistest.Start(t)
	cases := []struct {
		name string
		call func(ctx context.Context, c *redisconn.Client, key string, i int) error
		ran  func(key string) int64
	}{
		{name: "Tx", call: func(ctx context.Context, c *redisconn.Client, key string, i int) error {
			_, err := c.Tx(ctx, []redisconn.Cmd{
				{Name: "INCR", Keys: []string{key}},
				{Name: "SET", Keys: []string{key + ":last"}, Args: []string{fmt.Sprintf("%s-%d", cutMarker, i)}},
			})
			return err
		}, ran: func(key string) int64 { return getInt(t, s, key) }},
		{name: "Do HINCRBY", call: func(ctx context.Context, c *redisconn.Client, key string, i int) error {
			_, err := c.Do(ctx, "HINCRBY", []string{key}, cutMarker, "1")
			return err
		}, ran: func(key string) int64 {
			r := do(t, s, "HGET", key, cutMarker)
			n, err := strconv.ParseInt(r, 10, 64)
			if err != nil {
				t.Fatalf("HGET %s %s = %q: %v", key, cutMarker, r, err)
			}
			return n
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startCutProxy(t, s.Addr())
			c := newClient(t, "redis://"+p.Addr()+"/0")
			key := "{cut}:" + tc.name
			var ok int
			for i := range cutCalls {
				reconnect(t, c)
				p.arm()
				before := p.cuts.Load()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := tc.call(ctx, c, key, i)
				cancel()
				if p.cuts.Load() == before {
					t.Fatalf("call %d: the proxy cut nothing (err %v)", i, err)
				}
				if err == nil {
					ok++
				}
			}
			ran := tc.ran(key)
			t.Logf("redisconn.Client %s: %d calls lost their reply; %d still returned (retried); the server ran %d", tc.name, cutCalls, ok, ran)
			if ran != cutCalls || ok != 0 {
				t.Errorf("redisconn.Client %s: the server ran %d of %d calls and %d returned no error; want exactly %d runs and 0", tc.name, ran, cutCalls, ok, cutCalls)
			}
		})
	}
}

// reconnect makes calls without the marker until one succeeds, so that the next call goes
// out on a live connection rather than failing on the one the proxy cut.
func reconnect(t *testing.T, rdb scripter) {
	t.Helper()
	var err error
	for range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = count(ctx, rdb, "reconnect", "reconnect")
		cancel()
		if err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no call succeeded after a cut: %v", err)
}

// TestRueidisRetries shows which rueidis calls retry after a lost reply, with the options
// redisconn sets: read-only commands do (unless DisableRetry), EVALSHA and a DoMulti with
// EVALSHA never do. redisconn leaves retries on because of it.
func TestRueidisRetries(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	if r, err := s.Do(ctx, "SCRIPT", "LOAD", countScript); err != nil || r != countSHA {
		t.Fatalf("SCRIPT LOAD = %q, %v", r, err)
	}
	if r, err := s.Do(ctx, "SET", cutMarker+":get", "v"); err != nil || r != "+OK" {
		t.Fatalf("SET = %q, %v", r, err)
	}
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableRetry=%v", disable), func(t *testing.T) {
			p := startCutProxy(t, s.Addr())
			c := newRueidis(t, sidecarOptions(rueidis.ClientOption{InitAddress: []string{p.Addr()}, DisableRetry: disable}))
			rdb := rueidisScripter{c: c}

			// GET is read-only: retried on a new connection unless retries are off. The
			// retry redials; a second, not 25 ms, so that a loaded box cannot make it look
			// like no retry.
			reconnect(t, rdb)
			p.arm()
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			began := time.Now()
			v, err := c.Do(cctx, c.B().Get().Key(cutMarker+":get").Build()).ToString()
			took := time.Since(began)
			cancel()
			t.Logf("GET with its reply cut: %q, %v after %s (cuts %d)", v, err, ms(took), p.cuts.Load())
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
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				for _, r := range c.DoMulti(cctx, mk(fmt.Sprintf("%s-%d-a", cutMarker, i)), mk(fmt.Sprintf("%d-b", i))) {
					if r.Error() != nil {
						failed++
					}
				}
				cancel()
			}
			ran := getInt(t, s, key)
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
