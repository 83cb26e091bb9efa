package authz

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/metrics/metricstest"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
)

const shadowConfig = `
sessions:
  secrets: [s3cret]
  headers: {x-user-id: userId, x-user-role: role}
  roles: role
apikeys:
  identity_headers: {x-user-id: owner, x-key-id: id}
policies:
  - name: admin-dry
    match: {path_prefix: /admin}
    auth: session
    roles: [admin]
    mode: shadow
  - name: api-dry
    match: {path_prefix: /api}
    auth: apikey
    scopes: [write]
    mode: shadow
  - name: login-dry
    match: {path_prefix: /login}
    auth: none
    limits: [{name: per-ip, by: ip, requests: 2, window: 1m}]
    mode: shadow
  - name: login
    match: {path_prefix: /strict-login}
    auth: none
    limits: [{name: per-ip, by: ip, requests: 2, window: 1m}]
  - name: closed-dry
    match: {path_prefix: /closed}
    auth: session
    limits: [{name: per-user, requests: 1, window: 1m}]
    failure: {auth: closed, limits: closed}
    mode: shadow
  - name: open-dry
    match: {path_prefix: /open}
    auth: session
    limits: [{name: per-user, requests: 1, window: 1m}]
    mode: shadow
`

// shadowFixture is an engine on shadowConfig over a real redis-server, built as the server
// builds it (the limiter behind its Guard), with its metrics and an observed decision log.
type shadowFixture struct {
	srv  *redistest.Server
	e    *Engine
	m    *metrics.Metrics
	logs *observer.ObservedLogs
	// Secrets of the fixture, none of which may appear in a label or a log line.
	alice, bob, forged, key, scopelessKey, revokedKey string
	keyID                                             string
}

func newShadowFixture(t *testing.T, lim Limiter) *shadowFixture {
	t.Helper()
	srv := redistest.Start(t)
	rc := redisClient(t, srv)
	core, logs := observer.New(zapcore.InfoLevel)
	f := &shadowFixture{srv: srv, m: metrics.New(), logs: logs}
	var ks *apikeys.Store
	if lim == nil {
		lim = ratelimit.NewGuard(ratelimit.NewLimiter(rc), ratelimit.GuardOptions{Size: 1000, OnCacheHit: f.m.PolicyOverLimitCacheHits.Inc})
	}
	f.e, ks = wiredEngine(t, rc, shadowConfig, Options{Limiter: lim, Timeout: time.Second, Headers: ratelimit.FormatDraft7, Logger: zap.New(core), Metrics: f.m, DecisionDenials: true})
	serverDo(t, srv, "SET", "sess:sid-alice-0123456789", `{"cookie":{"originalMaxAge":null},"userId":"alice","role":"admin"}`)
	serverDo(t, srv, "SET", "sess:sid-bob-0123456789", `{"cookie":{"originalMaxAge":null},"userId":"bob"}`)
	f.alice = sessionCookie("sid-alice-0123456789", "s3cret")
	f.bob = sessionCookie("sid-bob-0123456789", "s3cret")
	f.forged = sessionCookie("sid-alice-0123456789", "guessed")
	f.key, f.keyID, f.scopelessKey, f.revokedKey = issueKeys(t, ks, "write")
	return f
}

// secrets are the values that must never show up in a metric label or a log line: cookies,
// session ids, API keys, and the principals themselves.
func (f *shadowFixture) secrets() []string {
	return []string{f.alice, f.bob, f.forged, f.key, f.scopelessKey, f.revokedKey,
		"sid-alice", "sid-bob", "s3cret", "alice", "bob", "team-a", "team-b", f.keyID, "192.0.2.7"}
}

