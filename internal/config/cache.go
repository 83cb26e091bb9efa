package config

import "time"

// The defaults of the cache section.
const (
	DefaultCacheTTL         = 10 * time.Second
	DefaultCacheNegativeTTL = 2 * time.Second
	DefaultCacheMaxEntries  = 10000
	// DefaultCacheMaxBytes is cache.max_bytes: 16 MiB a connection holds tens of thousands of
	// sessions of a few hundred bytes, and a sidecar keeps one connection per Redis node.
	DefaultCacheMaxBytes = 16 << 20
)

// Cache configures the client-side cache of session and API key reads. Redis tells the
// sidecar when a cached key changes (RESP3 CLIENT TRACKING, on a single server, Sentinel and
// Cluster alike, with no server configuration), so a logout or a revoke is seen on the next
// request; TTL only bounds how long an unchanged entry is kept.
type Cache struct {
	// Enabled turns the cache on; it is on by default. The embedded store never caches.
	Enabled bool `yaml:"enabled"`
	// TTL is the longest an entry is kept without asking Redis (Redis's own TTL of the key
	// bounds it too).
	TTL Duration `yaml:"ttl"`
	// NegativeTTL was the lifetime of "not found" entries of the notification-based cache.
	// A missing key is now tracked like any other (creating it invalidates the entry) and kept
	// for TTL. Accepted and checked, otherwise unused.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// MaxEntries bounded each of the old caches by count. The cache is now bounded in bytes
	// (MaxBytes). Accepted and checked, otherwise unused.
	MaxEntries int `yaml:"max_entries"`
	// MaxBytes bounds the cache of each Redis connection (one per node and pipeline slot).
	MaxBytes int `yaml:"max_bytes"`
	// RequireNotifications kept the old cache off while Redis sent no keyspace notifications.
	// Invalidation no longer depends on server configuration, and a lost tracking connection
	// flushes the cache; accepted, otherwise unused.
	RequireNotifications bool `yaml:"require_notifications"`
}

func defaultCache() Cache {
	return Cache{
		Enabled:              true,
		TTL:                  Duration(DefaultCacheTTL),
		NegativeTTL:          Duration(DefaultCacheNegativeTTL),
		MaxEntries:           DefaultCacheMaxEntries,
		MaxBytes:             DefaultCacheMaxBytes,
		RequireNotifications: true,
	}
}

func (k *checker) cacheSection() {
	c := k.c.Cache
	if !c.Enabled {
		return
	}
	if c.TTL <= 0 {
		k.fail("cache.ttl", c.TTL, "must be > 0, got %s (set cache.enabled: false to turn the cache off)", c.TTL)
	}
	if c.NegativeTTL < 0 {
		k.fail("cache.negative_ttl", c.NegativeTTL, "must be >= 0, got %s", c.NegativeTTL)
	}
	if c.NegativeTTL > c.TTL {
		k.fail("cache.negative_ttl", c.NegativeTTL, "must not exceed cache.ttl (%s)", c.TTL)
	}
	if c.MaxEntries < 1 {
		k.fail("cache.max_entries", c.MaxEntries, "must be >= 1, got %d", c.MaxEntries)
	}
	if c.MaxBytes < 1<<20 {
		k.fail("cache.max_bytes", c.MaxBytes, "must be >= 1048576 (1 MiB), got %d", c.MaxBytes)
	}
}
