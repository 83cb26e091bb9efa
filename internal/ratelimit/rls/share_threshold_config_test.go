package rls

import (
	"os"
	"strings"
	"testing"
)

// share_threshold is read on wildcard values; on a descriptor without one it is refused with
// the way to say what is meant. quota_mode: true is refused with why and what to use instead;
// quota_mode: false means what the reference means by it, nothing.
func TestParseShareThresholdAndQuotaMode(t *testing.T) {
	ok := "domain: d\ndescriptors:\n  - key: path\n    value: files/*\n    share_threshold: true\n    quota_mode: false\n    rate_limit: {unit: hour, requests_per_unit: 100}\n"
	c, err := Parse([]File{{Name: "ok.yaml", Data: []byte(ok)}})
	if err != nil {
		t.Fatal(err)
	}
	if c.NumRules() != 1 {
		t.Fatalf("rules = %d", c.NumRules())
	}

	tests := []struct {
		name, yaml string
		want       []wantError
	}{
		{"share_threshold on an exact value", "domain: d\ndescriptors:\n  - key: path\n    value: files/a\n    share_threshold: true\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
			[]wantError{{"bad.yaml", 5, "descriptors[0].share_threshold", `share_threshold applies to a wildcard value (one with '*'), this descriptor has value "files/a"`}}},
		{"share_threshold on a key-only descriptor", "domain: d\ndescriptors:\n  - key: path\n    share_threshold: true\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].share_threshold", `write value: "*" with share_threshold: true`}}},
		{"share_threshold not a bool", "domain: d\ndescriptors:\n  - key: path\n    value: a*\n    share_threshold: maybe\n",
			[]wantError{{"bad.yaml", 5, "descriptors[0].share_threshold", `expected true or false, got "maybe"`}}},
		{"quota_mode", "domain: d\ndescriptors:\n  - key: model\n    quota_mode: true\n    rate_limit: {unit: minute, requests_per_unit: 10}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].quota_mode", "quota_mode is not supported"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]File{{Name: "bad.yaml", Data: []byte(tt.yaml)}})
			checkErrors(t, err, tt.want)
		})
	}
	_, err = Parse([]File{{Name: "bad.yaml", Data: []byte(tests[3].yaml)}})
	for _, says := range []string{"lets requests over the limit through", "dynamic metadata", "use shadow_mode: true"} {
		if !strings.Contains(err.Error(), says) {
			t.Errorf("quota_mode error %q does not say %q", err, says)
		}
	}
}

// MatchShared names the pattern for exactly the entries a share_threshold wildcard matched,
// and allocates nothing when none did.
func TestMatchShared(t *testing.T) {
	c, err := Parse([]File{{Name: "d.yaml", Data: []byte(`
domain: d
descriptors:
  - key: tenant
    value: t-*
    share_threshold: true
    descriptors:
      - {key: user, rate_limit: {unit: minute, requests_per_unit: 2}}
  - key: path
    value: p/*
    rate_limit: {unit: minute, requests_per_unit: 2}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	lim, shared := c.MatchShared("d", entries("tenant", "t-9", "user", "u"))
	if lim == nil || len(shared) != 2 || shared[0] != "t-*" || shared[1] != "" {
		t.Fatalf("tenant/user: %v %q", lim, shared)
	}
	if lim, shared := c.MatchShared("d", entries("path", "p/x")); lim == nil || shared != nil {
		t.Fatalf("plain wildcard: %v %q, want a limit and no shared entries", lim, shared)
	}
	if lim, shared := c.MatchShared("d", entries("tenant", "t-9")); lim != nil || shared != nil {
		t.Fatalf("tenant alone has no limit: %v %q", lim, shared)
	}
	plain := entries("path", "p/x")
	if n := testing.AllocsPerRun(100, func() { c.MatchShared("d", plain) }); n > 0 {
		t.Fatalf("MatchShared without sharing allocates %v times", n)
	}
}

// The example config in docs/ratelimit.md, share_threshold included, loads.
func TestDocExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/ratelimit.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 || !strings.Contains(block, "share_threshold: true") {
		t.Fatalf("no yaml example with share_threshold in docs/ratelimit.md")
	}
	c, err := Parse([]File{{Name: "ratelimit.md", Data: []byte(block)}})
	if err != nil {
		t.Fatal(err)
	}
	if lim, shared := c.MatchShared("edge", entries("path", "files/a.pdf")); lim == nil || shared == nil || shared[0] != "files/*" {
		t.Fatalf("files/a.pdf in the doc example: %v %q", lim, shared)
	}
}
