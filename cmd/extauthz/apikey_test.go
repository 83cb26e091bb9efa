package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/redistest"
)

// runCLI runs a command line and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// noRedisEnv clears the environment variables that could point the commands at a Redis the
// test did not start.
func noRedisEnv(t *testing.T) {
	t.Helper()
	t.Setenv(config.EnvRedisURL, "")
	t.Setenv(config.EnvRedisPassword, "")
}

// validKey reports whether key is a key in the default format.
func validKey(t *testing.T, key string) bool {
	t.Helper()
	st, err := apikeys.New(&redisNever{}, apikeys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return st.Valid(key)
}

// redisNever satisfies apikeys.Redis for a Store that only checks formats; any call panics.
type redisNever struct{ apikeys.Redis }

func TestAPIKeyLifecycle(t *testing.T) {
	noRedisEnv(t)
	srv := redistest.Start(t)
	url := srv.URL()

	code, out, errOut := runCLI(t, "apikey", "create", "--owner", "team-billing", "--tier", "pro",
		"--scopes", "invoices:read, invoices:write", "--expires", "90d", "--name", "billing", "--redis-url", url)
	if code != 0 {
		t.Fatalf("create exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	key := lines[0]
	if !validKey(t, key) {
		t.Fatalf("first stdout line %q is not a valid key", key)
	}
	if len(lines) < 2 || strings.Contains(strings.Join(lines[1:], "\n"), key) {
		t.Fatalf("create output after the key = %q, want a note without the key", lines[1:])
	}
	note := strings.Join(lines[1:], "\n")
	for _, want := range []string{"k_", "team-billing", "pro", "invoices:read,invoices:write", "expires 20"} {
		if !strings.Contains(note, want) {
			t.Errorf("create note %q lacks %q", note, want)
		}
	}

	// A second key, with no expiry, from a config file instead of --redis-url.
	cfgPath := filepath.Join(t.TempDir(), "extauthz.yaml")
	if err := os.WriteFile(cfgPath, []byte("redis: {url: "+url+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out2, errOut := runCLI(t, "apikey", "create", "--config", cfgPath, "--owner", "alice")
	if code != 0 {
		t.Fatalf("create --config exit %d, stderr %q", code, errOut)
	}
	key2 := strings.SplitN(out2, "\n", 2)[0]
	if !validKey(t, key2) || key2 == key {
		t.Fatalf("second key %q is not a new valid key", key2)
	}

	code, listed, errOut := runCLI(t, "apikey", "list", "--json", "--redis-url", url)
	if code != 0 {
		t.Fatalf("list exit %d, stderr %q", code, errOut)
	}
	entries := parseJSONLines(t, listed)
	if len(entries) != 2 {
		t.Fatalf("list --json has %d entries, want 2:\n%s", len(entries), listed)
	}
	for _, e := range entries {
		for _, f := range []string{"id", "name", "owner", "tier", "scopes", "created", "expires", "state"} {
			if _, ok := e[f]; !ok {
				t.Errorf("entry %v lacks %q", e, f)
			}
		}
		if _, err := time.Parse(time.RFC3339, e["created"].(string)); err != nil {
			t.Errorf("created %v is not RFC 3339", e["created"])
		}
		if e["state"] != "active" {
			t.Errorf("state = %v, want active", e["state"])
		}
	}
	var billing, alice map[string]any
	for _, e := range entries {
		switch e["owner"] {
		case "team-billing":
			billing = e
		case "alice":
			alice = e
		}
	}
	if billing == nil || alice == nil {
		t.Fatalf("list --json lacks an owner:\n%s", listed)
	}
	if got := billing["scopes"].([]any); len(got) != 2 || got[0] != "invoices:read" || got[1] != "invoices:write" {
		t.Errorf("scopes = %v", got)
	}
	if exp, ok := billing["expires"].(string); !ok || !strings.HasPrefix(exp, time.Now().UTC().Add(90*24*time.Hour).Format("2006-01-02")) {
		t.Errorf("expires = %v, want 90 days from now", billing["expires"])
	}
	if alice["expires"] != nil {
		t.Errorf("never-expiring key has expires %v, want null", alice["expires"])
	}
	if s := alice["scopes"].([]any); len(s) != 0 {
		t.Errorf("scopes = %v, want []", s)
	}

	code, table, _ := runCLI(t, "apikey", "list", "--redis-url", url)
	if code != 0 || !strings.Contains(table, "STATE") || !strings.Contains(table, "never") {
		t.Errorf("list table (exit %d):\n%s", code, table)
	}
	for _, k := range []string{key, key2} {
		for _, text := range []string{listed, table} {
			if strings.Contains(text, k) || strings.Contains(text, apikeys.Hash(k)) {
				t.Errorf("list output holds a key or its hash")
			}
		}
	}

	id := billing["id"].(string)
	code, out, errOut = runCLI(t, "apikey", "revoke", id, "--redis-url", url)
	if code != 0 || strings.TrimSpace(out) != "revoked "+id {
		t.Fatalf("revoke = exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, listed, _ = runCLI(t, "apikey", "list", "--json", "--redis-url", url)
	for _, e := range parseJSONLines(t, listed) {
		want := "active"
		if e["id"] == id {
			want = "revoked"
		}
		if e["state"] != want {
			t.Errorf("after revoke, %v has state %v, want %s", e["id"], e["state"], want)
		}
	}

	code, _, errOut = runCLI(t, "apikey", "revoke", "--redis-url", url, "k_000000000000")
	if code != 1 || !strings.Contains(errOut, `no api key with id "k_000000000000"`) {
		t.Errorf("revoke unknown id = exit %d, stderr %q; want 1 and a clear message", code, errOut)
	}
	code, _, errOut = runCLI(t, "apikey", "revoke", key2, "--redis-url", url)
	if code != 1 || strings.Contains(errOut, key2) {
		t.Errorf("revoke with a key as id = exit %d, stderr %q; want 1 without echoing the key", code, errOut)
	}
}

func parseJSONLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestAPIKeyUsageErrors(t *testing.T) {
	noRedisEnv(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no subcommand", []string{"apikey"}, 2, "Usage:"},
		{"unknown subcommand", []string{"apikey", "rotate"}, 2, `unknown command "rotate"`},
		{"missing owner", []string{"apikey", "create", "--redis-url", "redis://127.0.0.1:1/0"}, 2, "--owner is required"},
		{"blank owner", []string{"apikey", "create", "--owner", " ", "--redis-url", "redis://127.0.0.1:1/0"}, 2, "--owner is required"},
		{"bad expiry", []string{"apikey", "create", "--owner", "o", "--expires", "soon"}, 2, "--expires"},
		{"zero days", []string{"apikey", "create", "--owner", "o", "--expires", "0d"}, 2, "--expires"},
		{"negative expiry", []string{"apikey", "create", "--owner", "o", "--expires", "-1h"}, 2, "positive"},
		{"unknown flag", []string{"apikey", "list", "--yaml"}, 2, "flag provided but not defined"},
		{"revoke without id", []string{"apikey", "revoke"}, 2, "exactly one ID"},
		{"revoke two ids", []string{"apikey", "revoke", "k_a", "k_b"}, 2, "exactly one ID"},
		{"no redis for create", []string{"apikey", "create", "--owner", "o"}, 1, "extauthz apikey create: need a Redis: no --redis-url, --config or EXTAUTHZ_REDIS_URL"},
		{"no redis for list", []string{"apikey", "list"}, 1, "need a Redis"},
		{"no redis for revoke", []string{"apikey", "revoke", "k_000000000000"}, 1, "need a Redis"},
		{"config without redis", []string{"apikey", "list", "--config", writeConfig(t, "log: {level: debug}\n")}, 1, "need a Redis"},
		{"bad config", []string{"apikey", "list", "--config", writeConfig(t, "redis: {urll: x}\n")}, 1, "problem"},
		{"missing config", []string{"apikey", "list", "--config", "/nonexistent/extauthz.yaml"}, 1, "read config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.wantCode || !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tt.wantCode, tt.wantErr)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
		})
	}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "extauthz.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAPIKeyConfigPrefixes(t *testing.T) {
	noRedisEnv(t)
	srv := redistest.Start(t)
	cfg := writeConfig(t, "redis: {url: "+srv.URL()+"}\napikeys: {prefix: 'tenant:', token_prefix: acme_}\n")
	code, out, errOut := runCLI(t, "apikey", "create", "--config", cfg, "--owner", "o")
	if code != 0 {
		t.Fatalf("create exit %d, stderr %q", code, errOut)
	}
	key := strings.SplitN(out, "\n", 2)[0]
	if !strings.HasPrefix(key, "acme_") {
		t.Errorf("key does not start with the configured token prefix acme_")
	}
	if got, err := srv.Do(t.Context(), "EXISTS", "tenant:"+apikeys.Hash(key)); err != nil || got != ":1" {
		t.Errorf("EXISTS tenant:<hash> = %q, %v; want the record under the configured prefix", got, err)
	}
	// The environment names a Redis when neither flag does.
	t.Setenv(config.EnvRedisURL, srv.URL())
	if code, _, errOut := runCLI(t, "apikey", "list"); code != 0 {
		t.Errorf("list with only %s: exit %d, stderr %q", config.EnvRedisURL, code, errOut)
	}
}

func TestAPIKeyRedisDown(t *testing.T) {
	noRedisEnv(t)
	url := "redis://127.0.0.1:" + strconv.Itoa(redistest.FreePort(t)) + "/0"
	for _, args := range [][]string{
		{"apikey", "create", "--owner", "o", "--redis-url", url},
		{"apikey", "list", "--redis-url", url},
		{"apikey", "revoke", "k_000000000000", "--redis-url", url},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != 1 || out != "" || errOut == "" {
			t.Errorf("%v with redis down = exit %d, stdout %q, stderr %q; want 1 and a message", args[1], code, out, errOut)
		}
	}
}
