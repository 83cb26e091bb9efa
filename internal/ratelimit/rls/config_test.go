package rls

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// wantError is one expected *Error; msg need only be contained in the error's Msg.
type wantError struct {
	file string
	line int
	path string
	msg  string
}

// configErrors unpacks the errors.Join of *Error values that Parse returns.
func configErrors(t *testing.T, err error) []*Error {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("error %T is not an errors.Join: %v", err, err)
	}
	var out []*Error
	for _, e := range joined.Unwrap() {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Fatalf("error %T is not an *Error: %v", e, e)
		}
		out = append(out, ce)
	}
	return out
}

func checkErrors(t *testing.T, err error, want []wantError) {
	t.Helper()
	got := configErrors(t, err)
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(got), len(want), err)
	}
	for i, w := range want {
		g := got[i]
		if g.File != w.file || g.Line != w.line || g.Path != w.path || !strings.Contains(g.Msg, w.msg) {
			t.Errorf("error %d = %q, want %s:%d: %s: ...%s...", i, g.Error(), w.file, w.line, w.path, w.msg)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []wantError
	}{
		{"yaml parser error", "domain: d\ndescriptors:\n  - key: a\n    value: [x\n",
			[]wantError{{"bad.yaml", 4, "", "did not find expected ',' or ']'"}}},
		// yaml.v3 names the line where the list it was parsing starts.
		{"yaml parser error in block", "domain: d\ndescriptors:\n  - key: a\n  value: x\n",
			[]wantError{{"bad.yaml", 3, "", "did not find expected '-' indicator"}}},
		{"yaml scanner error", "domain: d\ndescriptors:\n  - key: a: b\n",
			[]wantError{{"bad.yaml", 3, "", "mapping values are not allowed in this context"}}},
		{"yaml tab", "domain: d\ndescriptors:\n\t- key: a\n",
			[]wantError{{"bad.yaml", 3, "", "found character that cannot start any token"}}},
		{"unknown top-level key", "domain: d\nburst: 1\n",
			[]wantError{{"bad.yaml", 2, "burst", `unknown key "burst"`}}},
		{"unknown key in rate_limit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      requests_per_unit: 1\n      burst: 2\n",
			[]wantError{{"bad.yaml", 7, "descriptors[0].rate_limit.burst", `unknown key "burst"`}}},
		{"misspelled descriptor key", "domain: d\ndescriptors:\n  - key: a\n    valeu: x\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].valeu", `unknown key "valeu"`}}},
		{"unknown key under a misplaced key", "domain: d\nunit:\n  foo: 1\n",
			[]wantError{{"bad.yaml", 3, "unit.foo", `unknown key "foo"`}}},
		{"non-string key", "domain: d\n? [a]\n: 1\n",
			[]wantError{{"bad.yaml", 2, "", "key is not a string"}}},
		{"repeated key", "domain: d\ndomain: e\n",
			[]wantError{{"bad.yaml", 2, "domain", `duplicate key "domain"`}}},
		{"empty domain", "domain: \"\"\ndescriptors: []\n",
			[]wantError{{"bad.yaml", 1, "domain", "empty domain"}}},
		{"missing domain", "descriptors:\n  - key: a\n",
			[]wantError{{"bad.yaml", 1, "domain", "empty domain"}}},
		{"empty file", "",
			[]wantError{{"bad.yaml", 0, "domain", "empty domain"}}},
		{"top level is a list", "- domain: d\n",
			[]wantError{{"bad.yaml", 1, "", "expected a mapping, got a list"}, {"bad.yaml", 1, "domain", "empty domain"}}},
		{"missing descriptor key", "domain: d\ndescriptors:\n  - key: a\n  - value: x\n",
			[]wantError{{"bad.yaml", 4, "descriptors[1].key", "descriptor has empty key"}}},
		{"empty descriptor key", "domain: d\ndescriptors:\n  - value: x\n    key: \"\"\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].key", "descriptor has empty key"}}},
		{"duplicate key_value", "domain: d\ndescriptors:\n  - key: a\n    value: b\n  - key: a\n    value: b\n",
			[]wantError{{"bad.yaml", 5, "descriptors[1]", `duplicate descriptor composite key "d.a_b" (also descriptors[0])`}}},
		{"duplicate key-only", "domain: d\ndescriptors:\n  - key: a\n  - key: a\n",
			[]wantError{{"bad.yaml", 4, "descriptors[1]", `duplicate descriptor composite key "d.a"`}}},
		{"duplicate composite across keys", "domain: d\ndescriptors:\n  - key: a_b\n  - {key: a, value: b}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[1]", `duplicate descriptor composite key "d.a_b"`}}},
		{"duplicate nested", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n      - key: b\n",
			[]wantError{{"bad.yaml", 6, "descriptors[0].descriptors[1]", `duplicate descriptor composite key "d.a.b"`}}},
		{"invalid unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.unit", `invalid unit "fortnight"`}}},
		{"unit unknown", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: unknown, requests_per_unit: 1}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.unit", `invalid unit "unknown"`}}},
		{"nested invalid unit", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n      - key: c\n        rate_limit:\n          unit: fortnight\n",
			[]wantError{{"bad.yaml", 8, "descriptors[0].descriptors[1].rate_limit.unit", `invalid unit "fortnight"`}}},
		{"missing unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      requests_per_unit: 1\n",
			[]wantError{{"bad.yaml", 5, "descriptors[0].rate_limit.unit", "missing unit"}}},
		{"empty rate_limit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.unit", "missing unit"}}},
		{"unlimited with unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unlimited: true\n      unit: second\n",
			[]wantError{{"bad.yaml", 6, "descriptors[0].rate_limit.unit", "should not specify rate limit unit when unlimited"}}},
		{"unlimited with invalid unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: true, unit: fortnight}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.unit", "should not specify rate limit unit when unlimited"}}},
		{"replaces empty name", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      replaces:\n        - name: x\n        - name: \"\"\n",
			[]wantError{{"bad.yaml", 8, "descriptors[0].rate_limit.replaces[1].name", "should not have an empty replaces entry"}}},
		{"replaces entry without name", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      replaces: [{}]\n",
			[]wantError{{"bad.yaml", 6, "descriptors[0].rate_limit.replaces[0].name", "should not have an empty replaces entry"}}},
		{"replaces own name", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      name: me\n      replaces:\n        - name: me\n",
			[]wantError{{"bad.yaml", 8, "descriptors[0].rate_limit.replaces[0].name", `replaces should not contain name of same descriptor "me"`}}},
		{"replaces not a list", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      replaces: {name: x}\n",
			[]wantError{{"bad.yaml", 6, "descriptors[0].rate_limit.replaces", "expected a list, got a mapping"}}},
		{"requests_per_unit not a number", "domain: d\ndescriptors:\n  - key: a\n    rate_limit:\n      unit: second\n      requests_per_unit: abc\n",
			[]wantError{{"bad.yaml", 6, "descriptors[0].rate_limit.requests_per_unit", `expected an integer from 0 to 4294967295, got "abc"`}}},
		{"requests_per_unit negative", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: -1}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.requests_per_unit", `got "-1"`}}},
		{"requests_per_unit float", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1.5}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.requests_per_unit", `got "1.5"`}}},
		{"requests_per_unit too large", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 4294967296}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.requests_per_unit", `got "4294967296"`}}},
		{"requests_per_unit quoted", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: \"5\"}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.requests_per_unit", `got "5"`}}},
		{"requests_per_unit list", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: [1]}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.requests_per_unit", "got a list"}}},
		{"key is a list", "domain: d\ndescriptors:\n  - key: [a]\n",
			[]wantError{{"bad.yaml", 3, "descriptors[0].key", "expected a string, got a list"}, {"bad.yaml", 3, "descriptors[0].key", "descriptor has empty key"}}},
		{"descriptors is a mapping", "domain: d\ndescriptors:\n  key: a\n",
			[]wantError{{"bad.yaml", 3, "descriptors", "expected a list of descriptors, got a mapping"}}},
		{"descriptor is a scalar", "domain: d\ndescriptors:\n  - a\n",
			[]wantError{{"bad.yaml", 3, "descriptors[0]", "expected a mapping, got a scalar"}}},
		{"rate_limit is a scalar", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: 5\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit", "expected a mapping, got a scalar"}}},
		{"shadow_mode not a bool", "domain: d\ndescriptors:\n  - key: a\n    shadow_mode: maybe\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].shadow_mode", `expected true or false, got "maybe"`}}},
		{"unlimited quoted", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unlimited: \"true\"}\n",
			[]wantError{{"bad.yaml", 4, "descriptors[0].rate_limit.unlimited", `expected true or false, got "true"`}, {"bad.yaml", 4, "descriptors[0].rate_limit.unit", "missing unit"}}},
		{"misplaced list of scalars", "domain: d\nreplaces: [a]\n",
			[]wantError{{"bad.yaml", 2, "replaces[0]", "expected a mapping, got a scalar"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]File{{Name: "bad.yaml", Data: []byte(tt.yaml)}})
			if cfg != nil {
				t.Error("Parse returned a Config with its error")
			}
			checkErrors(t, err, tt.want)
		})
	}
}

