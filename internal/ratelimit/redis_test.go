package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
)

// newClient returns a ready redisconn client on url (redisconntest.Ready: 5 s per call).
// cache false turns client-side caching off, which the embedded store (miniredis) needs: it
// refuses CLIENT TRACKING.
func newClient(t testing.TB, url string, cache bool) *redisconn.Client {
	t.Helper()
	opts := redisconn.Options{URL: url}
	if !cache {
		opts.CacheBytes = -1
	}
	return redisconntest.Ready(t, opts)
}

// admin runs setup and inspection commands on a client of its own, around the one under
// test, so that observations cannot share its bugs. Keys route the command on a Cluster.
type admin struct{ c *redisconn.Client }

// do runs one command and fails the test on an error; a nil reply is nil.
func (a admin) do(t testing.TB, name string, keys []string, args ...string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := a.c.Do(ctx, name, keys, args...)
	if errors.Is(err, redisconn.ErrNil) {
		return nil
	}
	if err != nil {
		t.Fatalf("%s %q %q: %v", name, keys, args, err)
	}
	return v
}

// get is the value of key, "" when it does not exist.
func (a admin) get(t testing.TB, key string) string {
	t.Helper()
	switch v := a.do(t, "GET", []string{key}).(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		t.Fatalf("GET %s: reply %T", key, v)
		return ""
	}
}

// set stores v at key, expiring after ttl (0: never).
func (a admin) set(t testing.TB, key, v string, ttl time.Duration) {
	t.Helper()
	args := []string{v}
	if ttl > 0 {
		args = append(args, "PX", strconv.FormatInt(ttl.Milliseconds(), 10))
	}
	a.do(t, "SET", []string{key}, args...)
}

// integer runs a command that answers an integer.
func (a admin) integer(t testing.TB, name string, keys []string, args ...string) int64 {
	t.Helper()
	v, ok := a.do(t, name, keys, args...).(int64)
	if !ok {
		t.Fatalf("%s %q: reply is not an integer", name, keys)
	}
	return v
}

// pttl is the key's PTTL: -1 without expiry, -2 when missing.
func (a admin) pttl(t testing.TB, key string) time.Duration {
	t.Helper()
	n := a.integer(t, "PTTL", []string{key})
	if n < 0 {
		return time.Duration(n)
	}
	return time.Duration(n) * time.Millisecond
}

// time is the server's TIME.
func (a admin) time(t testing.TB) time.Time {
	t.Helper()
	v, ok := a.do(t, "TIME", nil).([]any)
	if !ok || len(v) != 2 {
		t.Fatalf("TIME: reply %v", v)
	}
	sec, err1 := strconv.ParseInt(v[0].(string), 10, 64)
	usec, err2 := strconv.ParseInt(v[1].(string), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("TIME: reply %v", v)
	}
	return time.Unix(sec, usec*1000)
}

// eval runs a script on the admin client, as another application (an Express app) would.
func (a admin) eval(t testing.TB, script string, keys []string, args ...any) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := a.c.Eval(ctx, scriptSHA(script), script, keys, args...)
	if err != nil {
		t.Fatalf("EVAL on %q: %v", keys, err)
	}
	return v
}

// scriptExists reports whether the server knows the script of sha, as EVALSHA would find it.
func (a admin) scriptExists(t testing.TB, sha string) bool {
	t.Helper()
	v, ok := a.do(t, "SCRIPT", nil, "EXISTS", sha).([]any)
	return ok && len(v) == 1 && v[0] == int64(1)
}

// scriptCalls reads INFO commandstats: how many EVALSHA and EVAL the server ran. Only
// redis-server keeps these; ok is false elsewhere.
func (a admin) scriptCalls(t testing.TB) (evalsha, eval int64, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := a.c.Do(ctx, "INFO", nil, "commandstats")
	info, isStr := v.(string)
	if err != nil || !isStr || !strings.Contains(info, "cmdstat_") {
		return 0, 0, false // miniredis has no commandstats
	}
	calls := func(cmd string) int64 {
		i := strings.Index(info, "cmdstat_"+cmd+":calls=")
		if i < 0 {
			return 0
		}
		rest := info[i+len("cmdstat_"+cmd+":calls="):]
		n, _ := strconv.ParseInt(rest[:strings.IndexAny(rest, ",\r\n")], 10, 64)
		return n
	}
	return calls("evalsha"), calls("eval"), true
}

// countingScripter counts the scripts a caller runs and those it names by anything but the
// SHA1 of their source: EVALSHA would then never find what EVAL loaded, and every call
// would cost two round trips.
type countingScripter struct {
	Scripter
	calls, badSHA atomic.Int64
}

func (c *countingScripter) Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error) {
	c.calls.Add(1)
	if scriptSHA(src) != sha {
		c.badSHA.Add(1)
	}
	return c.Scripter.Eval(ctx, sha, src, keys, args...)
}
