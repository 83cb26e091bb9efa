package authz

import (
	"context"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
)

// from is req with the client address set.
func from(method, path, ip string, headers ...string) *Request {
	r := req(method, path, headers...)
	r.RemoteIP = ip
	return r
}

// An IPv6 client cannot escape a by: ip limit by rotating addresses inside its /56 (the
// default), while another /56, an ipv6_subnet: 128 limit and IPv4 clients count apart; an
// IPv4-mapped address is the IPv4 client. Counted on a real Redis.
func TestIPv6ClientsCountPerSubnet(t *testing.T) {
	r := redistest.Start(t)
	cfg, err := config.Parse("t.yaml", []byte(`
policies:
  - name: exact
    match: {path_prefix: /exact/}
    auth: none
    limits: [{by: ip, requests: 2, window: 1m, ipv6_subnet: 128}]
  - name: anon
    match: {path_prefix: /anon/}
    auth: none
    limits: [{by: principal, requests: 2, window: 1m}]
  - name: open
    auth: none
    limits: [{by: ip, requests: 2, window: 1m}]
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{Limiter: ratelimit.NewLimiter(redisClient(t, r)), Timeout: time.Second, Headers: ratelimit.FormatDraft7})
	if err != nil {
		t.Fatal(err)
	}
	// Sent in this order; each step says what it shows.
	for i, step := range []struct {
		path, ip string
		want     int
		what     string
	}{
		// Two addresses of one /56 share the default limit: the third request is over.
		{"/x", "2001:db8:1234:5601::1", 200, "1st"},
		{"/x", "2001:db8:1234:56ff:abcd::2", 200, "2nd"},
		{"/x", "2001:db8:1234:5677::3", 429, "3rd address of the same /56"},
		// The neighbouring /56 has its own counter.
		{"/x", "2001:db8:1234:5700::1", 200, "another /56"},
		// ipv6_subnet: 128 keeps the exact address: rotating gets a fresh counter each time.
		{"/exact/x", "2001:db8::1", 200, "/128, 1st from ::1"},
		{"/exact/x", "2001:db8::1", 200, "/128, 2nd from ::1"},
		{"/exact/x", "2001:db8::2", 200, "/128, from ::2"},
		{"/exact/x", "2001:db8::3", 200, "/128, from ::3"},
		{"/exact/x", "2001:db8::1", 429, "/128, third from one address"},
		// IPv4 and its IPv4-mapped spelling are one client, never masked together with others.
		{"/x", "198.51.100.7", 200, "ipv4 1st"},
		{"/x", "::ffff:198.51.100.7", 200, "ipv4-mapped 2nd"},
		{"/x", "198.51.100.7", 429, "ipv4 3rd (the mapped spelling must count as the same client)"},
		{"/x", "198.51.100.8", 200, "next ipv4 address"},
		// An anonymous caller of a by: principal limit falls back to its masked address too.
		{"/anon/x", "2001:db8:aaaa:bb01::1", 200, "anon 1st"},
		{"/anon/x", "2001:db8:aaaa:bb02::1", 200, "anon 2nd"},
		{"/anon/x", "2001:db8:aaaa:bbfe::1", 429, "anon 3rd address of the same /56"},
	} {
		if s := e.Decide(context.Background(), from("GET", step.path, step.ip)).Status; s != step.want {
			t.Fatalf("step %d, %s (%s from %s): %d, want %d", i+1, step.what, step.path, step.ip, s, step.want)
		}
	}
}

// A shared_prefix limit keys an IPv6 client as express-rate-limit 8's default keyGenerator
// does (ipKeyGenerator: the /56 network in CIDR form), so the Express app and the sidecar
// still meet on one rate-limit-redis counter.
func TestSharedPrefixIPv6KeyMatchesExpressRateLimit(t *testing.T) {
	r := redistest.Start(t)
	cfg, err := config.Parse("t.yaml", []byte(`
policies:
  - name: legacy
    auth: none
    limits: [{by: ip, requests: 3, window: 1m, shared_prefix: "rl:"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{Limiter: ratelimit.NewLimiter(redisClient(t, r)), Timeout: time.Second, Headers: ratelimit.FormatDraft7})
	if err != nil {
		t.Fatal(err)
	}
	// The Express app counted two hits for this /56.
	serverDo(t, r, "SET", "rl:2001:db8:1234:5600::/56", "2", "EX", "60")
	if d := e.Decide(context.Background(), from("GET", "/x", "2001:db8:1234:5678::9")); !d.Allow {
		t.Fatalf("third hit denied: %+v", d)
	}
	if d := e.Decide(context.Background(), from("GET", "/x", "2001:db8:1234:56aa::1")); d.Status != 429 {
		t.Fatalf("fourth hit, another address of the /56: %+v", d)
	}
	if n := serverDo(t, r, "GET", "rl:2001:db8:1234:5600::/56"); n != "4" {
		t.Fatalf("shared counter = %q, want 4", n)
	}
}
