package redisconn

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/redistest"
)

// windowScript uses every command the project's limiter scripts rely on: TIME as the clock,
// INCRBY and EXPIRE for the counter, PTTL, SET ... PX and GET.
var windowScript = redis.NewScript(`
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[2], now_ms, 'PX', ARGV[3])
return {n, ttl, now_ms, redis.call('GET', KEYS[2])}
`)

// checkScripts is the contract every backend must meet: the same script, run EVALSHA first
// and EVAL when the server does not know it, gives the same answers.
func checkScripts(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rdb := c.Redis()
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	keys := []string{"rl:{test}:count", "rl:{test}:seen"}

	for i, run := range []struct {
		name string
		do   func() *redis.Cmd
	}{
		// Run sends EVALSHA, gets NOSCRIPT on the empty cache, then sends EVAL.
		{"Run", func() *redis.Cmd { return windowScript.Run(ctx, rdb, keys, 2, 60, 5000) }},
		// EVAL loaded it above, so a bare EVALSHA must now succeed.
		{"EvalSha", func() *redis.Cmd { return windowScript.EvalSha(ctx, rdb, keys, 2, 60, 5000) }},
		{"Eval", func() *redis.Cmd { return windowScript.Eval(ctx, rdb, keys, 2, 60, 5000) }},
	} {
		vals, err := run.do().Slice()
		if err != nil {
			t.Fatalf("%s: %v", run.name, err)
		}
		if len(vals) != 4 {
			t.Fatalf("%s returned %d values %v, want 4", run.name, len(vals), vals)
		}
		n, ok1 := vals[0].(int64)
		ttl, ok2 := vals[1].(int64)
		now, ok3 := vals[2].(int64)
		seen, ok4 := vals[3].(string)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			t.Fatalf("%s returned %#v, want int64, int64, int64, string", run.name, vals)
		}
		if want := int64(2 * (i + 1)); n != want {
			t.Errorf("%s: counter = %d, want %d", run.name, n, want)
		}
		if ttl <= 0 || ttl > 60_000 {
			t.Errorf("%s: PTTL = %d, want in (0, 60000]", run.name, ttl)
		}
		if skew := time.Since(time.UnixMilli(now)); skew < -5*time.Second || skew > 5*time.Second {
			t.Errorf("%s: TIME says %v, %v away from this clock", run.name, time.UnixMilli(now), skew)
		}
		if seen != strconv.FormatInt(now, 10) {
			t.Errorf("%s: GET after SET PX = %q, want %d", run.name, seen, now)
		}
	}
	if ok, err := rdb.ScriptExists(ctx, windowScript.Hash()).Result(); err != nil || len(ok) != 1 || !ok[0] {
		t.Errorf("SCRIPT EXISTS = %v (%v), want the script cached", ok, err)
	}

	// TTLs must run on the wall clock: a rate-limit window that never closes is an outage.
	if err := rdb.Set(ctx, "short", "x", 50*time.Millisecond).Err(); err != nil {
		t.Fatalf("SET PX: %v", err)
	}
	if err := rdb.Set(ctx, "long", "x", 10*time.Second).Err(); err != nil {
		t.Fatalf("SET PX: %v", err)
	}
	time.Sleep(250 * time.Millisecond)
	if got, err := rdb.Get(ctx, "short").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET 250ms after SET PX 50 = %q (%v), want the key expired", got, err)
	}
	if ttl, err := rdb.PTTL(ctx, "long").Result(); err != nil || ttl > 9850*time.Millisecond || ttl <= 0 {
		t.Errorf("PTTL 250ms after SET PX 10000 = %v (%v), want it counting down", ttl, err)
	}
}

func TestScriptsOnRedisServer(t *testing.T) {
	s := redistest.Start(t)
	checkScripts(t, newClient(t, Options{URL: s.URL(), Timeout: time.Second}))
}

func TestEmbedded(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	c, err := New(Options{Password: "meant-for-a-real-redis", Timeout: time.Second}, zap.New(core))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })

	if !c.Embedded() {
		t.Error("Embedded() = false with an empty URL")
	}
	if got := logs.FilterMessage(EmbeddedWarning).Len(); got != 1 {
		t.Errorf("logged the embedded warning %d times, want once; logs: %v", got, logs.All())
	}
	if d := c.Describe(); !strings.HasPrefix(d, "embedded in-memory store at 127.0.0.1:") {
		t.Errorf("Describe() = %q", d)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	checkScripts(t, c)

	addr := strings.TrimPrefix(c.Describe(), "embedded in-memory store at ")
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v, want the first result again", err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("the embedded store still accepts connections on %s after Close", addr)
	}
}

// TestEmbeddedScales guards the expiry design: advancing TTLs visits every key, so it must
// not happen on every command (miniredis's ClockTTL mode), or each call would cost
// milliseconds once the store holds tens of thousands of keys.
func TestEmbeddedScales(t *testing.T) {
	const keys = 20000
	c := newClient(t, Options{Timeout: 10 * time.Second})
	ctx := context.Background()
	pipe := c.Redis().Pipeline()
	for i := range keys {
		pipe.Set(ctx, "rl:{p:"+strconv.Itoa(i)+"}:w", "1", time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatalf("SET %d keys: %v", keys, err)
	}
	const calls = 200
	start := time.Now()
	for range calls {
		if err := c.Redis().Incr(ctx, "hits").Err(); err != nil {
			t.Fatalf("INCR: %v", err)
		}
	}
	per := time.Since(start) / calls
	t.Logf("INCR with %d keys that expire: %v per call", keys, per)
	if per > 5*time.Millisecond {
		t.Errorf("INCR took %v per call with %d keys, want well under 5ms", per, keys)
	}
}

// Each embedded Client is its own store: this is why the warning says replicas share nothing.
func TestEmbeddedStoresAreSeparate(t *testing.T) {
	a := newClient(t, Options{Timeout: time.Second})
	b := newClient(t, Options{Timeout: time.Second})
	ctx := context.Background()
	if err := a.Redis().Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := b.Redis().Get(ctx, "k").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("second store holds %q (%v), want nothing", got, err)
	}
}