func TestParseDuplicateDomain(t *testing.T) {
	_, err := Parse([]File{
		{Name: "a.yaml", Data: []byte("domain: d\n")},
		{Name: "b.yaml", Data: []byte("# same domain\ndomain: d\n")},
	})
	checkErrors(t, err, []wantError{{"b.yaml", 2, "domain", `duplicate domain "d" (already in a.yaml)`}})
}

// TestParseCollectsAllErrors checks that one load reports every problem of every file, in file
// order, so that an operator fixes a directory in one pass.
func TestParseCollectsAllErrors(t *testing.T) {
	a := `domain: d
descriptors:
  - key: a
    rate_limit: {unit: fortnight}
  - value: x
  - key: b
    bogus: 1
    descriptors:
      - key: c
        rate_limit: {unit: second, requests_per_unit: -5}
`
	_, err := Parse([]File{
		{Name: "a.yaml", Data: []byte(a)},
		{Name: "b.yaml", Data: []byte("domain: \"\"\n")},
		{Name: "c.yaml", Data: []byte("domain: d\n")},
	})
	checkErrors(t, err, []wantError{
		{"a.yaml", 4, "descriptors[0].rate_limit.unit", "invalid unit"},
		{"a.yaml", 5, "descriptors[1].key", "empty key"},
		{"a.yaml", 7, "descriptors[2].bogus", "unknown key"},
		{"a.yaml", 10, "descriptors[2].descriptors[0].rate_limit.requests_per_unit", `"-5"`},
		{"b.yaml", 1, "domain", "empty domain"},
		{"c.yaml", 1, "domain", "duplicate domain"},
	})
}

