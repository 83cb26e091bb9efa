package redisclientcheck

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redistest"
)

// Caching: a session or API-key read is served from the local cache, and a write by another
// client (a logout, a revoke) reaches it through RESP3 CLIENT TRACKING, with no server
// configuration at all.
const (
	cacheKey    = "{cache}:session"
	cacheRounds = 20
	// invalidationBudget bounds the time from a write's reply to the first read that sees
	// it: the push arrives within a round trip on loopback; 100 ms leaves room for -race on
	// a shared box.
	invalidationBudget = 100 * time.Millisecond
)

// getCalls is how many GETs the node at addr has run (INFO commandstats), to tell a cache
// hit from a round trip by the server's own account.
func getCalls(t *testing.T, addr string) int64 {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 5 * time.Second, MaxRetries: -1, Protocol: 2, DisableIdentity: true})
	defer c.Close()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats on %s: %v", addr, err)
	}
	stat := infoField(info, "cmdstat_get") // calls=N,usec=...
	if stat == "" {
		return 0
	}
	v, _, _ := strings.Cut(strings.TrimPrefix(stat, "calls="), ",")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("cmdstat_get %q: %v", stat, err)
	}
	return n
}

// cachedReader reads cacheKey through a client-side cache: the value ("" and false for no
// key) and whether the read was a hit by the client's own account.
type cachedReader func(ctx context.Context) (v string, found, hit bool, err error)

// writer sets cacheKey to v, or deletes it when v is "".
type writer func(ctx context.Context, v string) error

// checkCache asserts the caching promise: repeated reads are hits that the server never
// sees, and every write is seen by a read within invalidationBudget of its reply.
func checkCache(t *testing.T, name, master string, read cachedReader, write writer) {
	t.Helper()
	ctx := context.Background()
	if err := write(ctx, "v0"); err != nil {
		t.Fatalf("write: %v", err)
	}
	// The first read of a cold client also discovers the topology, dials and turns tracking on,
	// all under the one call deadline: on a loaded box it may miss it, so it alone may be
	// retried, a bounded number of times.
	v, _, hit, err := read(ctx)
	for try := 0; err != nil && errors.Is(err, context.DeadlineExceeded) && try < 20; try++ {
		v, _, hit, err = read(ctx)
	}
	if err != nil || v != "v0" || hit {
		t.Fatalf("first read = %q, hit %v, %v; want v0 from the server", v, hit, err)
	}
	before := getCalls(t, master)
	for i := range 100 {
		if v, _, hit, err := read(ctx); err != nil || v != "v0" || !hit {
			t.Fatalf("read %d = %q, hit %v, %v; want v0 from the cache", i, v, hit, err)
		}
	}
	if after := getCalls(t, master); after != before {
		t.Errorf("%s: the server ran %d GETs for 100 cached reads, want 0", name, after-before)
	}

	var delays dist
	var nextSaw int
	for i := range cacheRounds {
		want := fmt.Sprintf("v%d", i+1)
		if i%4 == 3 {
			want = "" // a delete, as a logout or revoke is
		}
		if err := write(ctx, want); err != nil {
			t.Fatalf("write %q: %v", want, err)
		}
		wrote := time.Now()
		for n := 0; ; n++ {
			v, found, _, err := read(ctx)
			if err != nil {
				t.Fatalf("read after writing %q: %v", want, err)
			}
			if v == want && found == (want != "") {
				delays = append(delays, time.Since(wrote))
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
		// Cache the new value again so that the next write has something to invalidate.
		for range 3 {
			_, _, _, _ = read(ctx)
		}
	}
	t.Logf("%s: 100 reads served from the cache with no GET on the server; after %d writes by another client, the very next read saw the change %d times; invalidation delay p50 %s, max %s",
		name, cacheRounds, nextSaw, ms(delays.pct(50)), ms(delays.max()))
	if delays.max() > invalidationBudget {
		t.Errorf("%s: slowest invalidation %s, want at most %s", name, ms(delays.max()), ms(invalidationBudget))
	}
}

// rueidisReader reads through DoCache with a one-minute TTL, as a session lookup would.
func rueidisReader(c rueidis.Client) cachedReader {
	return func(ctx context.Context) (string, bool, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		r := c.DoCache(ctx, c.B().Get().Key(cacheKey).Cache(), time.Minute)
		v, err := r.ToString()
		if rueidis.IsRedisNil(err) {
			return "", false, r.IsCacheHit(), nil
		}
		return v, err == nil, r.IsCacheHit(), err
	}
}

func rueidisWriter(c rueidis.Client) writer {
	return func(ctx context.Context, v string) error {
		if v == "" {
			return c.Do(ctx, c.B().Del().Key(cacheKey).Build()).Error()
		}
		return c.Do(ctx, c.B().Set().Key(cacheKey).Value(v).Build()).Error()
	}
}

func TestCacheRueidis(t *testing.T) {
	topologies := []struct {
		name  string
		start func(t *testing.T) (opt rueidis.ClientOption, master string)
	}{
		{name: "single", start: func(t *testing.T) (rueidis.ClientOption, string) {
			s := redistest.Start(t)
			return rueidis.ClientOption{InitAddress: []string{s.Addr()}}, s.Addr()
		}},
		{name: "sentinel", start: func(t *testing.T) (rueidis.ClientOption, string) {
			s := redistest.StartSentinel(t)
			return rueidis.ClientOption{InitAddress: s.SentinelAddrs(), Sentinel: rueidis.SentinelOption{MasterSet: s.MasterName()}}, s.MasterAddr()
		}},
		{name: "cluster", start: func(t *testing.T) (rueidis.ClientOption, string) {
			c := redistest.StartCluster(t)
			return rueidis.ClientOption{InitAddress: c.Addrs()}, c.MasterFor(cacheKey)
		}},
	}
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			opt, master := tp.start(t)
			reader := newRueidis(t, opt)
			opt.DisableCache = true
			other := newRueidis(t, opt)
			checkCache(t, "rueidis "+tp.name, master, rueidisReader(reader), rueidisWriter(other))
		})
	}
}

