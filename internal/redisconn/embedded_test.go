package redisconn

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/redistest"
)

// windowScript uses every command the project's limiter scripts rely on: TIME as the clock,
// INCRBY and EXPIRE for the counter, PTTL, SET ... PX and GET.
const windowScript = `
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[2], now_ms, 'PX', ARGV[3])
return {n, ttl, now_ms, redis.call('GET', KEYS[2])}
`

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

var windowSHA = sha1Hex(windowScript)

// checkScripts is the contract every backend must meet: the same script, run EVALSHA first
// and EVAL when the server does not know it, gives the same answers, in go-redis's types.
func checkScripts(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "SCRIPT FLUSH", nil); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	keys := []string{"rl:{test}:count", "rl:{test}:seen"}
	for i := range 3 {
		// The first call gets NOSCRIPT on the empty cache and falls back to EVAL, which loads
		// the script; the others are plain EVALSHAs.
		v, err := c.Eval(ctx, windowSHA, windowScript, keys, 2, int64(60), uint64(5000))
		if err != nil {
			t.Fatalf("Eval %d: %v", i, err)
		}
		vals, ok := v.([]any)
		if !ok || len(vals) != 4 {
			t.Fatalf("Eval %d returned %#v, want 4 values", i, v)
		}
		n, ok1 := vals[0].(int64)
		ttl, ok2 := vals[1].(int64)
		now, ok3 := vals[2].(int64)
		seen, ok4 := vals[3].(string)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			t.Fatalf("Eval %d returned %#v, want int64, int64, int64, string", i, vals)
		}
		if want := int64(2 * (i + 1)); n != want {
			t.Errorf("Eval %d: counter = %d, want %d", i, n, want)
		}
		if ttl <= 0 || ttl > 60_000 {
			t.Errorf("Eval %d: PTTL = %d, want in (0, 60000]", i, ttl)
		}
		if skew := time.Since(time.UnixMilli(now)); skew < -5*time.Second || skew > 5*time.Second {
			t.Errorf("Eval %d: TIME says %v, %v away from this clock", i, time.UnixMilli(now), skew)
		}
		if seen != strconv.FormatInt(now, 10) {
			t.Errorf("Eval %d: GET after SET PX = %q, want %d", i, seen, now)
		}
	}
	if v, err := c.Do(ctx, "SCRIPT EXISTS", nil, windowSHA); err != nil || len(v.([]any)) != 1 || v.([]any)[0] != int64(1) {
		t.Errorf("SCRIPT EXISTS = %#v (%v), want the script cached", v, err)
	}

	// Argument formatting: what the scripts receive, byte for byte.
	echo := "return ARGV"
	v, err := c.Eval(ctx, sha1Hex(echo), echo, nil, "s", []byte("b"), 7, int64(-8), uint64(9), 0.25, 1e21, true, false)
	if err != nil {
		t.Fatalf("Eval echo: %v", err)
	}
	want := []any{"s", "b", "7", "-8", "9", "0.25", "1000000000000000000000", "1", "0"}
	if got, ok := v.([]any); !ok || len(got) != len(want) {
		t.Errorf("ARGV = %#v, want %#v", v, want)
	} else {
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("ARGV[%d] = %#v, want %#v", i+1, got[i], want[i])
			}
		}
	}
	if _, err := c.Eval(ctx, sha1Hex(echo), echo, nil, struct{}{}); err == nil || !strings.Contains(err.Error(), "unsupported type struct {}") {
		t.Errorf("Eval with a struct argument = %v, want an unsupported type error", err)
	}
	// A script's nil is ErrNil; an error reply keeps its prefix.
	if v, err := c.Eval(ctx, sha1Hex("return nil"), "return nil", nil); !errors.Is(err, ErrNil) {
		t.Errorf("Eval of nil = %#v, %v, want ErrNil", v, err)
	}
	if _, err := c.Do(ctx, "SET", []string{"str"}, "x"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if _, err := c.HGetAll(ctx, "str"); !HasErrorPrefix(err, "WRONGTYPE") {
		t.Errorf("HGETALL of a string = %v, want WRONGTYPE", err)
	}

	// TTLs must run on the wall clock: a rate-limit window that never closes is an outage.
	if _, err := c.Do(ctx, "SET", []string{"short"}, "x", "PX", "50"); err != nil {
		t.Fatalf("SET PX: %v", err)
	}
	if _, err := c.Do(ctx, "SET", []string{"long"}, "x", "PX", "10000"); err != nil {
		t.Fatalf("SET PX: %v", err)
	}
	// Polled rather than slept: on a loaded box the expiry goroutine may run late, and what
	// matters is that TTLs move at all.
	set := time.Now()
	for {
		_, err := c.Get(ctx, "short")
		if errors.Is(err, ErrNil) {
			break
		}
		if time.Since(set) > 2*time.Second {
			t.Fatalf("GET 2s after SET PX 50 = %v, want the key expired", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ttl, err := c.Do(ctx, "PTTL", []string{"long"}); err != nil || ttl.(int64) >= 10000 || ttl.(int64) <= 0 {
		t.Errorf("PTTL after SET PX 10000 and an expiry = %v (%v), want it counting down", ttl, err)
	}
}

func TestScriptsOnRedisServer(t *testing.T) {
	s := redistest.Start(t)
	checkScripts(t, readyClient(t, Options{URL: s.URL(), Timeout: time.Second}))
}

func TestEmbedded(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	c, err := New(Options{Password: "meant-for-a-real-redis", Timeout: time.Second}, zap.New(core))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })

	if !c.Embedded() || c.Cluster() {
		t.Errorf("Embedded() = %v, Cluster() = %v with an empty URL, want true, false", c.Embedded(), c.Cluster())
	}
	if got := logs.FilterMessage(EmbeddedWarning).Len(); got != 1 {
		t.Errorf("logged the embedded warning %d times, want once; logs: %v", got, logs.All())
	}
	if d := c.Describe(); !strings.HasPrefix(d, "embedded in-memory store at 127.0.0.1:") {
		t.Errorf("Describe() = %q", d)
	}
	// Ready from the start: the store is in-process, and a first call must not fail.
	if !c.Ready() {
		t.Error("Ready() = false right after New")
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	checkScripts(t, c)

	// No cache on the embedded store (miniredis has no CLIENT TRACKING): every read goes
	// to the store and says so.
	ctx := ctxFor(t)
	for range 2 {
		if v, hit, err := c.GetCached(ctx, "long", time.Minute); err != nil || hit || v != "x" {
			t.Errorf("GetCached = %q, %v, %v, want x from the store", v, hit, err)
		}
	}
	if _, err := c.Tx(ctx, []Cmd{{Name: "SET", Keys: []string{"a"}, Args: []string{"1"}}, {Name: "INCR", Keys: []string{"a"}}}); err != nil {
		t.Errorf("Tx: %v", err)
	}

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
	if _, err := c.Get(context.Background(), "a"); err == nil {
		t.Error("Get after Close succeeded")
	}
}

// TestEmbeddedScales guards the expiry design: advancing TTLs visits every key, so it must
// not happen on every command (miniredis's ClockTTL mode), or each call would cost
// milliseconds once the store holds tens of thousands of keys.
func TestEmbeddedScales(t *testing.T) {
	const keys = 20000
	c := newClient(t, Options{Timeout: 10 * time.Second})
	ctx := context.Background()
	// Straight into the store: through the client, 20,000 writes take seconds under -race
	// on a busy box, and they are not what is measured.
	m := c.embedded.m
	for i := range keys {
		k := "rl:{p:" + strconv.Itoa(i) + "}:w"
		if err := m.Set(k, "1"); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		m.SetTTL(k, time.Hour)
	}
	const calls = 200
	start := time.Now()
	for range calls {
		if _, err := c.Do(ctx, "INCR", []string{"hits"}); err != nil {
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
	if _, err := a.Do(ctx, "SET", []string{"k"}, "a"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := b.Get(ctx, "k"); !errors.Is(err, ErrNil) {
		t.Errorf("second store holds %q (%v), want nothing", got, err)
	}
}

// A fixed EmbeddedAddr is what lets a CLI command reach the store of a running sidecar: the
// store listens there, a second client by URL sees the same data, and a second store on the
// same address fails with a message that says why. A non-loopback address is refused before
// anything listens, since the store has no password.
func TestEmbeddedFixedAddr(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	core, logs := observer.New(zapcore.WarnLevel)
	c, err := New(Options{EmbeddedAddr: addr, Timeout: time.Second}, zap.New(core))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if got := c.Describe(); got != "embedded in-memory store at "+addr {
		t.Errorf("Describe() = %q, want the fixed address %s", got, addr)
	}
	warned := logs.FilterMessage(EmbeddedWarning).All()
	if len(warned) != 1 || warned[0].ContextMap()["addr"] != addr {
		t.Errorf("warning = %v, want one naming addr %s", warned, addr)
	}
	ctx := ctxFor(t)
	if _, err := c.Do(ctx, "SET", []string{"shared"}, "yes"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	other := readyClient(t, Options{URL: "redis://" + addr, CacheBytes: -1, Timeout: time.Second})
	if got, err := other.Get(ctx, "shared"); err != nil || got != "yes" {
		t.Errorf("a client by URL at %s read %q, %v; want the embedded store's value", addr, got, err)
	}

	if c2, err := New(Options{EmbeddedAddr: addr}, nil); err == nil {
		_ = c2.Close()
		t.Error("a second embedded store on the same fixed address started")
	} else if !strings.Contains(err.Error(), "redis.embedded_addr") || !strings.Contains(err.Error(), "another extauthz serve") {
		t.Errorf("second store: %v, want a message naming redis.embedded_addr and another serve", err)
	}

	for _, bad := range []string{"0.0.0.0:0", "10.1.2.3:9004", "localhost:0"} {
		if c3, err := New(Options{EmbeddedAddr: bad}, nil); err == nil {
			_ = c3.Close()
			t.Errorf("EmbeddedAddr %q accepted, want an error: the store has no password", bad)
		}
	}
}
