package config

import (
	"strings"
	"testing"
	"time"
)

func TestCacheDefaultsAndChecks(t *testing.T) {
	c := Default()
	if !c.Cache.Enabled || c.Cache.TTL.D() != 10*time.Second || c.Cache.NegativeTTL.D() != 2*time.Second ||
		c.Cache.MaxEntries != 10000 || !c.Cache.RequireNotifications {
		t.Fatalf("cache defaults = %+v", c.Cache)
	}
	tests := []struct {
		name string
		edit func(*Cache)
		want []string
	}{
		{"off ignores the rest", func(k *Cache) { *k = Cache{} }, nil},
		{"no negatives", func(k *Cache) { k.NegativeTTL = 0 }, nil},
		{"all wrong", func(k *Cache) { k.TTL, k.NegativeTTL, k.MaxEntries, k.MaxBytes = 0, -1, 0, 1<<20-1 },
			[]string{"cache.ttl", "cache.negative_ttl", "cache.max_entries", "cache.max_bytes"}},
		{"negative longer than ttl", func(k *Cache) { k.NegativeTTL = Duration(time.Hour) }, []string{"cache.negative_ttl"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(&c.Cache)
			var got []string
			for _, p := range problems(t, c.Validate()) {
				got = append(got, p.Path)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("problems at %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCacheFromYAML(t *testing.T) {
	c, err := Parse("x.yaml", []byte("cache:\n  ttl: 3s\n  negative_ttl: 0s\n  require_notifications: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Cache.Enabled || c.Cache.TTL.D() != 3*time.Second || c.Cache.NegativeTTL != 0 || c.Cache.RequireNotifications {
		t.Fatalf("cache = %+v", c.Cache)
	}
	if _, err := Parse("x.yaml", []byte("cache:\n  tll: 3s\n")); err == nil || !strings.Contains(err.Error(), "cache.tll") {
		t.Fatalf("unknown key: %v", err)
	}
}
