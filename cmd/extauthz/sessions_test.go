package main

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/sessions"
)

// sessionsCLIConfig writes a config file for srv with sessions configured.
func sessionsCLIConfig(t *testing.T, srv *redistest.Server, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "extauthz.yaml")
	body := "redis: {url: " + srv.URL() + "}\nsessions:\n  secrets: [cli-secret, older]\n  subject: passport.user\n  roles: role\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSessionsCreateListRevoke(t *testing.T) {
	noRedisEnv(t)
	t.Setenv("SESSION_SECRET", "")
	srv := redistest.Start(t)
	cfg := sessionsCLIConfig(t, srv, "")

	// create: the Cookie header value on the first line, a note without it after.
	var cookies []string
	for i := 0; i < 3; i++ {
		code, out, errOut := runCLI(t, "sessions", "create", "--user", "alice", "--role", "admin", "--role", "ops", "--ttl", "2h", "--config", cfg)
		if code != 0 {
			t.Fatalf("create exit %d: %s", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "connect.sid=s%3A") || strings.Contains(lines[1], lines[0]) ||
			!strings.Contains(lines[1], `user "alice"`) || !strings.Contains(lines[1], "roles admin,ops") {
			t.Fatalf("create printed %q", out)
		}
		cookies = append(cookies, lines[0])
	}

	// The session is connect-redis-shaped, signed with the first secret, and resolves.
	rc := redisconntest.Ready(t, redisconn.Options{URL: srv.URL()})
	st, err := sessions.New(rc, sessions.Options{Secrets: []string{"cli-secret"}, Subject: "passport.user", Roles: "role"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var sids []string
	for _, c := range cookies {
		s, err := st.Resolve(ctx, c)
		if err != nil {
			t.Fatalf("the created cookie does not resolve: %v", err)
		}
		if s.Subject != "alice" || strings.Join(s.Roles, ",") != "admin,ops" {
			t.Fatalf("created session = %v", s)
		}
		sids = append(sids, s.ID)
	}
	raw, err := redistest.Command(ctx, srv.Addr(), "", "GET", "sess:"+sids[0])
	if err != nil {
		t.Fatal(err)
	}
	var value struct {
		Cookie struct {
			OriginalMaxAge int64  `json:"originalMaxAge"`
			Expires        string `json:"expires"`
			HTTPOnly       bool   `json:"httpOnly"`
			Path           string `json:"path"`
		} `json:"cookie"`
		Passport struct{ User string } `json:"passport"`
	}
	if err := json.Unmarshal([]byte(raw.(string)), &value); err != nil || value.Cookie.OriginalMaxAge != 7200000 || !value.Cookie.HTTPOnly || value.Cookie.Path != "/" || value.Passport.User != "alice" {
		t.Fatalf("stored session %s (%v)", raw, err)
	}
	if exp, err := time.Parse(time.RFC3339Nano, value.Cookie.Expires); err != nil || exp.Sub(time.Now()) < 119*time.Minute {
		t.Errorf("cookie.expires %q", value.Cookie.Expires)
	}
	if ttl, _ := redistest.Command(ctx, srv.Addr(), "", "TTL", "sess:"+sids[0]); ttl.(int64) < 7190 || ttl.(int64) > 7200 {
		t.Errorf("TTL = %v, want 7200", ttl)
	}

	// The sidecar would index them on first use; here the index is written directly.
	ix, err := sessions.NewIndex(rc, sessions.IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, sid := range sids {
		if err := ix.Record(ctx, sessions.Visit{SID: sid, Subject: "alice", IP: "198.51.100.1", UserAgent: []string{"phone", "laptop", "tablet"}[i] + " browser"}); err != nil {
			t.Fatal(err)
		}
	}
	ids := []string{sessions.PublicID(sids[0]), sessions.PublicID(sids[1]), sessions.PublicID(sids[2])}

	code, out, errOut := runCLI(t, "sessions", "list", "--user", "alice", "--config", cfg)
	if code != 0 {
		t.Fatalf("list exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[0], "USER AGENT") {
		t.Fatalf("list printed %q", out)
	}
	for i, id := range ids {
		if !strings.Contains(out, id) || !strings.Contains(out, []string{"phone", "laptop", "tablet"}[i]+" browser") {
			t.Errorf("list lacks %s: %q", id, out)
		}
	}
	code, out, _ = runCLI(t, "sessions", "list", "--json", "--user", "alice", "--config", cfg)
	jsonLines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(jsonLines) != 3 {
		t.Fatalf("list --json exit %d: %q", code, out)
	}
	for _, l := range jsonLines {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || len(e) != 6 || e["ip"] != "198.51.100.1" || e["expires"] == nil {
			t.Errorf("list --json line %q: %v", l, err)
		}
	}
	for _, secret := range append(sids, cookies...) {
		if strings.Contains(out, secret) || strings.Contains(out, url.QueryEscape(secret)) {
			t.Fatal("list shows a sid or a cookie")
		}
	}

	// revoke ID, then --user with --except, then --user.
	if code, out, errOut := runCLI(t, "sessions", "revoke", ids[2], "--config", cfg); code != 0 || !strings.Contains(out, "revoked session "+ids[2]) {
		t.Fatalf("revoke ID exit %d: %q %q", code, out, errOut)
	}
	if _, err := st.Resolve(ctx, cookies[2]); err == nil {
		t.Fatal("a revoked session still resolves")
	}
	if code, _, errOut := runCLI(t, "sessions", "revoke", ids[2], "--config", cfg); code != 1 || !strings.Contains(errOut, "no indexed session") {
		t.Errorf("revoking again: exit %d %q", code, errOut)
	}
	if code, out, errOut := runCLI(t, "sessions", "revoke", "--user", "alice", "--except", ids[0], "--config", cfg); code != 0 || !strings.Contains(out, "revoked 1 session(s)") {
		t.Fatalf("revoke --except exit %d: %q %q", code, out, errOut)
	}
	if _, err := st.Resolve(ctx, cookies[0]); err != nil {
		t.Fatalf("the kept session is gone: %v", err)
	}
	if _, err := st.Resolve(ctx, cookies[1]); err == nil {
		t.Fatal("a revoked session still resolves")
	}
	if code, out, _ := runCLI(t, "sessions", "revoke", "--user", "alice", "--redis-url", srv.URL()); code != 0 || !strings.Contains(out, "revoked 1 session(s)") {
		t.Fatalf("revoke --user exit %d: %q", code, out)
	}
	if code, out, _ := runCLI(t, "sessions", "list", "--user", "alice", "--redis-url", srv.URL()); code != 0 || strings.Count(out, "\n") != 1 {
		t.Errorf("list after revoking everything: %q", out)
	}
}

func TestSessionsUsage(t *testing.T) {
	noRedisEnv(t)
	t.Setenv("SESSION_SECRET", "")
	cookie := "s%3Asecret-sid.sig"
	for _, tt := range []struct {
		name string
		args []string
		code int
		text string
	}{
		{"no command", []string{"sessions"}, 2, "Usage:"},
		{"unknown command", []string{"sessions", "kill"}, 2, `unknown command "kill"`},
		{"list without user", []string{"sessions", "list"}, 2, "--user is required"},
		{"revoke without anything", []string{"sessions", "revoke"}, 2, "give --user U, or a session ID"},
		{"revoke a cookie", []string{"sessions", "revoke", cookie}, 2, "looks like a session cookie"},
		{"revoke a sid", []string{"sessions", "revoke", "secret-sid-value"}, 2, "16 hex digits"},
		{"except with an id", []string{"sessions", "revoke", "0123456789abcdef", "--except", "0123456789abcdef"}, 2, "--except goes with --user"},
		{"bad except", []string{"sessions", "revoke", "--user", "a", "--except", cookie}, 2, "looks like a session cookie"},
		{"create without user", []string{"sessions", "create"}, 2, "--user is required"},
		{"create with a bad ttl", []string{"sessions", "create", "--user", "a", "--ttl", "soon"}, 2, "--ttl"},
		{"no redis", []string{"sessions", "list", "--user", "a"}, 1, "need a Redis"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.text) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", code, errOut, tt.code, tt.text)
			}
			if strings.Contains(out+errOut, "secret-sid") {
				t.Fatalf("the command repeated what was pasted: %q", out+errOut)
			}
		})
	}

	srv := redistest.Start(t)
	noSecrets := filepath.Join(t.TempDir(), "plain.yaml")
	if err := os.WriteFile(noSecrets, []byte("redis: {url: "+srv.URL()+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "sessions", "create", "--user", "a", "--config", noSecrets); code != 1 || !strings.Contains(errOut, "sessions.secrets") {
		t.Errorf("create without secrets: exit %d %q", code, errOut)
	}
	t.Setenv("SESSION_SECRET", "from-env")
	if code, _, errOut := runCLI(t, "sessions", "create", "--user", "a", "--role", "x", "--config", noSecrets); code != 1 || !strings.Contains(errOut, "sessions.roles") {
		t.Errorf("create --role without sessions.roles: exit %d %q", code, errOut)
	}
	code, out, errOut := runCLI(t, "sessions", "create", "--user", "a", "--config", noSecrets)
	if code != 0 {
		t.Fatalf("create with SESSION_SECRET: exit %d %q", code, errOut)
	}
	raw, _ := url.PathUnescape(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "connect.sid="))
	if _, ok := sessions.Unsign(raw, []string{"from-env"}); !ok {
		t.Errorf("the cookie %q is not signed with SESSION_SECRET", raw)
	}
}
