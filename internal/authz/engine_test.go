package authz

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/redisurl"
	"github.com/extauthz/extauthz/internal/sessions"
)

// fakeSessions resolves cookie "sid=<name>" from a table; "sid=down" fails like Redis.
type fakeSessions struct{ table map[string]*sessions.Session }

func (f fakeSessions) CookieName() string { return "sid" }
func (f fakeSessions) Resolve(_ context.Context, cookie string) (*sessions.Session, error) {
	v, _ := strings.CutPrefix(cookie, "sid=")
	if v == "down" {
		return nil, errors.New("dial tcp: connection refused")
	}
	if s, ok := f.table[v]; ok {
		return s, nil
	}
	return nil, sessions.ErrNoSession
}

// fakeKeys resolves keys from a table; "down" fails like Redis.
type fakeKeys struct{ table map[string]apikeys.Record }

func (f fakeKeys) Lookup(_ context.Context, key string) (apikeys.Record, error) {
	if key == "down" {
		return apikeys.Record{}, errors.New("i/o timeout")
	}
	if r, ok := f.table[key]; ok {
		if r.Disabled {
			return r, apikeys.ErrRevoked
		}
		return r, nil
	}
	return apikeys.Record{}, apikeys.ErrNotFound
}

const engineConfig = `
sessions:
  secrets: [s]
  headers: {x-user-id: userId, x-user-role: role}
policies:
  - name: health
    match: {path_prefix: /healthz}
    auth: none
  - name: admin
    match: {path_prefix: /admin/}
    auth: session
    roles: [admin]
  - name: login
    match: {path_prefix: /login, methods: [POST]}
    auth: none
    limits: [{by: ip, requests: 2, window: 1m}]
  - name: api
    match: {path_prefix: /api/}
    auth: any
    scopes: [read]
    limits: [{name: per-user, requests: 3, window: 1m}]
    tiers: {pro: [{name: pro, by: apikey, requests: 5, window: 1m, algorithm: gcra}]}
  - name: open-fail
    match: {path_prefix: /soft/}
    auth: session
    limits: [{requests: 100, window: 1m}]
    failure: {auth: open, limits: open}
  - name: maybe
    match: {path_prefix: /maybe/}
    auth: optional
`

// redisClient returns the sidecar's client for srv once it has connected, with the sidecar's
// own per-call deadline (redis.timeout's default), which these tests decide under.
func redisClient(t *testing.T, srv *redistest.Server) *redisconn.Client {
	t.Helper()
	return redisconntest.Ready(t, redisconn.Options{URL: srv.URL(), Timeout: redisurl.DefaultTimeout})
}

