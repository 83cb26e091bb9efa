package authz

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

func compileSet(t *testing.T, yaml string) *policy.Set {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestClientIP(t *testing.T) {
	xff := compileSet(t, "trusted_proxies: [10.0.0.0/8, 127.0.0.1, 'fd00::/8']\n")
	realIP := compileSet(t, "trusted_proxies: [127.0.0.1/32]\nclient_ip_header: x-real-ip\n")
	none := compileSet(t, "{}\n")
	for _, tt := range []struct {
		name    string
		set     *policy.Set
		peer    string
		headers map[string]string
		want    string
	}{
		{"untrusted peer ignores headers", none, "198.51.100.1", map[string]string{"x-forwarded-for": "1.2.3.4", "x-real-ip": "1.2.3.4"}, "198.51.100.1"},
		{"no trusted proxies: loopback peer is the client", none, "127.0.0.1", map[string]string{"x-forwarded-for": "1.2.3.4"}, "127.0.0.1"},
		{"trusted peer, one hop", xff, "127.0.0.1", map[string]string{"x-forwarded-for": "203.0.113.9"}, "203.0.113.9"},
		{"client-written left entries are skipped", xff, "127.0.0.1", map[string]string{"x-forwarded-for": "6.6.6.6, 203.0.113.9"}, "203.0.113.9"},
		{"trusted hops on the right are skipped", xff, "127.0.0.1", map[string]string{"x-forwarded-for": "6.6.6.6, 203.0.113.9, 10.1.2.3,10.9.9.9"}, "203.0.113.9"},
		{"all trusted: the left-most", xff, "10.0.0.1", map[string]string{"x-forwarded-for": "10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"garbage stops the walk at the last good hop", xff, "127.0.0.1", map[string]string{"x-forwarded-for": "203.0.113.9, junk, 10.1.1.1"}, "10.1.1.1"},
		{"ports and brackets", xff, "127.0.0.1", map[string]string{"x-forwarded-for": "[2001:db8::1]:443"}, "2001:db8::1"},
		{"mapped v4 peer", xff, "::ffff:127.0.0.1", map[string]string{"x-forwarded-for": "203.0.113.9"}, "203.0.113.9"},
		{"no header: the peer", xff, "127.0.0.1", nil, "127.0.0.1"},
		{"x-real-ip from a trusted peer", realIP, "127.0.0.1", map[string]string{"x-real-ip": "203.0.113.7", "x-forwarded-for": "6.6.6.6"}, "203.0.113.7"},
		{"x-real-ip from an untrusted peer", realIP, "198.51.100.1", map[string]string{"x-real-ip": "203.0.113.7"}, "198.51.100.1"},
		{"bad x-real-ip: the peer", realIP, "127.0.0.1", map[string]string{"x-real-ip": "nope"}, "127.0.0.1"},
		{"no peer", none, "", nil, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := clientIP(tt.set, PeerAddr(tt.peer), tt.headers); got != tt.want {
				t.Errorf("clientIP = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEndpoint(t *testing.T) {
	for _, tt := range []struct {
		uri                  string
		mode, policy, target string
		ok                   bool
	}{
		{"/envoy/api/x?y=1", "envoy", "", "/api/x?y=1", true},
		{"/envoy", "envoy", "", "/", true},
		{"/envoy?a=b", "envoy", "", "/?a=b", true},
		{"/envoyx/a", "", "", "", false},
		{"/nginx", "nginx", "", "", true},
		{"/nginx?policy=admin", "nginx", "", "", true},
		{"/nginx/admin?policy=open", "nginx", "admin", "", true},
		{"/forward/login", "forward", "login", "", true},
		{"/forward/", "", "", "", false},
		{"/forwarded", "", "", "", false},
		{"/other", "", "", "", false},
	} {
		mode, pol, target, ok := endpoint(tt.uri)
		if mode != tt.mode || pol != tt.policy || target != tt.target || ok != tt.ok {
			t.Errorf("endpoint(%q) = %q %q %q %v, want %q %q %q %v", tt.uri, mode, pol, target, ok, tt.mode, tt.policy, tt.target, tt.ok)
		}
	}
}

// Hosts are read like a resolver would: case, port and a trailing dot do not escape a
// host-matched policy.
func TestHostSpellings(t *testing.T) {
	e := New(compileSet(t, `
sessions: {secrets: [s]}
policies:
  - {name: admin, match: {host: Admin.Example.com}, auth: session}
  - {name: public, auth: none}
`), Options{Sessions: fakeSessions{}, Limiter: nopLimiter{}})
	for _, h := range []string{"admin.example.com", "ADMIN.example.COM", "admin.example.com.", "admin.example.com:8443", "admin.example.com.:443"} {
		if d := e.DecideRaw(context.Background(), Raw{Method: "GET", Target: "/", Host: h}); d.Policy != "admin" {
			t.Errorf("host %q: policy %q, want admin", h, d.Policy)
		}
	}
	if d := e.DecideRaw(context.Background(), Raw{Method: "GET", Target: "/", Host: "admin.example.com\x00.evil"}); d.Status != 400 {
		t.Errorf("bad host: %d", d.Status)
	}
}

// request.allow lets one class of spelling through for apps that need it, and matching then
// sees the spelling as it stands.
func TestRequestAllow(t *testing.T) {
	e := New(compileSet(t, `
request: {allow: [encoded_slash, empty_segments]}
sessions: {secrets: [s]}
policies:
  - {name: files, match: {path_prefix: /files}, auth: session}
  - {name: public, auth: none}
`), Options{Sessions: fakeSessions{}, Limiter: nopLimiter{}})
	for target, want := range map[string]string{"/files/a%2Fb": "files", "//files/x": "files", "/public/%2F..%2Ffiles": "public"} {
		d := e.DecideRaw(context.Background(), Raw{Method: "GET", Target: target})
		if d.Policy != want {
			t.Errorf("%s: policy %q status %d, want %s", target, d.Policy, d.Status, want)
		}
	}
	if d := e.DecideRaw(context.Background(), Raw{Method: "GET", Target: "/public/../files"}); d.Status != 400 {
		t.Errorf("dot segments are never allowed: %d", d.Status)
	}
}

// Repeated headers are joined in time linear in their number, and past request.max_headers
// the request is refused without building anything.
func TestManyHeaders(t *testing.T) {
	e := New(compileSet(t, "request: {max_headers: 50000}\npolicies: [{name: public, auth: none}]\n"), Options{Limiter: nopLimiter{}})
	cs := NewCheckServer(e)
	build := func(n int) *authv3.CheckRequest {
		req := checkRequest("GET", "/x", nil, nil)
		hs := make([]*corev3.HeaderValue, n)
		for i := range hs {
			hs[i] = &corev3.HeaderValue{Key: "X-Dup", Value: fmt.Sprint(i)}
		}
		req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: hs}
		return req
	}
	// Linear, measured in bytes rather than seconds (a shared machine's clock proves nothing):
	// joining 40,000 values one by one into a growing string would allocate about
	// 40,000²/2 × 6 bytes, some 5 GB; building the request and joining once is a few MB.
	req := build(40000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	resp, err := cs.Check(context.Background(), req)
	runtime.ReadMemStats(&after)
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("40,000 repeats under the cap: %v %v", resp, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 256<<20 {
		t.Errorf("joining 40,000 repeats allocated %d MB: not linear", got>>20)
	}
	h, n := requestHeaders(build(3).Attributes.Request.Http, 10)
	if n != 3 || h["x-dup"] != "0, 1, 2" {
		t.Errorf("joined = %q (%d lines)", h["x-dup"], n)
	}
	resp, err = cs.Check(context.Background(), build(50001))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 400 {
		t.Fatalf("past the cap: %v %v", resp, err)
	}
}

// Read is the one way in: every transport's request, whichever proxy asked, comes out the same.
func TestReadIsCanonical(t *testing.T) {
	e := New(compileSet(t, "trusted_proxies: [127.0.0.1/32]\n"), Options{Limiter: nopLimiter{}})
	r, err := e.Read(Raw{Method: "GET", Target: "/%61pi/x?q=1", Host: "API.example.com.:443", Peer: netip.MustParseAddr("127.0.0.1"),
		Headers: map[string]string{"x-forwarded-for": "203.0.113.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Path != "/api/x" || r.Host != "api.example.com" || r.RemoteIP != "203.0.113.1" || r.Method != "GET" {
		t.Errorf("Read = %+v", r)
	}
	for _, m := range []string{"get", "", "GE T", "GET\n"} {
		if _, err := e.Read(Raw{Method: m, Target: "/"}); err == nil {
			t.Errorf("method %q accepted", m)
		}
	}
	if _, err := e.Read(Raw{Method: "GET", Target: "/" + strings.Repeat("a", 9000)}); err == nil {
		t.Error("a 9 KB target accepted")
	}
}

// fallbackLimiter fails like Redis and answers from local counts, as ratelimit.Guard does.
type fallbackLimiter struct{ allowed bool }

func (f fallbackLimiter) Allow(_ context.Context, reqs []ratelimit.Request) (time.Time, []ratelimit.Decision, error) {
	ds := make([]ratelimit.Decision, len(reqs))
	for i, r := range reqs {
		ds[i] = ratelimit.Decision{Allowed: f.allowed, Limit: r.Limit.Requests, Reset: time.Minute, RetryAfter: time.Minute}
	}
	return time.Now(), ds, fmt.Errorf("%w: %w", ratelimit.ErrFallback, context.DeadlineExceeded)
}

// A Redis failure under failure.limits: open no longer switches limits off: the local counts
// decide, marked degraded; under closed it is an error, as before.
func TestLimitsFallBackToLocalCounts(t *testing.T) {
	set := compileSet(t, `
policies:
  - {name: open, match: {path_prefix: /open}, auth: none, limits: [{by: ip, requests: 5, window: 1m}], failure: {limits: open}}
  - {name: closed, match: {path_prefix: /closed}, auth: none, limits: [{by: ip, requests: 5, window: 1m}], failure: {limits: closed}}
`)
	raw := func(target string) Raw { return Raw{Method: "GET", Target: target, Peer: PeerAddr("192.0.2.1")} }
	over := New(set, Options{Limiter: fallbackLimiter{allowed: false}, Headers: ratelimit.FormatDraft7})
	if d := over.DecideRaw(context.Background(), raw("/open")); d.Allow || d.Status != 429 {
		t.Errorf("open policy, local counts over: %+v", d)
	}
	under := New(set, Options{Limiter: fallbackLimiter{allowed: true}, Headers: ratelimit.FormatDraft7})
	d := under.DecideRaw(context.Background(), raw("/open"))
	if v, _ := header(d.SetHeaders, DegradedHeader); !d.Allow || v != "limits" {
		t.Errorf("open policy, local counts under: %+v", d)
	}
	if d := under.DecideRaw(context.Background(), raw("/closed")); d.Err == nil || d.Allow {
		t.Errorf("closed policy: %+v", d)
	}
}

// A well-formed API key sent to a route that does not read it is still stripped upstream; an
// app's own bearer token is not.
func TestUnreadKeyIsStripped(t *testing.T) {
	e := New(compileSet(t, `
sessions: {secrets: [s]}
policies:
  - {name: open, auth: none}
`), Options{Keys: validatingKeys{}, Limiter: nopLimiter{}})
	d := e.DecideRaw(context.Background(), Raw{Method: "GET", Target: "/x", Headers: map[string]string{"x-api-key": "k-1"}})
	if !d.Allow || d.KeyHeader != "x-api-key" || !slices.Contains(d.RemoveHeaders, "x-api-key") {
		t.Errorf("key on an open route: %+v", d)
	}
	d = e.DecideRaw(context.Background(), Raw{Method: "GET", Target: "/x", Headers: map[string]string{"authorization": "Bearer app.jwt.token"}})
	if d.KeyHeader != "" || slices.Contains(d.RemoveHeaders, "authorization") {
		t.Errorf("an app's own bearer token was stripped: %+v", d)
	}
}

// A request that claims another method (method-override middleware in the app) is refused: the
// policy would match the method on the wire while the app runs the claimed one's handler.
func TestMethodOverrideRefused(t *testing.T) {
	yaml := `
sessions: {secrets: [s]}
policies:
  - {name: delete, match: {path_prefix: /items, methods: [DELETE]}, auth: session, roles: [admin]}
  - {name: write, match: {path_prefix: /items, methods: [POST]}, auth: none}
`
	e := New(compileSet(t, yaml), Options{Sessions: fakeSessions{}, Limiter: nopLimiter{}})
	for _, raw := range []Raw{
		{Method: "POST", Target: "/items/1", Headers: map[string]string{"x-http-method-override": "DELETE"}},
		{Method: "POST", Target: "/items/1?_method=DELETE"},
	} {
		if d := e.DecideRaw(context.Background(), raw); d.Status != 400 || d.Allow {
			t.Errorf("%+v: status %d, want 400", raw, d.Status)
		}
	}
	loose := New(compileSet(t, yaml+"request: {allow: [method_override]}\n"), Options{Sessions: fakeSessions{}, Limiter: nopLimiter{}})
	if d := loose.DecideRaw(context.Background(), Raw{Method: "POST", Target: "/items/1?_method=DELETE"}); !d.Allow || d.Policy != "write" {
		t.Errorf("with method_override allowed: %+v", d)
	}
}
