package config

import (
	"strings"
	"testing"
)

// A policy's mode is enforce unless it says shadow; anything else is an error that names the
// field and the values it takes.
func TestPolicyMode(t *testing.T) {
	c, err := parse("cfg.yaml", []byte(`
policies:
  - {name: a, auth: none}
  - {name: b, auth: none, mode: shadow}
  - {name: c, auth: none, mode: enforce}
`), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for i, want := range []string{"enforce", "shadow", "enforce"} {
		if got := c.Policies[i].Mode; got != want {
			t.Errorf("policies[%d].mode = %q, want %q", i, got, want)
		}
	}
	for _, tt := range []struct{ yaml, text string }{
		{"policies: [{name: a, mode: shadwo}]", `"shadwo" is not one of enforce, shadow (did you mean "shadow"?)`},
		{"policies: [{name: a, mode: dry-run}]", `"dry-run" is not one of enforce, shadow`},
		{"policies: [{name: a, mode: Shadow}]", `is not one of enforce, shadow`},
	} {
		_, err := parse("cfg.yaml", []byte(tt.yaml+"\n"), noEnv)
		if err == nil {
			t.Fatalf("%s: parse accepted the config", tt.yaml)
		}
		if !strings.Contains(err.Error(), "policies[0].mode:") || !strings.Contains(err.Error(), tt.text) {
			t.Fatalf("%s: error does not name policies[0].mode with %q:\n%v", tt.yaml, tt.text, err)
		}
	}
}