// TestParseAliasBomb checks that nested aliases, which expand exponentially, stop the walk
// with an error instead of hanging a reload.
func TestParseAliasBomb(t *testing.T) {
	keys := []string{"key", "value", "name", "unit", "rate_limit", "requests_per_unit", "unlimited",
		"shadow_mode", "replaces", "detailed_metric", "descriptors"}
	top := []string{"value", "unit", "rate_limit", "requests_per_unit", "unlimited", "shadow_mode", "replaces"}
	var b strings.Builder
	b.WriteString("domain: d\nname: &a0 {key: x}\n")
	for lvl := 1; lvl <= len(top); lvl++ {
		fmt.Fprintf(&b, "%s: &a%d {", top[lvl-1], lvl)
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s: *a%d", k, lvl-1)
		}
		b.WriteString("}\n")
	}
	start := time.Now()
	_, err := Parse([]File{{Name: "bomb.yaml", Data: []byte(b.String())}})
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Parse took %v", d)
	}
	errs := configErrors(t, err)
	if len(errs) != 1 || !strings.Contains(errs[0].Msg, "config too large") {
		t.Errorf("got %v, want one config too large error", err)
	}
}

func TestParseTooManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("domain: d\n")
	for i := range 150 {
		fmt.Fprintf(&b, "bogus%d: 1\n", i)
	}
	_, err := Parse([]File{{Name: "many.yaml", Data: []byte(b.String())}})
	errs := configErrors(t, err)
	if len(errs) != maxErrors+1 {
		t.Fatalf("got %d errors, want %d", len(errs), maxErrors+1)
	}
	if last := errs[len(errs)-1]; last.Msg != "too many errors, stopping" || last.Line != maxErrors+2 {
		t.Errorf("last error = %q", last.Error())
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  Error
		want string
	}{
		{"full", Error{"file.yaml", 12, "descriptors[1].rate_limit.unit", `invalid unit "fortnight"`},
			`file.yaml:12: descriptors[1].rate_limit.unit: invalid unit "fortnight"`},
		{"no line", Error{"file.yaml", 0, "domain", "empty domain"}, "file.yaml: domain: empty domain"},
		{"no path", Error{"file.yaml", 3, "", "did not find expected key"}, "file.yaml:3: did not find expected key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		entries []string
		// want is the expected RequestsPerUnit, or -1 for no limit.
		want       int
		wantShadow bool
	}{
		{"zero requests", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 0}\n",
			[]string{"k", "v"}, 0, false},
		{"null requests is zero", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: ~}\n",
			[]string{"k", "v"}, 0, false},
		{"hex requests", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 0x10}\n",
			[]string{"k", "v"}, 16, false},
		{"max requests", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 4294967295}\n",
			[]string{"k", "v"}, 4294967295, false},
		{"yaml 1.1 bool", "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: yes\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
			[]string{"k", "v"}, 1, true},
		{"numeric value is text", "domain: d\ndescriptors:\n  - key: k\n    value: 0x10\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
			[]string{"k", "0x10"}, 1, false},
		{"null value is key-only", "domain: d\ndescriptors:\n  - key: k\n    value:\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
			[]string{"k", "anything"}, 1, false},
		{"null rate_limit is none", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n",
			[]string{"k", "v"}, -1, false},
		{"aliases", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: &rl {unit: second, requests_per_unit: 7}\n  - key: k\n    rate_limit: *rl\n",
			[]string{"k", "v"}, 7, false},
		// The reference accepts known keys anywhere and ignores the misplaced ones.
		{"misplaced known keys ignored", "domain: d\nunit: second\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, shadow_mode: true, key: x}\n",
			[]string{"k", "v"}, 1, false},
		{"no descriptors", "domain: d\n", []string{"k", "v"}, -1, false},
		{"null descriptors", "domain: d\ndescriptors:\n", []string{"k", "v"}, -1, false},
		{"second document ignored", "domain: d\n---\nbogus: 1\n", []string{"k", "v"}, -1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]File{{Name: "good.yaml", Data: []byte(tt.yaml)}})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !cfg.HasDomain("d") {
				t.Fatal("domain d missing")
			}
			got := cfg.Match("d", entries(tt.entries...))
			switch {
			case tt.want < 0 && got != nil:
				t.Errorf("Match() = %+v, want nil", got)
			case tt.want < 0:
			case got == nil:
				t.Errorf("Match() = nil, want %d", tt.want)
			case int(got.RequestsPerUnit) != tt.want || got.ShadowMode != tt.wantShadow:
				t.Errorf("Match() = %+v, want %d requests, shadow %v", got, tt.want, tt.wantShadow)
			}
		})
	}
}