// A shadow policy lets every request through, and the upstream gets what an allowed request
// of the same caller gets: a resolved identity's headers, none for anyone else; identity
// headers the client sent itself are removed in every case, and an API key's header too.
func TestShadowLetsWouldBeDenialsThrough(t *testing.T) {
	f := newShadowFixture(t, nil)
	ctx := context.Background()
	forgedID := []string{"x-user-id", "root", "x-user-role", "admin", "x-key-id", "k_forged", DegradedHeader, "auth"}
	tests := []struct {
		name      string
		req       *Request
		wouldDeny string
		kind      string
		set       map[string]string // identity headers set, exactly
		keyHeader string
	}{
		{"no cookie", req("GET", "/admin/x", forgedID...), "unauthenticated", KindNone, nil, ""},
		{"forged cookie", req("GET", "/admin/x", append([]string{"cookie", f.forged}, forgedID...)...), "unauthenticated", KindNone, nil, ""},
		{"unknown session", req("GET", "/admin/x", append([]string{"cookie", sessionCookie("nobody", "s3cret")}, forgedID...)...), "unauthenticated", KindNone, nil, ""},
		{"session without the role", req("GET", "/admin/x", append([]string{"cookie", f.bob}, forgedID...)...), "forbidden_role", KindSession,
			map[string]string{"x-user-id": "bob"}, ""},
		{"session with the role", req("GET", "/admin/x", append([]string{"cookie", f.alice}, forgedID...)...), "", KindSession,
			map[string]string{"x-user-id": "alice", "x-user-role": "admin"}, ""},
		{"key without the scope", req("GET", "/api/x", append([]string{"x-api-key", f.scopelessKey}, forgedID...)...), "forbidden_scope", KindAPIKey,
			map[string]string{"x-user-id": "team-b", "x-key-id": "*"}, "x-api-key"},
		{"revoked key", req("GET", "/api/x", append([]string{"x-api-key", f.revokedKey}, forgedID...)...), "unauthenticated", KindNone, nil, "x-api-key"},
		{"no key", req("GET", "/api/x", forgedID...), "unauthenticated", KindNone, nil, ""},
		{"key with the scope", req("GET", "/api/x", append([]string{"authorization", "Bearer " + f.key}, forgedID...)...), "", KindAPIKey,
			map[string]string{"x-user-id": "team-a", "x-key-id": f.keyID}, "authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.e.Decide(ctx, tt.req)
			if !d.Allow || d.Status != 200 || d.Err != nil {
				t.Fatalf("not allowed: %+v", d)
			}
			if d.WouldDeny != tt.wouldDeny {
				t.Fatalf("WouldDeny = %q, want %q", d.WouldDeny, tt.wouldDeny)
			}
			wantReason := "ok"
			if tt.wouldDeny != "" {
				wantReason = "shadow"
			}
			if d.Reason != wantReason || d.Kind != tt.kind {
				t.Fatalf("reason %q kind %q, want %q %q", d.Reason, d.Kind, wantReason, tt.kind)
			}
			got := map[string]string{}
			for _, h := range d.SetHeaders {
				got[h.Name] = h.Value
			}
			if len(got) != len(tt.set) {
				t.Fatalf("set %v, want %v", got, tt.set)
			}
			for name, want := range tt.set {
				if v, ok := got[name]; !ok || want != "*" && v != want {
					t.Fatalf("set %v, want %v", got, tt.set)
				}
			}
			// Every identity header not set is removed: the client's x-user-id: root never
			// reaches the app, nor its own degraded marker.
			for _, name := range []string{"x-user-id", "x-user-role", "x-key-id", DegradedHeader} {
				if _, isSet := got[name]; !isSet && !contains(d.RemoveHeaders, name) {
					t.Fatalf("%s neither set nor removed: set %v, removed %v", name, got, d.RemoveHeaders)
				}
				if _, isSet := got[name]; isSet && contains(d.RemoveHeaders, name) {
					t.Fatalf("%s both set and removed: %v", name, d.RemoveHeaders)
				}
			}
			if tt.keyHeader != "" && (!contains(d.RemoveHeaders, tt.keyHeader) || d.KeyHeader != tt.keyHeader) {
				t.Fatalf("key header %s not stripped: removed %v, KeyHeader %q", tt.keyHeader, d.RemoveHeaders, d.KeyHeader)
			}
			if len(d.ResponseHeaders) != 0 {
				t.Fatalf("a shadow policy added client headers: %v", d.ResponseHeaders)
			}
		})
	}

	// Counted: would-be denials by reason, and as allows with reason shadow; the policy's
	// real allows as ok. No label carries a secret or a principal.
	series := metricstest.Counters(t, f.m.Registry)
	for name, want := range map[string]float64{
		`extauthz_would_deny_total{policy="admin-dry",reason="unauthenticated"}`:                    3,
		`extauthz_would_deny_total{policy="admin-dry",reason="forbidden_role"}`:                     1,
		`extauthz_would_deny_total{policy="api-dry",reason="forbidden_scope"}`:                      1,
		`extauthz_would_deny_total{policy="api-dry",reason="unauthenticated"}`:                      2,
		`extauthz_authz_decisions_total{policy="admin-dry",reason="shadow",result="allow"}`:         4,
		`extauthz_authz_decisions_total{policy="admin-dry",reason="ok",result="allow"}`:             1,
		`extauthz_authz_decisions_total{policy="api-dry",reason="shadow",result="allow"}`:           3,
		`extauthz_authz_decisions_total{policy="api-dry",reason="ok",result="allow"}`:               1,
		`extauthz_authz_decisions_total{policy="admin-dry",reason="unauthenticated",result="deny"}`: 0,
	} {
		if series[name] != want {
			t.Errorf("%s = %v, want %v\n%s", name, series[name], want, metricstest.Dump(series))
		}
	}
	assertNoSecret(t, f, series)
}

