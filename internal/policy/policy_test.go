package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/config"
)

func compile(t *testing.T, yaml string) *Set {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ClientKey masks IPv6 clients to their /ipv6_subnet network, in the CIDR spelling of
// express-rate-limit 8's ipKeyGenerator, and leaves IPv4 (however it is written) alone.
func TestClientKey(t *testing.T) {
	for _, c := range []struct {
		bits     int
		ip, want string
	}{
		{56, "2001:db8:1234:5678::1", "2001:db8:1234:5600::/56"},
		{56, "2001:db8:1234:56ff:ffff:ffff:ffff:ffff", "2001:db8:1234:5600::/56"},
		{56, "2001:DB8:1234:5678:0:0:0:1", "2001:db8:1234:5600::/56"},
		{64, "2001:db8:1234:5678:9abc::1", "2001:db8:1234:5678::/64"},
		{48, "2001:db8:1234:5678::1", "2001:db8:1234::/48"},
		{1, "2001:db8::1", "::/1"},
		{128, "2001:db8:1234:5678::1", "2001:db8:1234:5678::1"},
		{0, "2001:db8:1234:5678::1", "2001:db8:1234:5600::/56"}, // 0 is the default, 56
		{56, "::1", "::/56"},
		{56, "203.0.113.9", "203.0.113.9"},
		{1, "203.0.113.9", "203.0.113.9"},
		// IPv4-mapped IPv6 is the IPv4 client a dual-stack socket reports: never masked as
		// IPv6, where /56 would lump every IPv4 client of the Internet into ::/56.
		{56, "::ffff:203.0.113.9", "203.0.113.9"},
		{128, "::ffff:203.0.113.9", "203.0.113.9"},
		{56, "fe80::1%eth0", "fe80::/56"},
		{56, "not-an-ip", "not-an-ip"},
	} {
		if got := (Limit{IPv6Subnet: c.bits}).ClientKey(c.ip); got != c.want {
			t.Errorf("/%d %s: got %q, want %q", c.bits, c.ip, got, c.want)
		}
	}
}

// A limit that leaves ipv6_subnet out is compiled at 56 (a behaviour change from the exact
// address); an explicit value is kept, in policy limits and tier limits alike.
func TestIPv6SubnetDefaultAndExplicit(t *testing.T) {
	s := compile(t, `
policies:
  - name: p
    auth: any
    limits:
      - {name: dflt, by: ip, requests: 5, window: 1m}
      - {name: exact, by: ip, requests: 5, window: 1m, ipv6_subnet: 128}
      - {name: anon, by: principal, requests: 5, window: 1m, ipv6_subnet: 64}
    tiers: {pro: [{name: t, by: ip, requests: 5, window: 1m, ipv6_subnet: 48}]}
`)
	p, _ := s.ByName("p")
	got := []int{p.Limits[0].IPv6Subnet, p.Limits[1].IPv6Subnet, p.Limits[2].IPv6Subnet, p.Tiers["pro"][0].IPv6Subnet}
	if want := []int{DefaultIPv6Subnet, 128, 64, 48}; !slices.Equal(got, want) {
		t.Fatalf("ipv6_subnet compiled to %v, want %v", got, want)
	}
	if DefaultIPv6Subnet != 56 {
		t.Fatalf("default %d, want express-rate-limit 8's 56", DefaultIPv6Subnet)
	}
}

// Out-of-range prefix lengths, and ipv6_subnet on a limit that never counts an address, are
// configuration errors naming the field.
func TestIPv6SubnetValidation(t *testing.T) {
	for _, c := range []struct{ limit, want string }{
		{`{by: ip, requests: 1, window: 1m, ipv6_subnet: 129}`, "policies[0].limits[0].ipv6_subnet: must be a prefix length from 1 to 128"},
		{`{by: ip, requests: 1, window: 1m, ipv6_subnet: -1}`, "policies[0].limits[0].ipv6_subnet: must be a prefix length from 1 to 128"},
		{`{by: "header:x-tenant", requests: 1, window: 1m, ipv6_subnet: 64}`, "applies to by: ip and by: principal only"},
		{`{by: apikey, requests: 1, window: 1m, ipv6_subnet: 64}`, "applies to by: ip and by: principal only"},
	} {
		_, err := config.Parse("t.yaml", []byte("policies:\n  - name: p\n    auth: any\n    limits: ["+c.limit+"]\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.limit, err, c.want)
		}
	}
	for _, ok := range []string{"1", "56", "128"} {
		if _, err := config.Parse("t.yaml", []byte("policies:\n  - name: p\n    auth: none\n    limits: [{by: ip, requests: 1, window: 1m, ipv6_subnet: "+ok+"}]\n")); err != nil {
			t.Errorf("ipv6_subnet %s rejected: %v", ok, err)
		}
	}
}

// methods: [GET] also matches HEAD, as Express routes HEAD to app.get handlers; nothing else
// is added, HEAD alone does not take GET, and the configuration's own list is left alone.
func TestGetAlsoMatchesHead(t *testing.T) {
	s := compile(t, `
policies:
  - {name: get, match: {path_prefix: /get/, methods: [GET]}, auth: none}
  - {name: both, match: {path_prefix: /both/, methods: [GET, HEAD]}, auth: none}
  - {name: head, match: {path_prefix: /head/, methods: [HEAD]}, auth: none}
  - {name: post, match: {path_prefix: /post/, methods: [POST]}, auth: none}
`)
	for _, c := range []struct {
		method, path string
		want         bool
	}{
		{"GET", "/get/x", true}, {"HEAD", "/get/x", true}, {"POST", "/get/x", false}, {"OPTIONS", "/get/x", false},
		{"GET", "/both/x", true}, {"HEAD", "/both/x", true},
		{"HEAD", "/head/x", true}, {"GET", "/head/x", false},
		{"POST", "/post/x", true}, {"HEAD", "/post/x", false}, {"GET", "/post/x", false},
	} {
		name := strings.Split(c.path, "/")[1]
		p, _ := s.ByName(name)
		if got := p.Matches(c.method, "example.com", c.path); got != c.want {
			t.Errorf("%s %s under methods %v: match %v, want %v", c.method, c.path, p.Methods, got, c.want)
		}
	}
	if p, _ := s.ByName("both"); len(p.Methods) != 2 {
		t.Errorf("[GET, HEAD] compiled to %v: HEAD added twice", p.Methods)
	}
	cfgMethods := []string{"GET"}
	if got := withHead(cfgMethods); !slices.Equal(got, []string{"GET", "HEAD"}) || len(cfgMethods) != 1 || cap(cfgMethods) != 1 {
		t.Errorf("withHead([GET]) = %v; config slice now %v", got, cfgMethods)
	}
}

// SessionScopes follows sessions.scopes, and auth: optional compiles as it is written.
func TestSessionScopesAndOptionalCompile(t *testing.T) {
	s := compile(t, "sessions: {secrets: [s], scopes: perms}\npolicies: [{name: a, auth: optional, scopes: [r]}]\n")
	if !s.SessionScopes || s.Policies[0].Auth != AuthOptional || !slices.Equal(s.Policies[0].Scopes, []string{"r"}) {
		t.Fatalf("SessionScopes %v, policy %+v", s.SessionScopes, s.Policies[0])
	}
	if s := compile(t, "sessions: {secrets: [s]}\npolicies: [{name: a, auth: any, scopes: [r]}]\n"); s.SessionScopes {
		t.Fatal("SessionScopes without sessions.scopes")
	}
}
