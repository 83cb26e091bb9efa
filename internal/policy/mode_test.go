package policy

import (
	"strings"
	"testing"
)

// mode: shadow compiles to Shadow; enforce and the default do not.
func TestCompileMode(t *testing.T) {
	s := compile(t, `
policies:
  - {name: plain, auth: none}
  - {name: dry, auth: none, mode: shadow}
  - {name: hard, auth: none, mode: enforce}
`)
	for name, want := range map[string]bool{"plain": false, "dry": true, "hard": false} {
		p, ok := s.ByName(name)
		if !ok {
			t.Fatalf("no policy %s", name)
		}
		if p.Shadow != want {
			t.Errorf("%s: Shadow = %t, want %t", name, p.Shadow, want)
		}
	}
}

// WhyNot names the first part of a match block a request fails, and nothing when it fits,
// exactly where Matches says so.
func TestWhyNot(t *testing.T) {
	s := compile(t, `
policies:
  - {name: admin, match: {path_prefix: /admin/, host: Admin.Example.com, methods: [GET]}, auth: none}
`)
	p := s.Policies[0]
	for _, c := range []struct{ method, host, path, want string }{
		{"GET", "admin.example.com", "/admin/x", ""},
		{"HEAD", "admin.example.com", "/admin", ""},
		{"GET", "admin.example.com", "/administrator", "path /administrator is not under /admin"},
		{"GET", "example.com", "/admin/x", "host example.com is not admin.example.com"},
		{"POST", "admin.example.com", "/admin/x", "method POST is not one of GET, HEAD"},
	} {
		got := p.WhyNot(c.method, c.host, c.path)
		if !strings.HasPrefix(got, c.want) || (c.want == "") != (got == "") {
			t.Errorf("%s %s %s: %q, want %q", c.method, c.host, c.path, got, c.want)
		}
		if (got == "") != p.Matches(c.method, c.host, c.path) {
			t.Errorf("%s %s %s: WhyNot %q disagrees with Matches", c.method, c.host, c.path, got)
		}
	}
	if got := p.Why(); got != "under /admin (/admin itself or /admin/...), host admin.example.com, methods GET, HEAD" {
		t.Errorf("Why = %q", got)
	}
}