// TestCacheGoRedis checks go-redis's experimental client-side cache where it has one: a
// standalone client. Its ClusterClient and FailoverClient take no cache option; on Cluster a
// cache set on each node's Options through ClusterOptions.NewClient is tried too, which
// FailoverOptions has no hook for.
func TestCacheGoRedis(t *testing.T) {
	cfg := func() *redis.ClientSideCacheConfig { return &redis.ClientSideCacheConfig{} }
	t.Run("single", func(t *testing.T) {
		s := redistest.Start(t)
		c := newGoRedis(t, &redis.Options{Addr: s.Addr(), Protocol: 3, ClientSideCacheConfig: cfg()})
		other := newGoRedis(t, goRedisOptions(s.Addr()))
		checkCache(t, "go-redis single", s.Addr(), goRedisReader(c, c.CSCStats), goRedisWriter(other))
	})
	t.Run("cluster via NewClient", func(t *testing.T) {
		cl := redistest.StartCluster(t)
		var mu sync.Mutex
		var nodes []*redis.Client
		rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), Protocol: 3, NewClient: func(o *redis.Options) *redis.Client {
			o.ClientSideCacheConfig = cfg()
			c := redis.NewClient(o)
			mu.Lock()
			nodes = append(nodes, c)
			mu.Unlock()
			return c
		}})
		t.Cleanup(func() { _ = rdb.Close() })
		stats := func() redis.CSCStats {
			mu.Lock()
			defer mu.Unlock()
			var sum redis.CSCStats
			for _, n := range nodes {
				sum.Hits += n.CSCStats().Hits
			}
			return sum
		}
		checkCache(t, "go-redis cluster (a cache per node through NewClient)", cl.MasterFor(cacheKey),
			goRedisReader(rdb, stats), goRedisWriter(newClusterClient(t, cl)))
	})
	// The option structs say where the cache can be turned on at all.
	for _, o := range []any{redis.Options{}, redis.UniversalOptions{}, redis.FailoverOptions{}, redis.ClusterOptions{}} {
		_, ok := reflect.TypeOf(o).FieldByName("ClientSideCacheConfig")
		t.Logf("go-redis %T has ClientSideCacheConfig: %v", o, ok)
	}
	if _, ok := reflect.TypeOf(redis.FailoverOptions{}).FieldByName("ClientSideCacheConfig"); ok {
		t.Errorf("go-redis FailoverOptions now has ClientSideCacheConfig: test the cache on Sentinel")
	}
}

func goRedisReader(c redis.Cmdable, stats func() redis.CSCStats) cachedReader {
	return func(ctx context.Context) (string, bool, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		hits := stats().Hits
		v, err := c.Get(ctx, cacheKey).Result()
		hit := stats().Hits > hits
		if errors.Is(err, redis.Nil) {
			return "", false, hit, nil
		}
		return v, err == nil, hit, err
	}
}

func goRedisWriter(c redis.Cmdable) writer {
	return func(ctx context.Context, v string) error {
		if v == "" {
			return c.Del(ctx, cacheKey).Err()
		}
		return c.Set(ctx, cacheKey, v, 0).Err()
	}
}
