package config

import (
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
)

// The RLS request bounds decode from YAML, default to the service's own defaults, and are
// rejected outside the range the service can honour, with the range in the message.
func TestRateLimitBounds(t *testing.T) {
	c, err := Parse("bounds.yaml", []byte("ratelimit:\n  max_descriptors: 8\n  max_entries: 4\n  max_hits_addend: 1000\n"))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if r := c.RateLimit; r.MaxDescriptors != 8 || r.MaxEntries != 4 || r.MaxHitsAddend != 1000 {
		t.Fatalf("decoded %+v", r)
	}
	d := Default().RateLimit
	if d.MaxDescriptors != rls.DefaultMaxDescriptors || d.MaxEntries != rls.DefaultMaxEntries || d.MaxHitsAddend != rls.DefaultMaxHitsAddend {
		t.Fatalf("defaults %+v", d)
	}
	for _, tc := range []struct {
		name string
		edit func(r *RateLimit)
		path string // "" means valid
		say  string
	}{
		{"the largest", func(r *RateLimit) {
			r.MaxDescriptors, r.MaxEntries, r.MaxHitsAddend = rls.MaxDescriptorsCap, rls.MaxEntriesCap, ratelimit.MaxHits
		}, "", ""},
		{"the smallest", func(r *RateLimit) { r.MaxDescriptors, r.MaxEntries, r.MaxHitsAddend = 1, 1, 1 }, "", ""},
		{"no descriptors", func(r *RateLimit) { r.MaxDescriptors = 0 }, "ratelimit.max_descriptors", "from 1 to 256"},
		{"too many descriptors", func(r *RateLimit) { r.MaxDescriptors = rls.MaxDescriptorsCap + 1 }, "ratelimit.max_descriptors", "from 1 to 256"},
		{"negative entries", func(r *RateLimit) { r.MaxEntries = -1 }, "ratelimit.max_entries", "from 1 to 256"},
		{"too many entries", func(r *RateLimit) { r.MaxEntries = rls.MaxEntriesCap + 1 }, "ratelimit.max_entries", "from 1 to 256"},
		{"no hits", func(r *RateLimit) { r.MaxHitsAddend = 0 }, "ratelimit.max_hits_addend", "from 1 to 4503599627370496"},
		{"hits past 2^52", func(r *RateLimit) { r.MaxHitsAddend = ratelimit.MaxHits + 1 }, "ratelimit.max_hits_addend", "2^52"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c.RateLimit)
			ps := problems(t, c.Validate())
			if tc.path == "" {
				if len(ps) != 0 {
					t.Fatalf("problems %v, want none", ps)
				}
				return
			}
			if len(ps) != 1 || ps[0].Path != tc.path || !strings.Contains(ps[0].Msg, tc.say) {
				t.Fatalf("problems %v, want one at %s saying %q", ps, tc.path, tc.say)
			}
		})
	}
}
