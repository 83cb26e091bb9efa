package policy

import "testing"

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
