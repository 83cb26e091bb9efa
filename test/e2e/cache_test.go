package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

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

// The session and API key cache is client-side caching with RESP3 CLIENT TRACKING: Redis
// itself tells the sidecar's connection when a key it read changes, so the cache needs no
// server configuration (no notify-keyspace-events) and a change is seen by the next decision.
// These tests run on a plain redis-server with Redis's defaults; contract_test.go checks the
// same on Sentinel and Cluster.

// cacheConfig is the config of the cache tests: sessionConfig (the Express interop config)
// plus an API key route, with the cache on or off.
func cacheConfig(redisURL string, enabled bool) string {
	return sessionConfig(redisURL, "new") + fmt.Sprintf(`  - name: keys
    match: {path_prefix: /keys}
    auth: apikey
cache:
  enabled: %v
  ttl: 1m
`, enabled)
}

// singleTopology wraps a redis-server for the RESP read-backs of topology_helpers_test.go.
func singleTopology(r *redistest.Server) *topology {
	return &topology{name: "single", kind: "single", url: r.URL(), seeds: []string{r.Addr()}}
}

// TestCacheSeesLogoutAndRevoke checks, with the real Express app and the CLI, what the cache
// must never break: repeated decisions about one session or key are answered without Redis,
// and a logout through Express, and a revoke through the CLI, are seen by the next decisions.
func TestCacheSeesLogoutAndRevoke(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t)
	tp := singleTopology(r)
	// Redis's default: no keyspace notifications. The cache must not need them.
	if v, _ := tp.at(t, r.Addr(), "CONFIG", "GET", "notify-keyspace-events").([]any); len(v) != 2 || v[1] != "" {
		t.Fatalf("notify-keyspace-events = %v, want Redis's default (none)", v)
	}
	app := startExpress(t, r.URL(), "new")
	s := startSidecar(t, "--config", writeFile(t, t.TempDir(), "extauthz.yaml", cacheConfig(r.URL(), true)))
	s.waitReady()
	c := dialCheck(t, s)
	if v := metricValue(t, s, "extauthz_cache_active"); v != 1 {
		t.Errorf("extauthz_cache_active = %v without keyspace notifications, want 1", v)
	}

	t.Run("logout through Express", func(t *testing.T) {
		dave := app.login("dave", "admin")
		hitsBefore := max(metricValue(t, s, `extauthz_cache_lookups_total{cache="session",result="hit"}`), 0)
		getsBefore := tp.commandCalls(t, r.Addr(), "get")
		for range 5 {
			assertAllowedAs(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(dave), "")), map[string]string{"x-user-id": "dave"})
		}
		gets := tp.commandCalls(t, r.Addr(), "get") - getsBefore
		if gets < 1 || gets > 2 {
			t.Errorf("5 decisions about one session made %d GETs, want 1 (then cache hits; 2 tolerated)", gets)
		}
		if hits := metricValue(t, s, `extauthz_cache_lookups_total{cache="session",result="hit"}`); hits-hitsBefore < 3 {
			t.Errorf("%v session cache hits counted for 5 decisions about one session, want at least 3", hits-hitsBefore)
		}
		if code, body := app.do("POST", "/logout", dave); code != 200 {
			t.Fatalf("Express logout: %d %s", code, body)
		}
		took := pollCheck(t, c, checkRequest("GET", "/admin/x", cookieHeader(dave), ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
			return r.GetDeniedResponse().GetStatus().GetCode() == 401
		})
		t.Logf("logout seen after %v", took)
	})

	t.Run("revoke through the CLI", func(t *testing.T) {
		key := createAPIKey(t, r.URL(), "team-b")
		h := map[string]string{"x-api-key": key}
		var id string
		readsBefore := tp.commandCalls(t, r.Addr(), "hgetall")
		for range 5 {
			resp := check(t, c, checkRequest("GET", "/keys/x", h, ""))
			if resp.GetOkResponse() == nil {
				t.Fatalf("fresh key denied: %v", resp)
			}
			id = resp.GetDynamicMetadata().GetFields()["principal"].GetStringValue()
		}
		if reads := tp.commandCalls(t, r.Addr(), "hgetall") - readsBefore; reads < 1 || reads > 2 {
			t.Errorf("5 decisions about one key made %d HGETALLs, want 1 (then cache hits; 2 tolerated)", reads)
		}
		if code, out, errOut := runCLIEnv(t, "apikey", "revoke", id, "--redis-url", r.URL()); code != 0 || !strings.Contains(out, "revoked") {
			t.Fatalf("apikey revoke: exit %d %s %s", code, out, errOut)
		}
		took := pollCheck(t, c, checkRequest("GET", "/keys/x", h, ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
			return r.GetDeniedResponse().GetStatus().GetCode() == 401
		})
		t.Logf("revoke seen after %v", took)
	})
}

