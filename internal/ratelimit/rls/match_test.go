package rls

import (
	"slices"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// entries builds request entries from key, value pairs.
func entries(kv ...string) []*ratelimitv3.RateLimitDescriptor_Entry {
	out := make([]*ratelimitv3.RateLimitDescriptor_Entry, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return out
}

func loadTestdata(t testing.TB, dir string) *Config {
	t.Helper()
	cfg, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir(%q): %v", dir, err)
	}
	return cfg
}

func TestMatch(t *testing.T) {
	cfg := loadTestdata(t, "testdata/match")
	tests := []struct {
		name    string
		domain  string
		entries []*ratelimitv3.RateLimitDescriptor_Entry
		// want is the expected RequestsPerUnit, or -1 for no limit.
		want     int
		wantRule string
	}{
		{"exact beats wildcard", "d", entries("path", "/api/health"), 1, "d.path_/api/health"},
		{"wildcard prefix", "d", entries("path", "/api/users"), 2, "d.path_/api/*"},
		{"wildcard matches empty run", "d", entries("path", "/api/"), 2, "d.path_/api/*"},
		{"first matching pattern wins", "d", entries("path", "/about"), 4, "d.path_/a*"},
		{"wildcard beats default", "d", entries("path", "/apix"), 4, "d.path_/a*"},
		{"key-only default", "d", entries("path", "/other"), 5, "d.path"},
		{"default matches empty value", "d", entries("path", ""), 5, "d.path"},
		{"wildcard suffix", "d", entries("file", "img.png"), 6, "d.file_*.png"},
		{"wildcard suffix only", "d", entries("file", ".png"), 6, "d.file_*.png"},
		{"wildcard middle", "d", entries("file", "aXbYc"), 7, "d.file_a*b*c"},
		{"wildcard multiple empty runs", "d", entries("file", "abc"), 7, "d.file_a*b*c"},
		{"wildcard multiple repeated parts", "d", entries("file", "abbcbc"), 7, "d.file_a*b*c"},
		{"wildcard middle missing part", "d", entries("file", "ac"), -1, ""},
		{"wildcard parts out of order", "d", entries("file", "acb"), -1, ""},
		{"wildcard prefix and suffix do not overlap", "d", entries("file", "png"), -1, ""},
		{"lone star matches anything", "d", entries("any", "x"), 8, "d.any_*"},
		{"lone star matches empty", "d", entries("any", ""), 8, "d.any_*"},
		{"literal star looked up exactly first", "d", entries("lit", "ab*"), 13, "d.lit_ab*"},
		{"literal star falls back to patterns", "d", entries("lit", "abc"), 12, "d.lit_a*"},
		{"level without rate_limit", "d", entries("tenant", "acme"), -1, ""},
		{"nested exact", "d", entries("tenant", "acme", "plan", "gold"), 9, "d.tenant_acme.plan_gold"},
		{"nested default", "d", entries("tenant", "acme", "plan", "silver"), 10, "d.tenant_acme.plan"},
		{"three levels", "d", entries("tenant", "acme", "plan", "gold", "user", "u1"), 0, "d.tenant_acme.plan_gold.user"},
		{"deeper than config", "d", entries("tenant", "acme", "plan", "gold", "user", "u1", "x", "y"), -1, ""},
		{"deeper than a leaf", "d", entries("path", "/other", "user", "u1"), -1, ""},
		{"exact leaf does not fall through to wildcard children", "d", entries("path", "/api/health", "user", "u1"), -1, ""},
		{"nested under wildcard", "d", entries("path", "/api/x", "user", "u1"), 3, "d.path_/api/*.user"},
		{"nested wildcards under default", "d", entries("tenant", "other", "region", "eu-west", "user", "u1"), 11, "d.tenant.region_eu-*.user_*"},
		{"nested wildcard miss", "d", entries("tenant", "other", "region", "us-east", "user", "u1"), -1, ""},
		{"exact match does not backtrack to default", "d", entries("tenant", "acme", "region", "eu-west", "user", "u1"), -1, ""},
		{"zero limit", "d", entries("leaf", "v"), 0, "d.leaf_v"},
		{"empty nested list is a leaf", "d", entries("leaf", "v", "x", "y"), -1, ""},
		{"unknown key", "d", entries("nope", "x"), -1, ""},
		{"unknown domain", "nope", entries("path", "/other"), -1, ""},
		{"no entries", "d", nil, -1, ""},
		{"nil entry", "d", []*ratelimitv3.RateLimitDescriptor_Entry{nil}, -1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cfg.Match(tt.domain, tt.entries)
			if tt.want < 0 {
				if got != nil {
					t.Fatalf("Match() = %+v, want nil", got)
				}
				return
			}
			if got == nil {
				t.Fatalf("Match() = nil, want %d", tt.want)
			}
			if int(got.RequestsPerUnit) != tt.want {
				t.Errorf("RequestsPerUnit = %d, want %d", got.RequestsPerUnit, tt.want)
			}
			if got.Rule != tt.wantRule {
				t.Errorf("Rule = %q, want %q", got.Rule, tt.wantRule)
			}
		})
	}
}