// downClient returns a client of a Redis that is not there: every call fails.
func downClient(t *testing.T) *redisconn.Client {
	t.Helper()
	rc, err := redisconn.New(redisconn.Options{URL: "redis://127.0.0.1:1/0"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// serverDo runs a command on srv over a connection of its own, around the client under test.
func serverDo(t *testing.T, srv *redistest.Server, args ...string) string {
	t.Helper()
	line, err := srv.Do(t.Context(), args...)
	if err != nil || strings.HasPrefix(line, "-") {
		t.Fatalf("%s: %q, %v", args[0], line, err)
	}
	return line
}

func newTestEngine(t *testing.T, rdb ratelimit.Scripter) *Engine {
	t.Helper()
	cfg, err := config.Parse("test.yaml", []byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	var lim Limiter = ratelimit.NewLimiter(rdb)
	e, err := newEngine(t, cfg, Options{
		Sessions: fakeSessions{table: map[string]*sessions.Session{
			"alice": {ID: "a", Subject: "alice", Roles: []string{"admin"}, Headers: []sessions.Header{{Name: "x-user-id", Value: "alice"}, {Name: "x-user-role", Value: "admin"}}},
			"bob":   {ID: "b", Subject: "bob", Headers: []sessions.Header{{Name: "x-user-id", Value: "bob"}}},
		}},
		Keys: fakeKeys{table: map[string]apikeys.Record{
			"k-basic": {ID: "k_basic", Owner: "o", Scopes: []string{"read"}},
			"k-pro":   {ID: "k_pro", Owner: "o", Tier: "pro", Scopes: []string{"read", "write"}},
			"k-none":  {ID: "k_none", Owner: "o"},
			"k-gone":  {ID: "k_gone", Owner: "o", Scopes: []string{"read"}, Disabled: true},
		}},
		Limiter: lim,
		Timeout: time.Second,
		Headers: ratelimit.FormatDraft7,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func req(method, path string, headers ...string) *Request {
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return &Request{Method: method, Host: "example.com", Path: path, Headers: h, RemoteIP: "192.0.2.7"}
}

func header(hs []ratelimit.Header, name string) (string, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestDecisions(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	e := newTestEngine(t, rdb)
	ctx := context.Background()

	tests := []struct {
		name       string
		req        *Request
		wantStatus int
		wantReason string
		check      func(t *testing.T, d Decision)
	}{
		{"open route strips smuggled identity", req("GET", "/healthz", "x-user-id", "root"), 200, "ok", func(t *testing.T, d Decision) {
			if !contains(d.RemoveHeaders, "x-user-id") || !contains(d.RemoveHeaders, "x-user-role") {
				t.Fatalf("identity headers not removed: %v", d.RemoveHeaders)
			}
		}},
		{"no policy", req("GET", "/nowhere"), 403, "no_policy", nil},
		{"admin without cookie", req("GET", "/admin/x"), 401, "unauthenticated", nil},
		{"admin with unknown session", req("GET", "/admin/x", "cookie", "sid=mallory"), 401, "unauthenticated", nil},
		{"admin without the role", req("GET", "/admin/x", "cookie", "sid=bob"), 403, "forbidden_role", nil},
		{"admin with the role", req("GET", "/admin/x", "cookie", "sid=alice"), 200, "ok", func(t *testing.T, d Decision) {
			if v, _ := header(d.SetHeaders, "x-user-id"); v != "alice" {
				t.Fatalf("x-user-id = %q", v)
			}
			if contains(d.RemoveHeaders, "x-user-id") {
				t.Fatalf("a header that is set is also removed: %v", d.RemoveHeaders)
			}
			if d.Kind != KindSession || d.Principal != "alice" || d.Policy != "admin" {
				t.Fatalf("identity = %+v", d)
			}
		}},
		{"api by key without scope", req("GET", "/api/x", "x-api-key", "k-none"), 403, "forbidden_scope", nil},
		{"api by revoked key", req("GET", "/api/x", "x-api-key", "k-gone"), 401, "unauthenticated", nil},
		{"api by bearer key", req("GET", "/api/x", "authorization", "Bearer k-basic"), 200, "ok", func(t *testing.T, d Decision) {
			if !contains(d.RemoveHeaders, "authorization") {
				t.Fatalf("the key's header is not stripped: %v", d.RemoveHeaders)
			}
			if v, _ := header(d.ResponseHeaders, "RateLimit"); v != "limit=3, remaining=2, reset=60" && !strings.HasPrefix(v, "limit=3, remaining=2, reset=") {
				t.Fatalf("RateLimit = %q", v)
			}
		}},
		{"api by pro key uses its tier", req("GET", "/api/x", "x-api-key", "k-pro"), 200, "ok", func(t *testing.T, d Decision) {
			if v, _ := header(d.ResponseHeaders, "RateLimit-Policy"); v != "5;w=60" {
				t.Fatalf("tier policy header = %q", v)
			}
			if d.Tier != "pro" || d.Principal != "k_pro" {
				t.Fatalf("identity = %+v", d)
			}
		}},
		{"session down fails closed", req("GET", "/admin/x", "cookie", "sid=down"), 0, "backend_error", func(t *testing.T, d Decision) {
			if d.Err == nil || d.Allow {
				t.Fatalf("want an error decision, got %+v", d)
			}
		}},
		{"session down fails open where configured", req("GET", "/soft/x", "cookie", "sid=down"), 200, "degraded", func(t *testing.T, d Decision) {
			if v, _ := header(d.SetHeaders, DegradedHeader); v != "auth" {
				t.Fatalf("degraded header = %q", v)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Decide(ctx, tt.req)
			if d.Status != tt.wantStatus || d.Reason != tt.wantReason {
				t.Fatalf("status %d reason %q, want %d %q (err %v)", d.Status, d.Reason, tt.wantStatus, tt.wantReason, d.Err)
			}
			if tt.check != nil {
				tt.check(t, d)
			}
		})
	}
}

func TestLimitsExhaustWith429(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	e := newTestEngine(t, rdb)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if d := e.Decide(ctx, req("POST", "/login")); !d.Allow {
			t.Fatalf("login %d denied: %+v", i+1, d)
		}
	}
	d := e.Decide(ctx, req("POST", "/login"))
	if d.Status != 429 || d.Reason != "over_limit" {
		t.Fatalf("3rd login: %d %s", d.Status, d.Reason)
	}
	ra, ok := header(d.ResponseHeaders, "Retry-After")
	if !ok || ra == "0" {
		t.Fatalf("Retry-After = %q", ra)
	}
	if v, _ := header(d.ResponseHeaders, "RateLimit"); !strings.HasPrefix(v, "limit=2, remaining=0, reset=") {
		t.Fatalf("RateLimit = %q", v)
	}
	// Another client address has its own counter.
	other := req("POST", "/login")
	other.RemoteIP = "192.0.2.8"
	if d := e.Decide(ctx, other); !d.Allow {
		t.Fatalf("another address denied: %+v", d)
	}
	// GET /login matches no policy (methods), so it is not limited but denied as unknown.
	if d := e.Decide(ctx, req("GET", "/login")); d.Reason != "no_policy" {
		t.Fatalf("GET /login: %+v", d)
	}
}

func TestLimiterDownFollowsFailurePolicy(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	e := newTestEngine(t, rdb)
	r.Stop()
	ctx := context.Background()
	// Default failure.limits is open: allowed, marked.
	d := e.Decide(ctx, req("POST", "/login"))
	if !d.Allow || d.Reason != "degraded" {
		t.Fatalf("limits open: %+v", d)
	}
	if v, _ := header(d.SetHeaders, DegradedHeader); v != "limits" {
		t.Fatalf("degraded header = %q", v)
	}
}

func TestPolicyFromContextExtensions(t *testing.T) {
	down := downClient(t)
	e := newTestEngine(t, down)
	r := req("GET", "/admin/x")
	r.Policy = "health"
	if d := e.Decide(context.Background(), r); !d.Allow || d.Policy != "health" {
		t.Fatalf("named policy not used: %+v", d)
	}
	// A name the proxy configuration gives that the sidecar does not know is a configuration
	// error: refused with 500, never matched by route (which could find a weaker policy).
	r.Policy = "no-such-policy"
	if d := e.Decide(context.Background(), r); d.Allow || d.Status != 500 || d.Reason != "unknown_policy" || d.Err != nil {
		t.Fatalf("unknown named policy: %+v", d)
	}
}

func TestLimitKeysCannotCollideOrMoveSlot(t *testing.T) {
	a := limitKey("rl:", "api", "per-user", "session:a:b")
	b := limitKey("rl:", "api:per-user", "session", "a:b")
	if a == b {
		t.Fatalf("keys collide: %q", a)
	}
	k := limitKey("rl:", "api", "l", "header:}{evil}")
	if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
		t.Fatalf("key %q has a broken hash tag", k)
	}
	long := limitKey("rl:", "api", "l", "header:"+strings.Repeat("x", 5000))
	if len(long) > 200 {
		t.Fatalf("long subject not hashed: %d bytes", len(long))
	}
}

// A limit with shared_prefix counts on rate-limit-redis's own key, so an Express app running
// express-rate-limit + rate-limit-redis and the sidecar share one counter during a migration.
func TestSharedPrefixCountsWithRateLimitRedis(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	cfg, err := config.Parse("t.yaml", []byte(`
policies:
  - name: legacy
    auth: none
    limits: [{by: ip, requests: 3, window: 1m, shared_prefix: "rl:"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{Limiter: ratelimit.NewLimiter(rdb), Timeout: time.Second, Headers: ratelimit.FormatDraft7})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The Express app has counted two hits for this client, as rate-limit-redis stores them.
	serverDo(t, r, "SET", "rl:192.0.2.7", "2", "EX", "60")
	d := e.Decide(ctx, req("GET", "/anything"))
	if !d.Allow {
		t.Fatalf("third hit denied: %+v", d)
	}
	if v, _ := header(d.ResponseHeaders, "RateLimit"); !strings.HasPrefix(v, "limit=3, remaining=0, reset=") {
		t.Fatalf("RateLimit = %q", v)
	}
	if d := e.Decide(ctx, req("GET", "/anything")); d.Status != 429 {
		t.Fatalf("fourth hit: %+v", d)
	}
	if n := serverDo(t, r, "GET", "rl:192.0.2.7"); n != "4" {
		t.Fatalf("shared counter = %q, want 4 (rate-limit-redis counts denied hits too)", n)
	}
}

func TestDecisionLogHasNoSecrets(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	cfg, err := config.Parse("t.yaml", []byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Sessions:        fakeSessions{table: map[string]*sessions.Session{"alice": {ID: "a", Subject: "alice"}}},
		Keys:            fakeKeys{},
		Limiter:         nopLimiter{},
		Logger:          zap.New(core),
		DecisionSample:  1,
		DecisionDenials: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.Decide(ctx, req("GET", "/admin/x", "cookie", "sid=secret-cookie-value"))
	e.Decide(ctx, req("GET", "/healthz"))
	entries := logs.FilterMessage("decision").All()
	if len(entries) != 2 {
		t.Fatalf("%d decision log lines, want 2 (a denial and a sampled allow)", len(entries))
	}
	deny := entries[0].ContextMap()
	if deny["verdict"] != "deny" || deny["policy"] != "admin" || deny["status"] != int64(401) {
		t.Fatalf("denial line = %v", deny)
	}
	for _, en := range entries {
		for k, v := range en.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, "secret-cookie-value") || strings.Contains(s, "192.0.2.7")) {
				t.Fatalf("decision log field %s leaks %q", k, s)
			}
		}
	}
}

// policyEngine builds an Engine, and returns it with its config, from a config whose decisions
// need no session, key or limit: for tests of policy matching.
func policyEngine(t *testing.T, yaml string) (*Engine, *config.Config) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{Sessions: fakeSessions{}, Keys: fakeKeys{}, Limiter: nopLimiter{}})
	if err != nil {
		t.Fatal(err)
	}
	return e, cfg
}

// newEngine compiles cfg's policy set, as the server does, and builds an Engine on it.
func newEngine(t testing.TB, cfg *config.Config, opts Options) (*Engine, error) {
	t.Helper()
	set, err := policy.Compile(cfg)
	if err != nil {
		return nil, err
	}
	return New(set, opts), nil
}

// Spellings of a protected path that a server behind the proxy resolves to the same handler
// meet the same policy, not a catch-all; spellings that components could read differently are
// refused before any policy is chosen; a prefix covers the bare path, as Express's non-strict
// routing serves it, and never a longer word.
func TestPathSpellingsCannotEscapeAPolicy(t *testing.T) {
	e, _ := policyEngine(t, `
sessions: {secrets: [s]}
policies:
  - {name: admin, match: {path_prefix: /admin/}, auth: session}
  - {name: exact, match: {path_prefix: /Exact/, case_sensitive: true}, auth: session}
  - {name: public, auth: none}
`)
	decide := func(target string) Decision {
		return e.DecideRaw(context.Background(), Raw{Method: "GET", Target: target, Host: "example.com", Peer: PeerAddr("192.0.2.7")})
	}
	for _, p := range []string{"/admin/x", "/ADMIN/x", "/Admin/x", "/%61dmin/x", "/admin", "/admin/", "/Admin?x=1", "/admin/x?y=/../z"} {
		if d := decide(p); d.Policy != "admin" || d.Status != 401 {
			t.Errorf("%s: policy %q status %d, want admin 401", p, d.Policy, d.Status)
		}
	}
	for _, p := range []string{"//admin/x", "/public/../admin/x", "/./admin/x", "/public/%2e%2e/admin", "/public#/../admin", "/admin%2Fx", "/public\\..\\admin", "/admin;x", "admin", "/a\x00"} {
		if d := decide(p); d.Status != 400 || d.Reason != "bad_request" || d.Allow {
			t.Errorf("%q: status %d reason %q, want a 400 refusal", p, d.Status, d.Reason)
		}
	}
	for _, p := range []string{"/administrator", "/admins/x", "/exact/x"} {
		if d := decide(p); d.Policy != "public" {
			t.Errorf("%s: policy %q, want public", p, d.Policy)
		}
	}
}

// A GET-only policy also takes HEAD, as Express's app.get does, so that HEAD cannot reach a later
// policy; other methods still fall through.
func TestGetPolicyTakesHead(t *testing.T) {
	e, cfg := policyEngine(t, `
sessions: {secrets: [s]}
policies:
  - {name: read, match: {path_prefix: /docs/, methods: [GET]}, auth: session}
  - {name: public, auth: none}
`)
	for method, want := range map[string]string{"GET": "read", "HEAD": "read", "POST": "public", "OPTIONS": "public"} {
		if d := e.Decide(context.Background(), req(method, "/docs/x")); d.Policy != want {
			t.Errorf("%s: policy %q, want %q", method, d.Policy, want)
		}
	}
	if got := cfg.Policies[0].Match.Methods; len(got) != 1 {
		t.Errorf("compiling changed the config's methods: %q", got)
	}
}

// validatingKeys is fakeKeys that can tell a well-formed key without I/O, as apikeys.Store can.
type validatingKeys struct{ fakeKeys }

func (validatingKeys) Valid(key string) bool { return strings.HasPrefix(key, "k-") }

// Under auth: any, an Authorization bearer token that is not one of our keys (an app's own JWT)
// does not hide the session.
func TestForeignBearerFallsBackToSession(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Sessions: fakeSessions{table: map[string]*sessions.Session{"bob": {ID: "b", Subject: "bob"}}},
		Keys:     validatingKeys{fakeKeys{table: map[string]apikeys.Record{"k-basic": {ID: "k_basic", Scopes: []string{"read"}}}}},
		Limiter:  nopLimiter{},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d := e.Decide(ctx, req("GET", "/api/x", "authorization", "Bearer eyJhbGciOi.jwt.sig", "cookie", "sid=bob"))
	if !d.Allow || d.Kind != KindSession || d.Principal != "bob" {
		t.Fatalf("foreign bearer + session: %+v", d)
	}
	// One of our keys still wins over the session.
	d = e.Decide(ctx, req("GET", "/api/x", "authorization", "Bearer k-basic", "cookie", "sid=bob"))
	if !d.Allow || d.Kind != KindAPIKey {
		t.Fatalf("our key + session: %+v", d)
	}
}

// apikeys.identity_headers sets headers from the key's record; a header shared with the session
// mapping carries whichever principal decided, and every configured identity header a decision
// does not set is removed, so a client cannot send its own.
func TestAPIKeyIdentityHeaders(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`
sessions: {secrets: [s], headers: {x-user-id: userId}}
apikeys:
  identity_headers: {x-user-id: owner, x-api-key-id: id, x-api-key-scopes: scopes, x-api-key-name: name}
policies:
  - {name: api, auth: any}
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Sessions: fakeSessions{table: map[string]*sessions.Session{"s1": {ID: "s1", Subject: "alice", Headers: []sessions.Header{{Name: "x-user-id", Value: "alice"}}}}},
		Keys: fakeKeys{table: map[string]apikeys.Record{
			"k-1":   {ID: "kid1", Owner: "team-a", Scopes: []string{"read", "write"}},
			"k-bad": {ID: "kid2", Owner: "evil\r\nx-admin: 1"},
		}},
		Limiter: nopLimiter{},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(context.Background(), req("GET", "/x", "x-api-key", "k-1", "x-api-key-name", "forged"))
	if !d.Allow {
		t.Fatalf("key denied: %+v", d)
	}
	for name, want := range map[string]string{"x-user-id": "team-a", "x-api-key-id": "kid1", "x-api-key-scopes": "read,write"} {
		if got, ok := header(d.SetHeaders, name); !ok || got != want {
			t.Errorf("%s = %q, %v; want %q", name, got, ok, want)
		}
	}
	if _, ok := header(d.SetHeaders, "x-api-key-name"); ok || !slices.Contains(d.RemoveHeaders, "x-api-key-name") {
		t.Errorf("an empty field must remove the header, not set it: set %v, remove %v", d.SetHeaders, d.RemoveHeaders)
	}

	d = e.Decide(context.Background(), req("GET", "/x", "x-api-key", "k-bad"))
	if got, ok := header(d.SetHeaders, "x-user-id"); ok {
		t.Errorf("a value with CR/LF reached a header: %q", got)
	}

	d = e.Decide(context.Background(), req("GET", "/x", "cookie", "sid=s1", "x-api-key-id", "forged"))
	if got, _ := header(d.SetHeaders, "x-user-id"); !d.Allow || got != "alice" {
		t.Fatalf("session decision: %+v", d)
	}
	for _, h := range []string{"x-api-key-id", "x-api-key-scopes", "x-api-key-name"} {
		if !slices.Contains(d.RemoveHeaders, h) {
			t.Errorf("session decision keeps a client's %s: remove %v", h, d.RemoveHeaders)
		}
	}
}
