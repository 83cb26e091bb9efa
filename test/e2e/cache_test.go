package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// metricValue reads one sample of the sidecar's /metrics; -1 when it is absent.
func metricValue(t *testing.T, s *sidecar, series string) float64 {
	t.Helper()
	_, body := s.get("/metrics")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatalf("metric %s: %v", series, err)
	}
	return v
}

// TestCacheSeesLogoutAndRevoke runs the sidecar with its session/API key cache on a Redis that
// sends keyspace notifications, and checks what the cache must never break: a logout through
// the real Express app, and a revoke through the CLI, are seen by the very next decisions.
func TestCacheSeesLogoutAndRevoke(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t, "--notify-keyspace-events", "KA")
	app := startExpress(t, r.URL(), "new")
	cfg := sessionConfig(r.URL(), "new") + `  - name: keys
    match: {path_prefix: /keys}
    auth: apikey
cache:
  ttl: 1m
  negative_ttl: 5s
`
	s := startSidecar(t, "--config", writeFile(t, t.TempDir(), "extauthz.yaml", cfg))
	s.waitReady()
	c := dialCheck(t, s)

	deadline := time.Now().Add(5 * time.Second)
	for metricValue(t, s, "extauthz_cache_active") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("cache not active with keyspace notifications on\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// pollDenied repeats the Check until it is denied with status, for at most within, and
	// returns how long that took.
	pollDenied := func(path string, headers map[string]string, status int, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			resp := check(t, c, checkRequest("GET", path, headers, ""))
			if d := resp.GetDeniedResponse(); d != nil && int(d.GetStatus().GetCode()) == status {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s still allowed %v after the change: %v", path, within, resp)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	t.Run("logout through Express", func(t *testing.T) {
		dave := app.login("dave", "admin")
		hitsBefore := metricValue(t, s, `extauthz_cache_lookups_total{cache="session",result="hit"}`)
		for range 5 {
			assertAllowedAs(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(dave), "")), map[string]string{"x-user-id": "dave"})
		}
		if hits := metricValue(t, s, `extauthz_cache_lookups_total{cache="session",result="hit"}`) - max(hitsBefore, 0); hits < 3 {
			t.Errorf("%v cache hits for 5 decisions about one session, want at least 3", hits)
		}
		if code, body := app.do("POST", "/logout", dave); code != 200 {
			t.Fatalf("Express logout: %d %s", code, body)
		}
		took := pollDenied("/admin/x", cookieHeader(dave), 401, 250*time.Millisecond)
		t.Logf("logout seen after %v", took)
		if n := metricValue(t, s, `extauthz_cache_invalidations_total{cache="session"}`); n < 1 {
			t.Errorf("no session invalidation counted: %v", n)
		}
	})

	t.Run("revoke through the CLI", func(t *testing.T) {
		key := createAPIKey(t, r.URL(), "team-b")
		h := map[string]string{"x-api-key": key}
		var id string
		for range 3 {
			resp := check(t, c, checkRequest("GET", "/keys/x", h, ""))
			if resp.GetOkResponse() == nil {
				t.Fatalf("fresh key denied: %v", resp)
			}
			id = resp.GetDynamicMetadata().GetFields()["principal"].GetStringValue()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binPath, "apikey", "revoke", id, "--redis-url", r.URL())
		cmd.Env = append(os.Environ(), "EXTAUTHZ_REDIS_URL=")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "revoked") {
			t.Fatalf("apikey revoke: %v %s", err, out)
		}
		took := pollDenied("/keys/x", h, 401, 250*time.Millisecond)
		t.Logf("revoke seen after %v", took)
	})

}