func TestMatchCarriesFields(t *testing.T) {
	cfg := loadTestdata(t, "testdata/match")
	tests := []struct {
		name    string
		entries []*ratelimitv3.RateLimitDescriptor_Entry
		want    RateLimit
	}{
		{
			name:    "name replaces shadow detailed",
			entries: entries("remote_address", "10.0.0.1"),
			want: RateLimit{
				RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_MINUTE, Window: 60,
				Name: "ip", Replaces: []string{"other", "third"}, ShadowMode: true, DetailedMetric: true,
				Rule: "d.remote_address",
			},
		},
		{
			name:    "unlimited",
			entries: entries("tenant", "acme", "plan", "gold", "user", "u1"),
			want:    RateLimit{Unlimited: true, Rule: "d.tenant_acme.plan_gold.user"},
		},
		{
			name:    "plain",
			entries: entries("tenant", "acme", "plan", "silver"),
			want: RateLimit{
				RequestsPerUnit: 10, Unit: rlsv3.RateLimitResponse_RateLimit_MONTH, Window: 2592000,
				Rule: "d.tenant_acme.plan",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := cfg.Match("d", tt.entries)
			if got == nil {
				t.Fatal("Match() = nil")
			}
			if !equalLimit(*got, tt.want) {
				t.Errorf("Match() = %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func equalLimit(a, b RateLimit) bool {
	return a.RequestsPerUnit == b.RequestsPerUnit && a.Unit == b.Unit && a.Window == b.Window &&
		a.Unlimited == b.Unlimited && a.Name == b.Name && slices.Equal(a.Replaces, b.Replaces) &&
		a.ShadowMode == b.ShadowMode && a.DetailedMetric == b.DetailedMetric && a.Rule == b.Rule
}

func TestMatchNilConfig(t *testing.T) {
	var cfg *Config
	if got := cfg.Match("d", entries("k", "v")); got != nil {
		t.Errorf("Match() = %+v, want nil", got)
	}
	if cfg.HasDomain("d") || cfg.Domains() != nil || cfg.NumRules() != 0 {
		t.Error("nil Config has domains or rules")
	}
}

func TestPattern(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		{"/api/*", "/api/", true},
		{"/api/*", "/api/v1/x", true},
		{"/api/*", "/ap", false},
		{"*.png", "a.png", true},
		{"*.png", "a.png.jpg", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "a-b-b-c", true},
		{"a*b*c", "a-c-b", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"**", "", true},
		{"a**b", "ab", true},
		{"*x*", "yyxyy", true},
		{"*x*", "yyyy", false},
		{"ab*ba", "aba", false},
	}
	for _, tt := range tests {
		p := compilePattern(tt.pattern)
		if got := p.match(tt.value); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

// TestMatchDoesNotAllocate guards the hot path: matching runs for every descriptor of every
// request.
func TestMatchDoesNotAllocate(t *testing.T) {
	cfg := loadTestdata(t, "testdata/match")
	for _, e := range [][]*ratelimitv3.RateLimitDescriptor_Entry{
		entries("path", "/api/health"),
		entries("file", "aXbYc"),
		entries("tenant", "other", "region", "eu-west", "user", "u1"),
		entries("nope", "x"),
	} {
		if n := testing.AllocsPerRun(100, func() { cfg.Match("d", e) }); n != 0 {
			t.Errorf("Match(%v) allocates %v times", e, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	cfg := loadTestdata(b, "testdata/match")
	cases := []struct {
		name    string
		entries []*ratelimitv3.RateLimitDescriptor_Entry
	}{
		{"exact", entries("path", "/api/health")},
		{"wildcard", entries("file", "aXbYc")},
		{"default", entries("path", "/other")},
		{"nested", entries("tenant", "other", "region", "eu-west", "user", "u1")},
		{"miss", entries("nope", "x")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				cfg.Match("d", c.entries)
			}
		})
	}
}
