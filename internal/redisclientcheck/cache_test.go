package redisclientcheck

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// Caching: a session or API-key read is served from the local cache, and a write by another
// client (a logout, a revoke) reaches it through RESP3 CLIENT TRACKING, with no server
// configuration at all.
const (
	cacheKey    = "{cache}:session"
	cacheHash   = "{cache}:apikey"
	cacheRounds = 20
	// invalidationBudget bounds the time from a write's reply to the first read that sees
	// it: the push arrives within a round trip on loopback; 100 ms leaves room for -race on
	// a shared box.
	invalidationBudget = 100 * time.Millisecond
	// maxCacheTimeouts is how many reads of one case may time out before the test fails: a
	// stray one is the box's, under -race beside other test binaries.
	maxCacheTimeouts = 3
)

// cachedReader reads through the client-side cache: the value ("" and false for no key) and
// whether the read was a hit by the client's own account.
type cachedReader func(ctx context.Context) (v string, found, hit bool, err error)

// cacheCase is one kind of cached read: how to read it, how another client writes it, and
// the command the server runs for a miss.
type cacheCase struct {
	name, cmd string
	read      func(c *redisconn.Client) cachedReader
	// write sets the value to v on the master, or deletes it when v is "", on a connection
	// of its own: another client, as the CLI or another replica is.
	write func(t *testing.T, master *redistest.Server, v string)
}

var cacheCases = []cacheCase{
	{name: "GetCached", cmd: "get",
		read: func(c *redisconn.Client) cachedReader {
			return func(ctx context.Context) (string, bool, bool, error) {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				v, hit, err := c.GetCached(ctx, cacheKey, time.Minute)
				if errors.Is(err, redisconn.ErrNil) {
					return "", false, hit, nil
				}
				return v, err == nil, hit, err
			}
		},
		write: func(t *testing.T, master *redistest.Server, v string) {
			if v == "" {
				do(t, master, "DEL", cacheKey)
				return
			}
			do(t, master, "SET", cacheKey, v)
		},
	},
	{name: "HGetAllCached", cmd: "hgetall",
		read: func(c *redisconn.Client) cachedReader {
			return func(ctx context.Context) (string, bool, bool, error) {
				ctx, cancel := context.WithTimeout(ctx, callTimeout)
				defer cancel()
				m, hit, err := c.HGetAllCached(ctx, cacheHash, time.Minute)
				if err != nil {
					return "", false, hit, err
				}
				if len(m) == 0 {
					return "", false, hit, nil
				}
				if len(m) != 2 || m["scope"] != "read" {
					return "", true, hit, fmt.Errorf("HGETALL %s = %v: want the fields written", cacheHash, maps.Clone(m))
				}
				return m["v"], true, hit, nil
			}
		},
		write: func(t *testing.T, master *redistest.Server, v string) {
			if v == "" {
				do(t, master, "DEL", cacheHash)
				return
			}
			do(t, master, "HSET", cacheHash, "v", v, "scope", "read")
		},
	},
}

// checkCache asserts the caching promise: the first read goes to the server and is no hit;
// then repeated reads are hits that the server never sees; a missing key is cached too; and
// every write by another client is seen by a read within invalidationBudget of its reply.
func checkCache(t *testing.T, name string, master *redistest.Server, cc cacheCase, read cachedReader) {
	t.Helper()
	ctx := context.Background()
	cc.write(t, master, "v0")
	// The first read of a cold client may have to dial the key's node and turn tracking on
	// there, all under the one call deadline: on a loaded box it may miss it, so it alone is
	// retried, a bounded number of times.
	v, _, hit, err := read(ctx)
	for try := 0; err != nil && redisconn.IsTimeout(err) && try < 20; try++ {
		v, _, hit, err = read(ctx)
	}
	if err != nil || v != "v0" || hit {
		t.Fatalf("%s: first read = %q, hit %v, %v; want v0 from the server", name, v, hit, err)
	}
	before := cmdCalls(t, master, cc.cmd)
	for i := range 100 {
		if v, _, hit, err := read(ctx); err != nil || v != "v0" || !hit {
			t.Fatalf("%s: read %d = %q, hit %v, %v; want v0 from the cache", name, i, v, hit, err)
		}
	}
	if after := cmdCalls(t, master, cc.cmd); after != before {
		t.Errorf("%s: the server ran %d %s for 100 cached reads, want 0", name, after-before, cc.cmd)
	}

	var delays dist
	var nextSaw, missHits, timeouts, slowRounds int
	stopCanaries := canaries(2)
	defer stopCanaries()
	for i := range cacheRounds {
		want := fmt.Sprintf("v%d", i+1)
		if i%4 == 3 {
			want = "" // a delete, as a logout or revoke is
		}
		cc.write(t, master, want)
		wrote := time.Now()
		timedOut := false
		for n := 0; ; n++ {
			v, found, _, err := read(ctx)
			if err != nil && redisconn.IsTimeout(err) && timeouts < maxCacheTimeouts {
				// A miss is a round trip, which a loaded box can push past 25 ms; the round's
				// delay then measures the box, not the invalidation, and is left out.
				timeouts++
				timedOut = true
				continue
			}
			if err != nil {
				t.Fatalf("%s: read after writing %q: %v", name, want, err)
			}
			if v == want && found == (want != "") {
				if timedOut {
					slowRounds++
				} else {
					delays = append(delays, time.Since(wrote))
				}
				if n == 0 {
					nextSaw++
				}
				break
			}
			if time.Since(wrote) > time.Second {
				t.Fatalf("%s: a read still returns %q (found %v) 1 s after %q was written", name, v, found, want)
			}
			time.Sleep(50 * time.Microsecond)
		}
		// Cache the new value again so that the next write has something to invalidate; a
		// missing key is cached as well (the contract: hit on the next read).
		for range 3 {
			v, found, hit, err := read(ctx)
			if err != nil && redisconn.IsTimeout(err) && timeouts < maxCacheTimeouts {
				timeouts++
				continue
			}
			if err != nil || v != want || found != (want != "") {
				t.Fatalf("%s: read again after %q: %q, found %v, %v", name, want, v, found, err)
			}
			if want == "" && hit {
				missHits++
			}
		}
	}
	canary := stopCanaries()
	// The box's stalls show in the canaries' overshoot of their 25 ms waits, and are allowed
	// on top of the budget (see deadlineP99).
	limit := invalidationBudget + max(0, canary.max()-callTimeout)
	t.Logf("%s: 100 reads served from the cache with no %s on the server; after %d writes by another client, the very next read saw the change %d times; invalidation delay p50 %s, max %s; %d of %d re-reads of a deleted key were hits; %d reads timed out (%d rounds left out of the delays); canaries' 25 ms waits max %s",
		name, cc.cmd, cacheRounds, nextSaw, ms(delays.pct(50)), ms(delays.max()), missHits, 3*cacheRounds/4, timeouts, slowRounds, ms(canary.max()))
	if delays.max() > limit {
		t.Errorf("%s: slowest invalidation %s, want at most %s", name, ms(delays.max()), ms(limit))
	}
	if missHits == 0 {
		t.Errorf("%s: no re-read of a deleted key was a cache hit: a missing key is not cached", name)
	}
}

