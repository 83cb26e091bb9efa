package redisclientcheck

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// TestMain fails the package if a goroutine a test started outlives it, with two known
// exceptions in rueidis, each a sleep that ends by itself and that Close does not stop: a
// rueidis.NewClient that fails leaves a delayed topology refresh sleeping for up to a second;
// and a rueidis Cluster client that dropped a node from its topology closes that node's
// connections 5 s later (cluster.go, _refresh). redisconn.Client runs on rueidis, so the
// same two apply to it; anything else it leaves behind fails the package.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}

// callTimeout is redis.timeout, the deadline of every decision call.
const callTimeout = 25 * time.Millisecond

// countScript is the counting script of the promise tests: INCR with a TTL, like the
// fixed-window script, plus the caller's nonce echoed back, so that a reply matched to the
// wrong command is caught for sure and not only when its count looks off.
const countScript = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, ARGV[2]}`

var countSHA = sha1Hex(countScript)

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// scripter is how the decision path runs a script (ratelimit.Scripter): EVALSHA sha, and
// EVAL src only when the server lacks the script. *redisconn.Client is one; rueidisScripter
// makes a raw rueidis client one, for the cases that document rueidis itself.
type scripter interface {
	Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error)
}

var _ scripter = (*redisconn.Client)(nil)

var (
	// errWrongReply means a reply carried another call's nonce: the client matched a reply
	// to the wrong command.
	errWrongReply = errors.New("reply of another command")
	// errBadReply means a reply had the wrong shape, which also points at a mismatch.
	errBadReply = errors.New("reply of the wrong shape")
)

// count runs countScript on key and returns the count after the call. The reply must be
// {count, nonce} with the caller's own nonce.
func count(ctx context.Context, s scripter, key, nonce string) (int64, error) {
	v, err := s.Eval(ctx, countSHA, countScript, []string{key}, 600000, nonce)
	if err != nil {
		return 0, err
	}
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return 0, fmt.Errorf("%w: %#v", errBadReply, v)
	}
	n, ok1 := a[0].(int64)
	got, ok2 := a[1].(string)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("%w: %#v", errBadReply, v)
	}
	if got != nonce {
		return n, fmt.Errorf("%w: nonce %q, want %q", errWrongReply, got, nonce)
	}
	return n, nil
}

// rueidisScripter makes a raw rueidis client a scripter. retryable tags every command as
// safe to retry (ToRetryable), which EVALSHA is not: it is the control case that shows a
// test can see a script run twice.
type rueidisScripter struct {
	c         rueidis.Client
	retryable bool
}

func (r rueidisScripter) Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error) {
	v, err := r.do(ctx, r.c.B().Evalsha().Sha1(sha).Numkeys(int64(len(keys))).Key(keys...).Arg(strs(args)...).Build())
	var re *rueidis.RedisError
	if errors.As(err, &re) && re.IsNoScript() {
		v, err = r.do(ctx, r.c.B().Eval().Script(src).Numkeys(int64(len(keys))).Key(keys...).Arg(strs(args)...).Build())
	}
	return v, err
}

func (r rueidisScripter) do(ctx context.Context, cmd rueidis.Completed) (any, error) {
	if r.retryable {
		cmd = cmd.ToRetryable()
	}
	return r.c.Do(ctx, cmd).ToAny()
}

func strs(args []any) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = v
		case int:
			out[i] = strconv.Itoa(v)
		case int64:
			out[i] = strconv.FormatInt(v, 10)
		case uint64:
			out[i] = strconv.FormatUint(v, 10)
		default:
			out[i] = fmt.Sprint(v)
		}
	}
	return out
}

// sidecarOptions adds to opt the options redisconn.Client sets on every topology (REPORT.md,
// "rueidis options for the migration"), for the raw rueidis cases that document the
// behaviour redisconn relies on.
func sidecarOptions(opt rueidis.ClientOption) rueidis.ClientOption {
	opt.AlwaysPipelining = true
	opt.PipelineMultiplex = -1
	opt.MaxFlushDelay = 20 * time.Microsecond
	return opt
}

// newRueidis builds a raw rueidis client that is closed when the test ends.
func newRueidis(t testing.TB, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("rueidis.NewClient(%v): %v", opt.InitAddress, err)
	}
	t.Cleanup(c.Close)
	return c
}

// newClient builds the sidecar's own client, redisconn.Client, with its defaults, closes it
// when the test ends, and waits until it has connected (it builds its rueidis client in the
// background, and answers ErrNotReady until then).
func newClient(t testing.TB, url string) *redisconn.Client {
	t.Helper()
	return newClientWith(t, redisconn.Options{URL: url})
}

func newClientWith(t testing.TB, opts redisconn.Options) *redisconn.Client {
	t.Helper()
	c, err := redisconn.New(opts, nil)
	if err != nil {
		t.Fatalf("redisconn.New(%s): %v", opts.URL, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("redisconn.Client.Close: %v", err)
		}
	})
	waitReady(t, c)
	return c
}

// waitReady waits up to 10 s for c's first successful PING.
func waitReady(t testing.TB, c *redisconn.Client) {
	t.Helper()
	began := time.Now()
	var err error
	for time.Since(began) < 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = c.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("redisconn.Client (%s) not connected after %s: %v", c.Describe(), ms(time.Since(began)), err)
}

// The helpers below ask a node directly (redistest's Server.Do, a fresh connection each
// time), never through the client under test.

// do runs one command on node and fails t on an error or an error reply.
func do(t testing.TB, node *redistest.Server, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := node.Do(ctx, args...)
	if err != nil || strings.HasPrefix(r, "-") {
		t.Fatalf("%s on %s: %q, %v", strings.Join(args, " "), node.Addr(), r, err)
	}
	return r
}

// getInt reads an integer key from node; 0 when it is missing.
func getInt(t testing.TB, node *redistest.Server, key string) int64 {
	t.Helper()
	r := do(t, node, "GET", key)
	if r == "" {
		return 0
	}
	n, err := strconv.ParseInt(r, 10, 64)
	if err != nil {
		t.Fatalf("GET %s on %s = %q: %v", key, node.Addr(), r, err)
	}
	return n
}

// info is one field of INFO section on node.
func info(t testing.TB, node *redistest.Server, section, field string) string {
	t.Helper()
	for _, line := range strings.Split(do(t, node, "INFO", section), "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return v
		}
	}
	return ""
}

// dials is how many connections node has accepted so far, the one that asks included.
func dials(t testing.TB, node *redistest.Server) int64 {
	t.Helper()
	v := info(t, node, "stats", "total_connections_received")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("INFO stats on %s: total_connections_received %q: %v", node.Addr(), v, err)
	}
	return n
}

// clientDials is how many connections the client under test opened to node since dials
// returned before, when the test itself opened harness of them meanwhile (Server.Do, one
// per command).
func clientDials(t testing.TB, node *redistest.Server, before, harness int64) int64 {
	t.Helper()
	return dials(t, node) - before - harness - 1 // -1: the connection that asks now
}

// cmdCalls is how many times node has run cmd (INFO commandstats), to tell a cache hit from
// a round trip by the server's own account.
func cmdCalls(t testing.TB, node *redistest.Server, cmd string) int64 {
	t.Helper()
	stat := info(t, node, "commandstats", "cmdstat_"+cmd) // calls=N,usec=...
	if stat == "" {
		return 0
	}
	v, _, _ := strings.Cut(strings.TrimPrefix(stat, "calls="), ",")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("cmdstat_%s %q: %v", cmd, stat, err)
	}
	return n
}

// dist summarises durations.
type dist []time.Duration

func (d dist) pct(p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(p/100*float64(len(s)) + 0.5)
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func (d dist) max() time.Duration {
	if len(d) == 0 {
		return 0
	}
	return slices.Max(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
