package redisclientcheck

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"go.uber.org/goleak"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// TestMain fails the package if a goroutine a test started outlives it, with three known
// exceptions, each a sleep that ends by itself and that Close does not stop: go-redis's
// pool probes a dead address once a second (see internal/redistest); a rueidis.NewClient
// that fails leaves a delayed topology refresh sleeping for up to a second; and a rueidis
// Cluster client that dropped a node from its topology closes that node's connections 5 s
// later (cluster.go, _refresh).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}

// callTimeout is redis.timeout, the deadline of every decision call.
const callTimeout = 25 * time.Millisecond

// long reports whether the long variants run (go-redis failovers, more rounds): they are
// measurements for the report, not promises make test has to keep.
func long() bool { return os.Getenv("EXTAUTHZ_CLIENTCHECK_LONG") != "" }

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

var (
	// errWrongReply means a reply carried another call's nonce: the client matched a reply
	// to the wrong command.
	errWrongReply = errors.New("reply of another command")
	// errBadReply means a reply had the wrong shape, which also points at a mismatch.
	errBadReply = errors.New("reply of the wrong shape")
)

// count runs countScript on key the way ratelimit.FixedWindow runs its script: EVALSHA, and
// EVAL only when the server lacks the script (after a failover, say). It returns the count
// after the call.
func count(ctx context.Context, s ratelimit.Scripter, key, nonce string) (int64, error) {
	cmd := s.EvalSha(ctx, countSHA, []string{key}, 600000, nonce)
	if redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		cmd = s.Eval(ctx, countScript, []string{key}, 600000, nonce)
	}
	v, err := cmd.Result()
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

// rueidisScripter makes a rueidis client a ratelimit.Scripter, the interface the limiters
// take today, with go-redis result types so that the same code reads every candidate.
type rueidisScripter struct{ c rueidis.Client }

var _ ratelimit.Scripter = rueidisScripter{}

func (r rueidisScripter) EvalSha(ctx context.Context, sha string, keys []string, args ...any) *redis.Cmd {
	return r.do(ctx, r.c.B().Evalsha().Sha1(sha).Numkeys(int64(len(keys))).Key(keys...).Arg(strs(args)...).Build())
}

func (r rueidisScripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return r.do(ctx, r.c.B().Eval().Script(script).Numkeys(int64(len(keys))).Key(keys...).Arg(strs(args)...).Build())
}

func (r rueidisScripter) do(ctx context.Context, cmd rueidis.Completed) *redis.Cmd {
	v, err := r.c.Do(ctx, cmd).ToAny()
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		err = replyError(re.Error())
	}
	return redis.NewCmdResult(v, err)
}

// replyError is an error reply from Redis, as go-redis's redis.Error sees it.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

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

// newRueidis builds a rueidis client that is closed when the test ends.
func newRueidis(t testing.TB, opt rueidis.ClientOption) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("rueidis.NewClient(%v): %v", opt.InitAddress, err)
	}
	t.Cleanup(c.Close)
	return c
}

// goRedisOptions are the go-redis options the sidecar uses today (redisconn's
// universalOptions) for one node: RESP2, no retries, the caller's deadline on socket I/O.
func goRedisOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		Protocol:              2,
		DisableIdentity:       true,
		ContextTimeoutEnabled: true,
		ReadTimeout:           callTimeout,
		WriteTimeout:          callTimeout,
		PoolTimeout:           callTimeout,
		MaxRetries:            -1,
		DialerRetries:         1,
	}
}

func newGoRedis(t testing.TB, opt *redis.Options) *redis.Client {
	t.Helper()
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// newPipe builds today's decision client, redisconn.Pipe, with the sidecar's defaults
// (one connection, batches of at most 128, a 25 ms deadline per call).
func newPipe(t testing.TB, url string) *redisconn.Pipe {
	t.Helper()
	c, err := redisconn.New(redisconn.Options{URL: url}, nil)
	if err != nil {
		t.Fatalf("redisconn.New(%s): %v", url, err)
	}
	p := c.NewPipe(redisconn.PipeOptions{})
	t.Cleanup(func() {
		_ = p.Close()
		_ = c.Close()
	})
	return p
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