// assertNoSecret fails when a metric series or a field of a log line holds one of the
// fixture's secrets or principals.
func assertNoSecret(t *testing.T, f *shadowFixture, series map[string]float64) {
	t.Helper()
	for name := range series {
		for _, s := range f.secrets() {
			if s != "" && strings.Contains(name, s) {
				t.Errorf("metric %s holds %q", name, s)
			}
		}
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, entry := range f.logs.All() {
		b, err := enc.EncodeEntry(entry.Entry, entry.Context)
		if err != nil {
			t.Fatal(err)
		}
		text := b.String()
		for _, s := range f.secrets() {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("log line %q holds %q", text, s)
			}
		}
	}
}

// serverGet reads key from srv over a connection of its own, "" when it does not exist.
func serverGet(t *testing.T, srv *redistest.Server, key string) string {
	t.Helper()
	v, err := redistest.Command(t.Context(), srv.Addr(), "", "GET", key)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := v.(string)
	return s
}

// A would-be denial is logged as a denial is, with would_deny and its reason; the decision
// line names no principal, cookie, key or address.
func TestShadowDecisionLog(t *testing.T) {
	f := newShadowFixture(t, nil)
	ctx := context.Background()
	f.e.Decide(ctx, req("GET", "/admin/x", "cookie", f.bob))
	f.e.Decide(ctx, req("GET", "/admin/x", "cookie", f.alice))
	lines := f.logs.FilterMessage("decision").All()
	if len(lines) != 1 {
		t.Fatalf("%d decision lines, want 1 (the would-be denial; allows are not sampled): %v", len(lines), lines)
	}
	m := lines[0].ContextMap()
	if m["would_deny"] != true || m["would_deny_reason"] != "forbidden_role" || m["verdict"] != "allow" ||
		m["reason"] != "shadow" || m["policy"] != "admin-dry" || m["kind"] != KindSession {
		t.Fatalf("decision line %v", m)
	}
	assertNoSecret(t, f, nil)
}

// Limits are counted exactly as the enforced policy counts them: a shadow policy and an
// enforced twin leave the same count in Redis, including the requests the over-limit cache
// answers without Redis; the shadow policy lets them all through and shows no RateLimit
// headers, the enforced one denies with 429 and Retry-After.
func TestShadowCountsLimitsAsEnforced(t *testing.T) {
	f := newShadowFixture(t, nil)
	ctx := context.Background()
	for i := 1; i <= 5; i++ {
		d := f.e.Decide(ctx, req("POST", "/login"))
		want := ""
		if i > 2 {
			want = "over_limit"
		}
		if !d.Allow || d.WouldDeny != want || len(d.ResponseHeaders) != 0 {
			t.Fatalf("shadow request %d: allow %t would_deny %q headers %v", i, d.Allow, d.WouldDeny, d.ResponseHeaders)
		}
		e := f.e.Decide(ctx, req("POST", "/strict-login"))
		if e.Allow != (i <= 2) {
			t.Fatalf("enforced request %d: %+v", i, e)
		}
		if i > 2 {
			if _, ok := header(e.ResponseHeaders, "Retry-After"); !ok || e.Status != 429 {
				t.Fatalf("enforced request %d: %d %v", i, e.Status, e.ResponseHeaders)
			}
		}
	}
	shadowKey := limitKey("rl:", "login-dry", "per-ip", "ip:192.0.2.7")
	enforcedKey := limitKey("rl:", "login", "per-ip", "ip:192.0.2.7")
	got, want := serverGet(t, f.srv, shadowKey), serverGet(t, f.srv, enforcedKey)
	if got != want || got != "3" {
		t.Fatalf("shadow count %q, enforced count %q (key %s): a shadow policy must count as enforced", got, want, shadowKey)
	}
	series := metricstest.Counters(t, f.m.Registry)
	if n := series[`extauthz_would_deny_total{policy="login-dry",reason="over_limit"}`]; n != 3 {
		t.Fatalf("would_deny over_limit = %v, want 3\n%s", n, metricstest.Dump(series))
	}
	if n := series[`extauthz_authz_decisions_total{policy="login",reason="over_limit",result="deny"}`]; n != 3 {
		t.Fatalf("enforced over_limit = %v, want 3\n%s", n, metricstest.Dump(series))
	}
	if n := series[`extauthz_policy_overlimit_cache_hits_total{}`]; n < 2 {
		t.Fatalf("over-limit cache hits = %v: both policies should have been answered locally after their first denial\n%s", n, metricstest.Dump(series))
	}
	assertNoSecret(t, f, series)
}