// TestCacheOff: with cache.enabled false every decision reads Redis, and a logout is seen at
// once all the same.
func TestCacheOff(t *testing.T) {
	r := redistest.Start(t)
	tp := singleTopology(r)
	s := startSidecar(t, "--config", writeFile(t, t.TempDir(), "extauthz.yaml", cacheConfig(r.URL(), false)))
	s.waitReady()
	c := dialCheck(t, s)
	cookie := writeSession(t, r, "cache-off-sid", "new", map[string]any{"userId": "erin", "role": "admin"})
	before := tp.commandCalls(t, r.Addr(), "get")
	for range 5 {
		assertAllowedAs(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(cookie), "")), map[string]string{"x-user-id": "erin"})
	}
	if gets := tp.commandCalls(t, r.Addr(), "get") - before; gets != 5 {
		t.Errorf("5 decisions with the cache off made %d GETs, want 5", gets)
	}
	if v := metricValue(t, s, "extauthz_cache_active"); v == 1 {
		t.Errorf("extauthz_cache_active = 1 with cache.enabled false")
	}
	if _, err := r.Do(t.Context(), "DEL", "sess:cache-off-sid"); err != nil {
		t.Fatal(err)
	}
	assertDenied(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(cookie), "")), 401)
}

// TestCacheDroppedWhenRedisRestarts: a cached session must not outlive the connection that
// tracked it. Redis restarts empty (redistest keeps no data), so the session is gone: no
// decision after the restart may allow it, and once the sidecar has reconnected it denies it,
// long before the cache's ttl (1m) would have ended the entry.
func TestCacheDroppedWhenRedisRestarts(t *testing.T) {
	r := redistest.Start(t)
	s := startSidecar(t, "--config", writeFile(t, t.TempDir(), "extauthz.yaml", cacheConfig(r.URL(), true)))
	s.waitReady()
	c := dialCheck(t, s)
	cookie := writeSession(t, r, "restart-sid", "new", map[string]any{"userId": "frank", "role": "admin"})
	req := checkRequest("GET", "/admin/x", cookieHeader(cookie), "")
	for range 3 {
		assertAllowedAs(t, check(t, c, req), map[string]string{"x-user-id": "frank"})
	}
	r.Restart()
	restarted := time.Now()
	for {
		resp := check(t, c, req)
		if resp.GetOkResponse() != nil {
			t.Fatalf("%v after Redis restarted empty, the session it lost was still allowed (a stale cache entry)", time.Since(restarted))
		}
		if resp.GetDeniedResponse().GetStatus().GetCode() == 401 {
			t.Logf("the lost session denied %v after the restart", time.Since(restarted).Round(time.Millisecond))
			break
		}
		// Until the sidecar has reconnected: UNAVAILABLE (auth fails closed).
		if time.Since(restarted) > 10*time.Second {
			t.Fatalf("no 401 within 10s of the restart; last answer %v\n%s", resp, s.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
