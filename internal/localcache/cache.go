// Package localcache is a small in-process cache for values read from Redis (sessions, API key
// records) that stays correct under concurrent invalidation.
//
// A value may be served from the cache only while the cache is active, that is while something
// (the keyspace watcher) is guaranteed to call Invalidate for every change of the underlying
// Redis key. Every entry also has a lifetime, which bounds how stale a value can get if an
// invalidation is ever lost.
//
// The race between a read from Redis and a concurrent invalidation is closed with tickets: a
// caller takes a Ticket before it sends the read and hands it to Put with the result. Every
// Invalidate, Flush and activation bumps the generation of the entry's shard, and Put stores
// nothing when the generation moved since the ticket was taken. So a value read before a
// change can never be stored after the change's invalidation has been processed.
package localcache

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

const shardCount = 32

// Result is what Get found.
type Result uint8

// Get's results.
const (
	// Miss: nothing usable is cached (or the cache is inactive); read Redis.
	Miss Result = iota
	// Hit: a value is cached.
	Hit
	// NegativeHit: the key is known not to exist.
	NegativeHit
)

// Cache maps string keys to values of type V. The zero value is not usable; call New. It is
// safe for concurrent use.
type Cache[V any] struct {
	seed       maphash.Seed
	shards     [shardCount]shard[V]
	maxPer     int
	ttl, negTT time.Duration
	base       time.Time
	active     atomic.Bool
	// now returns the time since base on the monotonic clock; tests replace it.
	now func() time.Duration
	// observe is Options.Observe, or a no-op.
	observe func(string)
}

type shard[V any] struct {
	mu  sync.Mutex
	gen uint64
	m   map[string]entry[V]
}

type entry[V any] struct {
	v   V
	neg bool
	exp time.Duration // since base
}

// Options configures a Cache.
type Options struct {
	// TTL is the longest a value is served without asking Redis again.
	TTL time.Duration
	// NegativeTTL is the same for a key found missing; 0 disables negative entries.
	NegativeTTL time.Duration
	// MaxEntries bounds the number of entries (spread over shards, so approximate).
	MaxEntries int
	// Observe, when set, hears every Get's result: hit, negative_hit, miss (active cache, not
	// found in it) or bypass (inactive cache); and "evicted" for each live entry dropped to
	// stay under MaxEntries.
	Observe func(result string)
}

// New returns an inactive cache: Get misses and Put stores nothing until SetActive(true).
func New[V any](o Options) *Cache[V] {
	maxPer := o.MaxEntries / shardCount
	if maxPer < 1 {
		maxPer = 1
	}
	c := &Cache[V]{seed: maphash.MakeSeed(), maxPer: maxPer, ttl: o.TTL, negTT: o.NegativeTTL, base: time.Now(), observe: o.Observe}
	if c.observe == nil {
		c.observe = func(string) {}
	}
	c.now = func() time.Duration { return time.Since(c.base) }
	for i := range c.shards {
		c.shards[i].m = make(map[string]entry[V])
	}
	return c
}

func (c *Cache[V]) shard(key string) *shard[V] {
	return &c.shards[maphash.String(c.seed, key)%shardCount]
}

// Active reports whether the cache serves values.
func (c *Cache[V]) Active() bool { return c.active.Load() }

// SetActive switches the cache on or off. Either way every entry is dropped and every
// outstanding ticket is voided: on deactivation because invalidations may be lost from now on,
// on activation because invalidations may have been lost before.
func (c *Cache[V]) SetActive(on bool) {
	c.active.Store(on)
	c.Flush()
}

// Get returns the cached value for key.
func (c *Cache[V]) Get(key string) (V, Result) {
	var zero V
	if !c.active.Load() {
		c.observe("bypass")
		return zero, Miss
	}
	s := c.shard(key)
	now := c.now()
	s.mu.Lock()
	e, ok := s.m[key]
	if ok && now >= e.exp {
		delete(s.m, key)
		ok = false
	}
	s.mu.Unlock()
	switch {
	case !ok:
		c.observe("miss")
		return zero, Miss
	case e.neg:
		c.observe("negative_hit")
		return zero, NegativeHit
	}
	c.observe("hit")
	return e.v, Hit
}

// Ticket must be taken before reading key from Redis, and passed to Put with what was read.
func (c *Cache[V]) Ticket(key string) uint64 {
	s := c.shard(key)
	s.mu.Lock()
	g := s.gen
	s.mu.Unlock()
	return g
}

// Put stores v for key, read under ticket t, for at most the cache's TTL and at most maxLife
// when maxLife > 0 (a session's own expiry, say). It stores nothing when the cache is
// inactive or key's shard saw an invalidation since t was taken.
func (c *Cache[V]) Put(key string, t uint64, v V, maxLife time.Duration) {
	c.put(key, t, entry[V]{v: v}, c.ttl, maxLife)
}

// PutMissing records that key does not exist, for at most the negative TTL.
func (c *Cache[V]) PutMissing(key string, t uint64) {
	if c.negTT <= 0 {
		return
	}
	c.put(key, t, entry[V]{neg: true}, c.negTT, 0)
}

func (c *Cache[V]) put(key string, t uint64, e entry[V], life, maxLife time.Duration) {
	if maxLife > 0 && maxLife < life {
		life = maxLife
	}
	if life <= 0 || !c.active.Load() {
		return
	}
	now := c.now()
	e.exp = now + life
	s := c.shard(key)
	evicted := 0
	s.mu.Lock()
	if s.gen != t {
		s.mu.Unlock()
		return
	}
	if _, exists := s.m[key]; !exists && len(s.m) >= c.maxPer {
		evicted = s.makeRoom(now, c.maxPer)
	}
	s.m[key] = e
	s.mu.Unlock()
	for range evicted {
		c.observe("evicted")
	}
}

// makeRoom drops expired entries, and if that frees nothing, an eighth of the shard (Go's map
// order makes that a random eighth). It returns how many live entries went. s.mu is held.
func (s *shard[V]) makeRoom(now time.Duration, max int) int {
	for k, e := range s.m {
		if now >= e.exp {
			delete(s.m, k)
		}
	}
	if len(s.m) < max {
		return 0
	}
	n := max/8 + 1
	dropped := 0
	for k := range s.m {
		if dropped == n {
			break
		}
		delete(s.m, k)
		dropped++
	}
	return dropped
}

// Invalidate drops key and voids the tickets of its shard.
func (c *Cache[V]) Invalidate(key string) {
	s := c.shard(key)
	s.mu.Lock()
	s.gen++
	delete(s.m, key)
	s.mu.Unlock()
}

// Flush drops every entry and voids every ticket.
func (c *Cache[V]) Flush() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.gen++
		clear(s.m)
		s.mu.Unlock()
	}
}

// Len returns the number of entries, expired ones included until they are next looked at.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
