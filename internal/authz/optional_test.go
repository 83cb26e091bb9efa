package authz

import (
	"context"
	"net/url"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/sessions"
)

const optionalConfig = `
sessions:
  secrets: [s3cret]
  headers: {x-user-id: userId}
  roles: roles
  scopes: perms.scopes
apikeys:
  identity_headers: {x-user-id: owner, x-key-id: id}
policies:
  - name: feed
    match: {path_prefix: /feed}
    auth: optional
    limits: [{name: per-caller, by: principal, requests: 2, window: 1m}]
  - name: reports
    match: {path_prefix: /reports}
    auth: optional
    scopes: [reports]
  - name: staff
    match: {path_prefix: /staff}
    auth: optional
    roles: [staff]
  - name: plain
    match: {path_prefix: /plain}
    auth: optional
  - name: soft
    match: {path_prefix: /soft}
    auth: optional
    failure: {auth: open}
  - name: soft-reports
    match: {path_prefix: /soft-reports}
    auth: optional
    scopes: [reports]
    failure: {auth: open}
  - name: api
    match: {path_prefix: /api}
    auth: any
    scopes: [reports]
`

// realEngine builds an Engine on yaml as the server does (cmd/extauthz/authz.go), over rc: the
// real session store, key store and limiter.
func realEngine(t *testing.T, rc *redisconn.Client, yaml string) (*Engine, *apikeys.Store) {
	t.Helper()
	return wiredEngine(t, rc, yaml, Options{Limiter: ratelimit.NewLimiter(rc), Timeout: 5 * time.Second, Headers: ratelimit.FormatDraft7})
}

