package main

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// runningStore starts an embedded store on a fixed free port, as `extauthz serve` does with
// redis.embedded_addr, and returns its address.
func runningStore(t *testing.T) (*redisconn.Client, string) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	rc, err := redisconn.New(redisconn.Options{EmbeddedAddr: addr, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatalf("start the embedded store: %v", err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return rc, addr
}

// TestCLIRedis covers each answer of cliRedis: a named Redis, the embedded store of a running
// sidecar, and the two ways there is none.
func TestCLIRedis(t *testing.T) {
	noRedisEnv(t)
	store, addr := runningStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := store.Do(ctx, "SET", []string{"marker"}, "from-the-sidecar"); err != nil {
		t.Fatal(err)
	}

	t.Run("the running sidecar's embedded store", func(t *testing.T) {
		// A password in the file is meant for a real Redis: the embedded store has none.
		cfgPath := writeConfig(t, "redis: {embedded_addr: '"+addr+"', password: for-a-real-redis}\n")
		cfg, rc, err := cliRedis("", cfgPath, noEnv)
		if err != nil {
			t.Fatalf("cliRedis: %v", err)
		}
		defer rc.Close()
		if rc.Embedded() || cfg.Redis.EmbeddedAddr != addr {
			t.Errorf("Embedded() = %v, embedded_addr %q: want a client of the running store at %s", rc.Embedded(), cfg.Redis.EmbeddedAddr, addr)
		}
		if rc.Timeout() < cliRedisTimeout {
			t.Errorf("Timeout() = %v, want at least %v", rc.Timeout(), cliRedisTimeout)
		}
		if err := rc.WaitReady(ctx); err != nil {
			t.Fatalf("WaitReady: %v", err)
		}
		if got, err := rc.Get(ctx, "marker"); err != nil || got != "from-the-sidecar" {
			t.Errorf("GET marker = %q, %v; want the value the sidecar's store holds", got, err)
		}
	})

	t.Run("--redis-url wins over the embedded store", func(t *testing.T) {
		cfgPath := writeConfig(t, "redis: {embedded_addr: '"+addr+"'}\n")
		_, rc, err := cliRedis("redis://127.0.0.1:1/3", cfgPath, noEnv)
		if err != nil {
			t.Fatalf("cliRedis: %v", err)
		}
		defer rc.Close()
		if got := rc.Describe(); got != "redis://127.0.0.1:1/3" {
			t.Errorf("Describe() = %q, want the --redis-url", got)
		}
	})

	tests := []struct {
		name, config string
		want         []string
	}{
		{"no config", "", []string{"need a Redis", "--config", "127.0.0.1:9004"}},
		{"free port", "log: {level: debug}\n", []string{"need a Redis", "127.0.0.1:0", "no other process can reach", "fixed loopback port"}},
		{"nothing running", "redis: {embedded_addr: '127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "'}\n",
			[]string{"need a Redis", "nothing answers at 127.0.0.1:", "make run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.config != "" {
				path = writeConfig(t, tt.config)
			}
			_, rc, err := cliRedis("", path, noEnv)
			if err == nil {
				rc.Close()
				t.Fatal("cliRedis found a Redis, want none")
			}
			if !errors.Is(err, errNoRedis) {
				t.Errorf("error %v does not match errNoRedis", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	t.Run("a non-loopback embedded_addr is a config problem", func(t *testing.T) {
		_, _, err := cliRedis("", writeConfig(t, "redis: {embedded_addr: '0.0.0.0:9004'}\n"), noEnv)
		if err == nil || errors.Is(err, errNoRedis) || !strings.Contains(err.Error(), "redis.embedded_addr") {
			t.Errorf("error %v, want a config problem at redis.embedded_addr", err)
		}
	})
}

// The newcomer flow without a process: a key created with --config (no redis.url) lands in
// the running store, list shows it, revoke disables it, all through the store the sidecar reads.
func TestAPIKeyOnRunningEmbeddedStore(t *testing.T) {
	noRedisEnv(t)
	_, addr := runningStore(t)
	cfgPath := writeConfig(t, "redis: {embedded_addr: '"+addr+"'}\n")
	code, out, errOut := runCLI(t, "apikey", "create", "--config", cfgPath, "--owner", "alice")
	if code != 0 {
		t.Fatalf("create: exit %d, stderr %q", code, errOut)
	}
	key, _, _ := strings.Cut(out, "\n")
	if !validKey(t, key) {
		t.Fatalf("create printed %q first, want a key", key)
	}
	code, out, errOut = runCLI(t, "apikey", "list", "--config", cfgPath, "--json")
	if code != 0 || !strings.Contains(out, `"owner":"alice"`) || !strings.Contains(out, `"state":"active"`) {
		t.Fatalf("list: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if strings.Contains(out, key) {
		t.Fatal("list printed the key")
	}
	id := between(out, `"id":"`, `"`)
	if code, out, errOut = runCLI(t, "apikey", "revoke", id, "--config", cfgPath); code != 0 || !strings.Contains(out, "revoked "+id) {
		t.Fatalf("revoke: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, out, _ = runCLI(t, "apikey", "list", "--config", cfgPath, "--json"); !strings.Contains(out, `"state":"revoked"`) {
		t.Fatalf("after revoke, list = %q, want the key revoked", out)
	}
}

func noEnv(string) string { return "" }

// between returns the text of s after the first before and up to the next after.
func between(s, before, after string) string {
	_, rest, _ := strings.Cut(s, before)
	v, _, _ := strings.Cut(rest, after)
	return v
}

// TestExplainOnRunningEmbeddedStore: explain with a config that has no redis.url reads the
// embedded store of the sidecar running with it (make run), so a key created there is found
// and its limit's count is the store's; with nothing at the address it says it ran on an empty
// store instead.
func TestExplainOnRunningEmbeddedStore(t *testing.T) {
	noRedisEnv(t)
	_, addr := runningStore(t)
	cfgPath := writeConfig(t, "redis: {embedded_addr: '"+addr+"'}\n"+
		"policies:\n  - {name: api, match: {path_prefix: /api/}, auth: apikey, limits: [{name: per-key, by: principal, requests: 5, window: 1m}]}\n")
	code, out, errOut := runCLI(t, "apikey", "create", "--config", cfgPath, "--owner", "alice")
	if code != 0 {
		t.Fatalf("create: exit %d, stderr %q", code, errOut)
	}
	key, _, _ := strings.Cut(out, "\n")
	code, out, errOut = runCLI(t, "explain", "--config", cfgPath, "--method", "GET", "--path", "/api/x", "--header", "x-api-key:"+key)
	if code != 0 || !strings.Contains(out, addr) || !strings.Contains(out, "allow") {
		t.Fatalf("explain on the running store: exit %d, stdout %q, stderr %q; want 0, allow, and a note naming %s", code, out, errOut, addr)
	}
	if strings.Contains(out+errOut, key) {
		t.Fatal("explain printed the API key")
	}

	// Nothing answers at a fixed address: an empty store of its own, and the note says so.
	empty := writeConfig(t, "redis: {embedded_addr: '127.0.0.1:"+strconv.Itoa(redistest.FreePort(t))+"'}\n"+
		"policies:\n  - {name: api, match: {path_prefix: /api/}, auth: apikey}\n")
	code, out, errOut = runCLI(t, "explain", "--config", empty, "--method", "GET", "--path", "/api/x", "--header", "x-api-key:"+key)
	if code != 1 || !strings.Contains(out, "empty embedded store") {
		t.Fatalf("explain with nothing running: exit %d, stdout %q, stderr %q; want 1 (the key is unknown there) and the empty-store note", code, out, errOut)
	}
}