// failingLimiter fails every call as Redis does when it is unreachable.
type failingLimiter struct{}

func (failingLimiter) Allow(context.Context, []ratelimit.Request) (time.Time, []ratelimit.Decision, error) {
	return time.Time{}, nil, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// A Redis failure never blocks a shadow policy: what would have been an error is let through
// as failure-open lets it through, marked with what was skipped, and counted backend_error.
func TestShadowRedisFailures(t *testing.T) {
	t.Run("limits fail under failure.limits closed", func(t *testing.T) {
		f := newShadowFixture(t, failingLimiter{})
		d := f.e.Decide(context.Background(), req("GET", "/closed/x", "cookie", f.alice, "x-user-role", "forged"))
		if !d.Allow || d.Err != nil || d.WouldDeny != "backend_error" || d.Reason != "shadow" {
			t.Fatalf("%+v", d)
		}
		// The identity was resolved before the limits failed: it is passed on, marked.
		if v, _ := header(d.SetHeaders, "x-user-id"); v != "alice" {
			t.Fatalf("x-user-id = %q (set %v)", v, d.SetHeaders)
		}
		if v, _ := header(d.SetHeaders, DegradedHeader); v != "limits" {
			t.Fatalf("degraded = %q", v)
		}
		if v, _ := header(d.SetHeaders, "x-user-role"); v != "admin" {
			t.Fatalf("x-user-role = %q, want the session's, not the client's", v)
		}
		series := metricstest.Counters(t, f.m.Registry)
		if n := series[`extauthz_would_deny_total{policy="closed-dry",reason="backend_error"}`]; n != 1 {
			t.Fatalf("would_deny backend_error = %v\n%s", n, metricstest.Dump(series))
		}
		line := f.logs.FilterMessage("decision").All()
		if len(line) != 1 || line[0].ContextMap()["backend"] != "unavailable" {
			t.Fatalf("decision log %v", line)
		}
	})
	t.Run("limits on local counts under failure.limits open", func(t *testing.T) {
		// The Guard decides on this replica's counts: the second request is over.
		f := newShadowFixture(t, ratelimit.NewGuard(failingLimiter{}, ratelimit.GuardOptions{Size: 100}))
		ctx := context.Background()
		d := f.e.Decide(ctx, req("GET", "/open/x", "cookie", f.alice))
		if !d.Allow || d.Reason != "degraded" || d.WouldDeny != "" {
			t.Fatalf("first: %+v", d)
		}
		d = f.e.Decide(ctx, req("GET", "/open/x", "cookie", f.alice))
		if !d.Allow || d.WouldDeny != "over_limit" || len(d.ResponseHeaders) != 0 {
			t.Fatalf("second: %+v", d)
		}
		if v, _ := header(d.SetHeaders, DegradedHeader); v != "limits" {
			t.Fatalf("degraded = %q", v)
		}
		if v, _ := header(d.SetHeaders, "x-user-id"); v != "alice" {
			t.Fatalf("x-user-id = %q", v)
		}
	})
	t.Run("sessions fail under failure.auth closed", func(t *testing.T) {
		f := newShadowFixture(t, nil)
		f.srv.Stop()
		d := f.e.Decide(context.Background(), req("GET", "/closed/x", "cookie", f.alice, "x-user-id", "root"))
		if !d.Allow || d.Err != nil || d.WouldDeny != "backend_error" || d.Kind != KindNone {
			t.Fatalf("%+v", d)
		}
		// Nobody was identified: anonymous, every identity header removed, marked auth.
		if len(d.SetHeaders) != 1 || d.SetHeaders[0] != (ratelimit.Header{Name: DegradedHeader, Value: "auth"}) {
			t.Fatalf("set %v", d.SetHeaders)
		}
		if !contains(d.RemoveHeaders, "x-user-id") || !contains(d.RemoveHeaders, "x-user-role") {
			t.Fatalf("removed %v", d.RemoveHeaders)
		}
		assertNoSecret(t, f, metricstest.Counters(t, f.m.Registry))
	})
}

// Envoy's Check and the HTTP endpoints answer a shadowed denial as an allow, with the identity
// headers, the would-deny reason for the proxy's access log, and no RateLimit headers.
func TestShadowOverTransports(t *testing.T) {
	f := newShadowFixture(t, nil)
	ctx := context.Background()
	c := checkClient(t, f.e)

	resp, err := c.Check(ctx, checkRequest("GET", "/admin/panel", map[string]string{"cookie": f.bob, "x-user-role": "admin"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != int32(code.Code_OK) || ok == nil {
		t.Fatalf("shadowed forbidden_role over gRPC: %v", resp)
	}
	if len(ok.Headers) != 1 || ok.Headers[0].Header.Key != "x-user-id" || ok.Headers[0].Header.Value != "bob" {
		t.Fatalf("headers %v", ok.Headers)
	}
	if !slices.Contains(ok.HeadersToRemove, "x-user-role") {
		t.Fatalf("the client's x-user-role is not removed: %v", ok.HeadersToRemove)
	}
	md := resp.GetDynamicMetadata().GetFields()
	if md[MetaWouldDeny].GetStringValue() != "forbidden_role" || md[MetaPrincipal].GetStringValue() != "bob" {
		t.Fatalf("metadata %v", md)
	}
	for i := range 4 {
		resp, err = c.Check(ctx, checkRequest("POST", "/login", nil, nil))
		if err != nil || resp.GetOkResponse() == nil || len(resp.GetOkResponse().ResponseHeadersToAdd) != 0 {
			t.Fatalf("login %d over gRPC: %v %v", i+1, resp, err)
		}
	}
	if got := resp.GetDynamicMetadata().GetFields()[MetaWouldDeny].GetStringValue(); got != "over_limit" {
		t.Fatalf("4th login metadata would_deny = %q", got)
	}

	srv := httptest.NewServer(NewHTTPHandler(f.e))
	t.Cleanup(srv.Close)
	do := func(path string, h map[string]string) *http.Response {
		t.Helper()
		r, _ := http.NewRequest("GET", srv.URL+path, nil)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, mode := range []struct{ path, uriHeader string }{{"/nginx", "X-Original-Uri"}, {"/forward", "X-Forwarded-Uri"}} {
		r := do(mode.path, map[string]string{mode.uriHeader: "/admin/x", "X-User-Id": "root"})
		if r.StatusCode != 200 || r.Header.Get(StatusHeader) != "200" || r.Header.Get(WouldDenyHeader) != "unauthenticated" || r.Header.Get("X-User-Id") != "" {
			t.Fatalf("%s: %d %v", mode.path, r.StatusCode, r.Header)
		}
		r = do(mode.path, map[string]string{mode.uriHeader: "/api/x", "X-Api-Key": f.scopelessKey})
		if r.StatusCode != 200 || r.Header.Get(WouldDenyHeader) != "forbidden_scope" || r.Header.Get("X-User-Id") != "team-b" ||
			r.Header.Get(KeyHeaderHeader) != "x-api-key" {
			t.Fatalf("%s with a key: %d %v", mode.path, r.StatusCode, r.Header)
		}
	}
	r := do("/envoy/admin/x", map[string]string{"X-User-Id": "root"})
	if r.StatusCode != 200 || !strings.Contains(r.Header.Get("X-Envoy-Auth-Headers-To-Remove"), "x-user-id") || r.Header.Get(WouldDenyHeader) != "unauthenticated" {
		t.Fatalf("/envoy: %d %v", r.StatusCode, r.Header)
	}
	for range 3 {
		r = do("/forward", map[string]string{"X-Forwarded-Uri": "/login", "X-Forwarded-Method": "POST"})
	}
	if r.StatusCode != 200 || r.Header.Get("RateLimit") != "" || r.Header.Get("Retry-After") != "" || r.Header.Get(WouldDenyHeader) != "over_limit" {
		t.Fatalf("/forward over the limit: %d %v", r.StatusCode, r.Header)
	}
	assertNoSecret(t, f, metricstest.Counters(t, f.m.Registry))
}