// TestCache holds redisconn.Client's GetCached and HGetAllCached to the caching promise on
// one node, Sentinel and Cluster.
func TestCache(t *testing.T) {
	t.Parallel()
	topologies := []struct {
		name  string
		start func(t *testing.T) (url string, master func(key string) *redistest.Server)
	}{
		{name: "single", start: func(t *testing.T) (string, func(string) *redistest.Server) {
			s := redistest.Start(t)
			return s.URL(), func(string) *redistest.Server { return s }
		}},
		{name: "sentinel", start: func(t *testing.T) (string, func(string) *redistest.Server) {
			s := redistest.StartSentinel(t)
			m := s.Node(s.MasterAddr())
			return s.URL(0), func(string) *redistest.Server { return m }
		}},
		{name: "cluster", start: func(t *testing.T) (string, func(string) *redistest.Server) {
			c := redistest.StartCluster(t)
			return c.URL(), func(key string) *redistest.Server { return c.Node(c.MasterFor(key)) }
		}},
	}
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			url, master := tp.start(t)
			var invalidated atomic.Int64
			c := newClientWith(t, redisconn.Options{URL: url, OnInvalidation: func(keys int) { invalidated.Add(int64(keys)) }})
			for _, cc := range cacheCases {
				key := cacheKey
				if cc.cmd == "hgetall" {
					key = cacheHash
				}
				before := invalidated.Load()
				checkCache(t, tp.name+" "+cc.name, master(key), cc, cc.read(c))
				// Every write invalidated a cached key, so OnInvalidation (a metric) heard of
				// each. rueidis calls it just after it drops the entry, so the last one may
				// come a moment after the read that saw the write.
				got := invalidated.Load() - before
				for deadline := time.Now().Add(100 * time.Millisecond); got < cacheRounds && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
					got = invalidated.Load() - before
				}
				t.Logf("%s %s: OnInvalidation reported %d keys for %d writes", tp.name, cc.name, got, cacheRounds)
				if got < cacheRounds {
					t.Errorf("%s %s: OnInvalidation reported %d invalidated keys for %d writes to a cached key, want at least %d", tp.name, cc.name, got, cacheRounds, cacheRounds)
				}
			}
		})
	}
}

// TestCacheOff checks that with caching turned off (Options.CacheBytes < 0) the cached reads
// are plain reads: every one reaches the server and none is a hit.
func TestCacheOff(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	c := newClientWith(t, redisconn.Options{URL: s.URL(), CacheBytes: -1})
	cc := cacheCases[0]
	cc.write(t, s, "v0")
	read := cc.read(c)
	before := cmdCalls(t, s, cc.cmd)
	var hits int
	for range 20 {
		v, _, hit, err := read(context.Background())
		if err != nil || v != "v0" {
			t.Fatalf("read = %q, %v; want v0", v, err)
		}
		if hit {
			hits++
		}
	}
	ran := cmdCalls(t, s, cc.cmd) - before
	t.Logf("caching off: 20 GetCached reads, %d hits, %d GETs on the server", hits, ran)
	if hits != 0 || ran != 20 {
		t.Errorf("caching off: %d hits and %d GETs for 20 reads, want 0 and 20", hits, ran)
	}
}