// wiredEngine builds an Engine on yaml as cmd/extauthz/authz.go wires one over rc: the
// config's session store and key store, and base for the rest (limiter, timeout, headers,
// logger, metrics).
func wiredEngine(t *testing.T, rc *redisconn.Client, yaml string, base Options) (*Engine, *apikeys.Store) {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ss, err := sessions.New(rc, sessions.Options{
		CookieName: cfg.Sessions.Cookie, Prefix: cfg.Sessions.Prefix, Secrets: cfg.Sessions.Secrets,
		Subject: cfg.Sessions.Subject, Headers: cfg.Sessions.Headers, Roles: cfg.Sessions.Roles, Scopes: cfg.Sessions.Scopes,
	})
	if err != nil {
		t.Fatal(err)
	}
	ks, err := apikeys.New(rc, apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	base.Sessions, base.Keys = ss, ks
	e, err := newEngine(t, cfg, base)
	if err != nil {
		t.Fatal(err)
	}
	return e, ks
}

// issueKeys creates, on ks, a key for team-a with scope, a key for team-b without scopes, and a
// key for team-c with scope that is then revoked.
func issueKeys(t *testing.T, ks *apikeys.Store, scope string) (key, keyID, plain, revoked string) {
	t.Helper()
	ctx := t.Context()
	key, rec, err := ks.Create(ctx, apikeys.CreateParams{Owner: "team-a", Scopes: []string{scope}})
	if err != nil {
		t.Fatal(err)
	}
	if plain, _, err = ks.Create(ctx, apikeys.CreateParams{Owner: "team-b"}); err != nil {
		t.Fatal(err)
	}
	revoked, gone, err := ks.Create(ctx, apikeys.CreateParams{Owner: "team-c", Scopes: []string{scope}})
	if err != nil {
		t.Fatal(err)
	}
	if err := ks.Revoke(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	return key, rec.ID, plain, revoked
}

// sessionCookie is the Cookie header a browser sends for sid, signed by express-session.
func sessionCookie(sid, secret string) string {
	return "theme=dark; connect.sid=" + url.QueryEscape(sessions.Sign(sid, secret))
}

// optionalFixture seeds connect-redis sessions and API keys on a real redis-server.
type optionalFixture struct {
	e                                         *Engine
	alice, bob, noSubject, forged             string // cookie headers
	unknownSid                                string
	key, keyID, plainKey, revoked, unknownKey string
}

func newOptionalFixture(t *testing.T) *optionalFixture {
	t.Helper()
	srv := redistest.Start(t)
	rc := redisClient(t, srv)
	e, ks := realEngine(t, rc, optionalConfig)
	serverDo(t, srv, "SET", "sess:alice", `{"cookie":{"originalMaxAge":null},"userId":"alice","roles":["staff"],"perms":{"scopes":["reports","audit"]}}`)
	serverDo(t, srv, "SET", "sess:bob", `{"cookie":{"originalMaxAge":null},"userId":"bob"}`)
	serverDo(t, srv, "SET", "sess:guest", `{"cookie":{"originalMaxAge":null}}`)
	f := &optionalFixture{
		e:          e,
		alice:      sessionCookie("alice", "s3cret"),
		bob:        sessionCookie("bob", "s3cret"),
		noSubject:  sessionCookie("guest", "s3cret"),
		forged:     sessionCookie("alice", "not-the-secret"),
		unknownSid: sessionCookie("nobody", "s3cret"),
	}
	f.key, f.keyID, f.plainKey, f.revoked = issueKeys(t, ks, "reports")
	var err error
	if f.unknownKey, err = ks.Generate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// anonymous checks an allowed anonymous decision: no identity header set, every configured one
// removed (a client's own copies included), and the key header stripped when one came in.
func anonymous(t *testing.T, d Decision, keyHeader string) {
	t.Helper()
	if !d.Allow || d.Status != 200 || d.Kind != KindNone || d.Principal != "" {
		t.Fatalf("want an allowed anonymous decision, got %+v", d)
	}
	for _, h := range []string{"x-user-id", "x-key-id"} {
		if _, set := header(d.SetHeaders, h); set || !slices.Contains(d.RemoveHeaders, h) {
			t.Errorf("%s: set %v, remove %v; want it removed", h, d.SetHeaders, d.RemoveHeaders)
		}
	}
	if keyHeader != "" && (!slices.Contains(d.RemoveHeaders, keyHeader) || d.KeyHeader != keyHeader) {
		t.Errorf("the key header %s reaches the upstream: remove %v, KeyHeader %q", keyHeader, d.RemoveHeaders, d.KeyHeader)
	}
}

// auth: optional on real Redis: a valid session or key sets the identity headers, anything
// else (nothing, a forged or unknown cookie, a session without a subject, an unknown or revoked
// key) is anonymous and allowed, with every identity header removed.
func TestOptionalAuthIdentifiesOrAnonymous(t *testing.T) {
	f := newOptionalFixture(t)
	ctx := context.Background()
	decide := func(headers ...string) Decision {
		return f.e.Decide(ctx, req("GET", "/plain/x", append(headers, "x-user-id", "root", "x-key-id", "forged")...))
	}

	d := decide("cookie", f.alice)
	if !d.Allow || d.Kind != KindSession || d.Principal != "alice" {
		t.Fatalf("alice's session: %+v", d)
	}
	if v, _ := header(d.SetHeaders, "x-user-id"); v != "alice" || slices.Contains(d.RemoveHeaders, "x-user-id") {
		t.Fatalf("alice's session: x-user-id %q, remove %v", v, d.RemoveHeaders)
	}
	if !slices.Contains(d.RemoveHeaders, "x-key-id") {
		t.Fatalf("a session decision keeps the client's x-key-id: %v", d.RemoveHeaders)
	}

	d = decide("x-api-key", f.key)
	if !d.Allow || d.Kind != KindAPIKey || d.Principal != f.keyID {
		t.Fatalf("a valid key: %+v", d)
	}
	if v, _ := header(d.SetHeaders, "x-user-id"); v != "team-a" {
		t.Fatalf("a valid key: x-user-id %q", v)
	}
	if v, _ := header(d.SetHeaders, "x-key-id"); v != f.keyID {
		t.Fatalf("a valid key: x-key-id %q", v)
	}
	if !slices.Contains(d.RemoveHeaders, "x-api-key") {
		t.Fatalf("the key reaches the upstream: %v", d.RemoveHeaders)
	}

	for name, headers := range map[string][]string{
		"no credentials":       nil,
		"forged cookie":        {"cookie", f.forged},
		"unknown session":      {"cookie", f.unknownSid},
		"session, no subject":  {"cookie", f.noSubject},
		"other cookies only":   {"cookie", "theme=dark"},
		"foreign bearer token": {"authorization", "Bearer eyJhbGciOi.jwt.sig"},
	} {
		t.Run(name, func(t *testing.T) { anonymous(t, decide(headers...), "") })
	}
	t.Run("unknown key", func(t *testing.T) { anonymous(t, decide("x-api-key", f.unknownKey), "x-api-key") })
	t.Run("revoked key", func(t *testing.T) { anonymous(t, decide("x-api-key", f.revoked), "x-api-key") })
	t.Run("revoked bearer key", func(t *testing.T) {
		anonymous(t, decide("authorization", "Bearer "+f.revoked), "authorization")
	})
	// As under auth: any, a well-formed key decides alone: a revoked key next to a valid
	// session is anonymous, not the session's user.
	t.Run("revoked key with a session", func(t *testing.T) {
		anonymous(t, decide("x-api-key", f.revoked, "cookie", f.alice), "x-api-key")
	})
	t.Run("foreign bearer with a session", func(t *testing.T) {
		d := decide("authorization", "Bearer eyJhbGciOi.jwt.sig", "cookie", f.alice)
		if !d.Allow || d.Kind != KindSession || d.Principal != "alice" || slices.Contains(d.RemoveHeaders, "authorization") {
			t.Fatalf("%+v", d)
		}
	})
}

// Requirements under auth: optional: an anonymous caller holds no scope and no role, so a policy
// that requires them answers 403; sessions hold the scopes at sessions.scopes, and those apply
// under auth: any too.
func TestOptionalAuthScopesAndRoles(t *testing.T) {
	f := newOptionalFixture(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		path       string
		headers    []string
		wantStatus int
		wantReason string
	}{
		{"anonymous, scoped policy", "/reports/q1", nil, 403, "forbidden_scope"},
		{"revoked key, scoped policy", "/reports/q1", []string{"x-api-key", f.revoked}, 403, "forbidden_scope"},
		{"session without scopes", "/reports/q1", []string{"cookie", f.bob}, 403, "forbidden_scope"},
		{"session with the scope", "/reports/q1", []string{"cookie", f.alice}, 200, "ok"},
		{"key with the scope", "/reports/q1", []string{"x-api-key", f.key}, 200, "ok"},
		{"key without the scope", "/reports/q1", []string{"x-api-key", f.plainKey}, 403, "forbidden_scope"},
		{"anonymous, role policy", "/staff/x", nil, 403, "forbidden_role"},
		{"session without the role", "/staff/x", []string{"cookie", f.bob}, 403, "forbidden_role"},
		{"session with the role", "/staff/x", []string{"cookie", f.alice}, 200, "ok"},
		{"auth any: session without scopes", "/api/x", []string{"cookie", f.bob}, 403, "forbidden_scope"},
		{"auth any: session with the scope", "/api/x", []string{"cookie", f.alice}, 200, "ok"},
		{"auth any: no credentials", "/api/x", nil, 401, "unauthenticated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.e.Decide(ctx, req("GET", tt.path, append(tt.headers, "x-user-id", "root")...))
			if d.Status != tt.wantStatus || d.Reason != tt.wantReason {
				t.Fatalf("status %d reason %q, want %d %q (%+v)", d.Status, d.Reason, tt.wantStatus, tt.wantReason, d)
			}
			if !d.Allow && !slices.Contains(d.RemoveHeaders, "x-user-id") {
				t.Fatalf("a denial keeps the client's x-user-id: %v", d.RemoveHeaders)
			}
		})
	}
}

// Without sessions.scopes, sessions carry no scopes and pass a policy's scopes requirement, as
// before sessions had scopes; API keys are judged as always.
func TestSessionScopesUnsetKeepsSessionsExempt(t *testing.T) {
	srv := redistest.Start(t)
	rc := redisClient(t, srv)
	e, ks := realEngine(t, rc, `
sessions: {secrets: [s3cret]}
policies:
  - {name: api, auth: any, scopes: [reports]}
`)
	serverDo(t, srv, "SET", "sess:bob", `{"cookie":{},"userId":"bob","perms":{"scopes":[]}}`)
	key, _, err := ks.Create(t.Context(), apikeys.CreateParams{Owner: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), req("GET", "/x", "cookie", sessionCookie("bob", "s3cret"))); !d.Allow || d.Principal != "bob" {
		t.Fatalf("session under a scoped policy without sessions.scopes: %+v", d)
	}
	if d := e.Decide(context.Background(), req("GET", "/x", "x-api-key", key)); d.Status != 403 || d.Reason != "forbidden_scope" {
		t.Fatalf("key without the scope: %+v", d)
	}
}

// by: principal counts a signed-in caller by its principal and an anonymous one by its client
// address, under auth: optional as under auth: none: anonymous callers behind one address share
// a budget, and signing in does not spend it.
func TestOptionalAuthPrincipalLimitFallsBackToAddress(t *testing.T) {
	f := newOptionalFixture(t)
	ctx := context.Background()
	from := func(ip string, headers ...string) Decision {
		r := req("GET", "/feed", headers...)
		r.RemoteIP = ip
		return f.e.Decide(ctx, r)
	}
	for i := range 2 {
		// A bad cookie is anonymous, and counts on the address like no cookie.
		cookie := []string{"cookie", f.forged}
		if i == 0 {
			cookie = nil
		}
		if d := from("192.0.2.7", cookie...); !d.Allow || d.Kind != KindNone {
			t.Fatalf("anonymous call %d: %+v", i+1, d)
		}
	}
	if d := from("192.0.2.7", "x-api-key", f.revoked); d.Status != 429 || d.Reason != "over_limit" {
		t.Fatalf("third anonymous call from one address: %+v, want 429", d)
	}
	for i := range 2 {
		if d := from("192.0.2.7", "cookie", f.alice); !d.Allow || d.Principal != "alice" {
			t.Fatalf("alice's call %d from the exhausted address: %+v", i+1, d)
		}
	}
	if d := from("192.0.2.7", "cookie", f.alice); d.Status != 429 {
		t.Fatalf("alice's third call: %+v, want 429 (her own budget)", d)
	}
	if d := from("198.51.100.1"); !d.Allow {
		t.Fatalf("an anonymous caller from another address: %+v", d)
	}
}

// failure.auth under auth: optional, with Redis down: closed answers an error (the proxy's own
// failure mode decides) whenever a credential had to be resolved; open lets the request through
// as anonymous, marked degraded, with the same requirements as any anonymous caller. A request
// with no credential needs no Redis and is decided as usual.
func TestOptionalAuthRedisDownFollowsFailureAuth(t *testing.T) {
	e, ks := realEngine(t, downClient(t), optionalConfig)
	key, err := ks.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cookie := sessionCookie("alice", "s3cret")
	ctx := context.Background()

	for name, headers := range map[string][]string{"session": {"cookie", cookie}, "key": {"x-api-key", key}} {
		t.Run("closed/"+name, func(t *testing.T) {
			d := e.Decide(ctx, req("GET", "/plain/x", headers...))
			if d.Err == nil || d.Allow || d.Reason != "backend_error" {
				t.Fatalf("want an error decision, got %+v", d)
			}
		})
		t.Run("open/"+name, func(t *testing.T) {
			d := e.Decide(ctx, req("GET", "/soft/x", append(headers, "x-user-id", "root")...))
			if !d.Allow || d.Reason != "degraded" || d.Kind != KindNone {
				t.Fatalf("want a degraded anonymous decision, got %+v", d)
			}
			if v, _ := header(d.SetHeaders, DegradedHeader); v != "auth" {
				t.Fatalf("%s = %q", DegradedHeader, v)
			}
			if !slices.Contains(d.RemoveHeaders, "x-user-id") {
				t.Fatalf("the client's x-user-id reaches the upstream: %v", d.RemoveHeaders)
			}
			if name == "key" && (!slices.Contains(d.RemoveHeaders, "x-api-key") || d.KeyHeader != "x-api-key") {
				t.Fatalf("the key reaches the upstream on a degraded decision: remove %v, KeyHeader %q", d.RemoveHeaders, d.KeyHeader)
			}
		})
		t.Run("open, scoped/"+name, func(t *testing.T) {
			if d := e.Decide(ctx, req("GET", "/soft-reports/x", headers...)); d.Status != 403 || d.Reason != "forbidden_scope" {
				t.Fatalf("want 403 forbidden_scope for the degraded anonymous caller, got %+v", d)
			}
		})
	}
	d := e.Decide(ctx, req("GET", "/plain/x", "x-user-id", "root"))
	if !d.Allow || d.Reason != "ok" || d.Err != nil {
		t.Fatalf("no credentials with Redis down: %+v", d)
	}
}

// Over gRPC, what Envoy applies to the upstream request under auth: optional: an anonymous
// caller's own identity headers are in headers_to_remove and nothing is set, with the auth
// metadata "none"; a signed-in caller's are set, replacing the client's.
func TestOptionalAuthOverGRPC(t *testing.T) {
	f := newOptionalFixture(t)
	c := checkClient(t, f.e)
	ctx := context.Background()

	resp, err := c.Check(ctx, checkRequest("GET", "/plain/x", map[string]string{"cookie": f.forged, "x-user-id": "root", "x-api-key": f.revoked}, nil))
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	if resp.GetStatus().GetCode() != 0 || ok == nil {
		t.Fatalf("anonymous caller: %v", resp)
	}
	if len(ok.GetHeaders()) != 0 {
		t.Fatalf("anonymous caller: headers set upstream: %v", ok.GetHeaders())
	}
	for _, h := range []string{"x-user-id", "x-key-id", "x-api-key"} {
		if !slices.Contains(ok.GetHeadersToRemove(), h) {
			t.Errorf("anonymous caller: %s not in headers_to_remove %v", h, ok.GetHeadersToRemove())
		}
	}
	if got := resp.GetDynamicMetadata().GetFields()[MetaAuth].GetStringValue(); got != KindNone {
		t.Errorf("anonymous caller: auth metadata %q, want %q", got, KindNone)
	}
	if _, ok := resp.GetDynamicMetadata().GetFields()[MetaPrincipal]; ok {
		t.Errorf("anonymous caller has a principal: %v", resp.GetDynamicMetadata())
	}

	resp, err = c.Check(ctx, checkRequest("GET", "/plain/x", map[string]string{"cookie": f.alice, "x-user-id": "root"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	ok = resp.GetOkResponse()
	if len(ok.GetHeaders()) != 1 || ok.GetHeaders()[0].GetHeader().GetKey() != "x-user-id" || ok.GetHeaders()[0].GetHeader().GetValue() != "alice" {
		t.Fatalf("signed-in caller: headers %v", ok.GetHeaders())
	}
	if slices.Contains(ok.GetHeadersToRemove(), "x-user-id") {
		t.Fatalf("signed-in caller: x-user-id set and removed: %v", ok.GetHeadersToRemove())
	}
}

// A session store built without Options.Scopes under a config with sessions.scopes is a wiring
// bug that would deny every session on a scoped policy: the engine says so when it loads.
func TestSessionScopesWiringChecked(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte("sessions: {secrets: [s], scopes: perms}\npolicies: [{name: a, auth: optional}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	rc := downClient(t)
	for _, withScopes := range []bool{false, true} {
		opts := sessions.Options{Secrets: cfg.Sessions.Secrets, Subject: cfg.Sessions.Subject}
		if withScopes {
			opts.Scopes = cfg.Sessions.Scopes
		}
		ss, err := sessions.New(rc, opts)
		if err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zapcore.ErrorLevel)
		if _, err := newEngine(t, cfg, Options{Sessions: ss, Limiter: nopLimiter{}, Logger: zap.New(core)}); err != nil {
			t.Fatal(err)
		}
		if got := logs.FilterMessageSnippet("sessions.scopes").Len(); (got == 1) == withScopes {
			t.Errorf("store reads scopes %v: %d wiring errors logged", withScopes, got)
		}
	}
}
