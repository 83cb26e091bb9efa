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
	ctx := context.Background()
	decide := func(path, ip string, headers ...string) int {
		return e.Decide(ctx, from("GET", path, ip, headers...)).Status
	}

	// Two addresses of one /56 share the default limit: the third request is over.
	if s := decide("/x", "2001:db8:1234:5601::1"); s != 200 {
		t.Fatalf("1st: %d", s)
	}
	if s := decide("/x", "2001:db8:1234:56ff:abcd::2"); s != 200 {
		t.Fatalf("2nd: %d", s)
	}
	if s := decide("/x", "2001:db8:1234:5677::3"); s != 429 {
		t.Fatalf("3rd address of the same /56: %d, want 429", s)
	}
	// The neighbouring /56 has its own counter.
	if s := decide("/x", "2001:db8:1234:5700::1"); s != 200 {
		t.Fatalf("another /56: %d, want 200", s)
	}

	// ipv6_subnet: 128 keeps the exact address: rotating gets a fresh counter each time.
	for i, ip := range []string{"2001:db8::1", "2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		if s := decide("/exact/x", ip); s != 200 {
			t.Fatalf("/128 request %d from %s: %d, want 200", i+1, ip, s)
		}
	}
	if s := decide("/exact/x", "2001:db8::1"); s != 429 {
		t.Fatalf("/128, third from one address: %d, want 429", s)
	}

	// IPv4 and its IPv4-mapped spelling are one client, never masked together with others.
	if s := decide("/x", "198.51.100.7"); s != 200 {
		t.Fatalf("ipv4 1st: %d", s)
	}
	if s := decide("/x", "::ffff:198.51.100.7"); s != 200 {
		t.Fatalf("ipv4-mapped 2nd: %d", s)
	}
	if s := decide("/x", "198.51.100.7"); s != 429 {
		t.Fatalf("ipv4 3rd: %d, want 429 (mapped spelling must count as the same client)", s)
	}
	if s := decide("/x", "198.51.100.8"); s != 200 {
		t.Fatalf("next ipv4 address: %d, want 200", s)
	}

	// An anonymous caller of a by: principal limit falls back to its masked address too.
	if s := decide("/anon/x", "2001:db8:aaaa:bb01::1"); s != 200 {
		t.Fatalf("anon 1st: %d", s)
	}
	if s := decide("/anon/x", "2001:db8:aaaa:bb02::1"); s != 200 {
		t.Fatalf("anon 2nd: %d", s)
	}
	if s := decide("/anon/x", "2001:db8:aaaa:bbfe::1"); s != 429 {
		t.Fatalf("anon 3rd address of the same /56: %d, want 429", s)
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