func TestParseDomainAfterDescriptors(t *testing.T) {
	cfg, err := Parse([]File{{Name: "late.yaml", Data: []byte("descriptors:\n  - key: k\n    rate_limit: {unit: second}\ndomain: d\n")}})
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := cfg.Match("d", entries("k", "v")); got == nil || got.Rule != "d.k" {
		t.Errorf("Match() = %+v, want rule d.k", got)
	}
}

func TestParseNoFiles(t *testing.T) {
	cfg, err := Parse(nil)
	if err != nil {
		t.Fatalf("Parse(nil): %v", err)
	}
	if len(cfg.Domains()) != 0 || cfg.NumRules() != 0 || cfg.HasDomain("") {
		t.Errorf("Parse(nil) has domains %v, %d rules", cfg.Domains(), cfg.NumRules())
	}
}

func TestParseReference(t *testing.T) {
	cfg := loadTestdata(t, "testdata/reference")
	if got, want := cfg.Domains(), []string{"messaging", "mongo_cps"}; !slices.Equal(got, want) {
		t.Errorf("Domains() = %v, want %v", got, want)
	}
	if got, want := cfg.NumRules(), 6; got != want {
		t.Errorf("NumRules() = %d, want %d", got, want)
	}
	got := cfg.Match("mongo_cps", entries("database", "users"))
	want := RateLimit{RequestsPerUnit: 500, Unit: rlsv3.RateLimitResponse_RateLimit_SECOND, Window: 1, Rule: "mongo_cps.database_users"}
	if got == nil || !equalLimit(*got, want) {
		t.Errorf("Match() = %+v, want %+v", got, want)
	}
	// Domains returns a copy, so a caller cannot change the snapshot.
	cfg.Domains()[0] = "changed"
	if cfg.Domains()[0] != "messaging" {
		t.Error("Domains() exposes the Config's own slice")
	}
}

