package rls

import (
	"sync"
	"time"
)

// overCache remembers counters already over their limit until their window ends, so that a
// client hammering past its limit costs no Redis round trip (envoyproxy/ratelimit's local
// cache does the same). It is right across replicas because the window is part of the counter
// key: once a window's count is over, it can only grow until the window ends, and then the key
// is a different one.
type overCache struct {
	mu  sync.RWMutex
	m   map[string]time.Time // counter key + window -> local time the window ends
	max int
	// nextSweep is the earliest a full cache is swept again, so that a cache full of live
	// entries costs one sweep per sweepEvery, not one per request that goes over a limit.
	nextSweep time.Time
	sweeps    int // for tests
}

// sweepEvery is the shortest time between two sweeps of a full cache.
const sweepEvery = time.Second

func newOverCache(max int) *overCache {
	if max <= 0 {
		return nil
	}
	return &overCache{m: make(map[string]time.Time), max: max}
}

// over reports whether key is known to be over its limit at local time now, and how long its
// window has left.
func (c *overCache) over(key string, now time.Time) (time.Duration, bool) {
	if c == nil {
		return 0, false
	}
	c.mu.RLock()
	end, ok := c.m[key]
	c.mu.RUnlock()
	if !ok || !now.Before(end) {
		return 0, false
	}
	return end.Sub(now), true
}

// add remembers key as over until end (local time). When full, expired entries are swept,
// at most once per sweepEvery; if it is still full, the key is not remembered (the next
// request asks Redis, as without a cache).
func (c *overCache) add(key string, end, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		if now.Before(c.nextSweep) {
			return
		}
		c.nextSweep = now.Add(sweepEvery)
		c.sweeps++
		for k, e := range c.m {
			if !now.Before(e) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= c.max {
			return
		}
	}
	c.m[key] = end
}

// len is the number of entries, for tests.
func (c *overCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}
