package config

import "time"

// The defaults of the cache section.
const (
	DefaultCacheTTL         = 10 * time.Second
	DefaultCacheNegativeTTL = 2 * time.Second
	DefaultCacheMaxEntries  = 10000
)

// Cache configures the local cache of sessions and API key records. Entries are served only
// while Redis keyspace notifications are seen to flow (a change of a cached key is then heard
// at once), unless RequireNotifications is false.
type Cache struct {
	// Enabled turns the cache on; it is on by default, and stays inactive (every decision
	// reads Redis) until keyspace notifications are confirmed.
	Enabled bool `yaml:"enabled"`
	// TTL is the longest an entry is served without asking Redis: the bound on staleness if
	// a notification is ever lost, or the only bound when notifications are not required.
	TTL Duration `yaml:"ttl"`
	// NegativeTTL is the same for sessions and keys found missing; 0 turns negative entries
	// off.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// MaxEntries bounds each of the two caches. A session entry takes a few hundred bytes (its
	// subject, roles and headers), so the default keeps the cache to a few MiB of a sidecar's
	// memory limit.
	MaxEntries int `yaml:"max_entries"`
	// RequireNotifications keeps the cache off while Redis sends no keyspace notifications.
	// Set it to false to cache anyway and accept that a logout or revoke may take up to TTL
	// to be seen.
	RequireNotifications bool `yaml:"require_notifications"`
}

func defaultCache() Cache {
	return Cache{
		Enabled:              true,
		TTL:                  Duration(DefaultCacheTTL),
		NegativeTTL:          Duration(DefaultCacheNegativeTTL),
		MaxEntries:           DefaultCacheMaxEntries,
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
}