func TestUnits(t *testing.T) {
	tests := []struct {
		unit   string
		want   rlsv3.RateLimitResponse_RateLimit_Unit
		window int64
	}{
		{"second", rlsv3.RateLimitResponse_RateLimit_SECOND, 1},
		{"MINUTE", rlsv3.RateLimitResponse_RateLimit_MINUTE, 60},
		{"Hour", rlsv3.RateLimitResponse_RateLimit_HOUR, 3600},
		{"dAy", rlsv3.RateLimitResponse_RateLimit_DAY, 86400},
		{"week", rlsv3.RateLimitResponse_RateLimit_WEEK, 604800},
		{"month", rlsv3.RateLimitResponse_RateLimit_MONTH, 2592000},
		{"YEAR", rlsv3.RateLimitResponse_RateLimit_YEAR, 31536000},
	}
	for _, tt := range tests {
		t.Run(tt.unit, func(t *testing.T) {
			yaml := fmt.Sprintf("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: %s, requests_per_unit: 1}\n", tt.unit)
			cfg, err := Parse([]File{{Name: "u.yaml", Data: []byte(yaml)}})
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := cfg.Match("d", entries("k", "v"))
			if got == nil || got.Unit != tt.want || got.Window != tt.window {
				t.Fatalf("Match() = %+v, want unit %v window %d", got, tt.want, tt.window)
			}
			if w, ok := UnitWindow(tt.want); !ok || w != tt.window {
				t.Errorf("UnitWindow(%v) = %d, %v, want %d, true", tt.want, w, ok, tt.window)
			}
		})
	}
	for _, u := range []rlsv3.RateLimitResponse_RateLimit_Unit{rlsv3.RateLimitResponse_RateLimit_UNKNOWN, 99} {
		if w, ok := UnitWindow(u); ok {
			t.Errorf("UnitWindow(%v) = %d, true, want false", u, w)
		}
	}
}
