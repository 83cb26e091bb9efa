package redisclientcheck

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redistest"
)

// TestCacheAfterPartition stops (SIGSTOP) the Cluster master of a cached key instead of
// killing it (TestFailoverSentinel and TestFailoverCluster check a cached key across a
// kill): its connection stays open and silent, as in a network partition. The replica
// is promoted and the key changed there (a logout). Cached reads make no I/O, so nothing
// tells the client that the slot moved, and no invalidation can come from the stopped node:
// the client serves the old value until it finds the silent connection dead. rueidis finds
// that by its ConnWriteTimeout (10 s by default) or, when ClusterOption.ShardsRefreshInterval
// is set, by its periodic topology refresh, which routes the slot to the promoted node.
//
// On Sentinel the same partition leaves no stale read: rueidis follows +switch-master at
// once (checked by hand: 0 stale reads).
func TestCacheAfterPartition(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		dial func(t *testing.T, c *redistest.Cluster) func(ctx context.Context) (string, bool, error)
		// staleMax bounds how long after the write a read may still return the old value.
		staleMax time.Duration
	}{
		{
			// redisconn sets no ShardsRefreshInterval: stale for 9.5-9.8 s after the write,
			// about 12 s after the partition, with a one-minute cache TTL. The bound is
			// rueidis's dead-connection detection; with a refresh interval of 1 s it would be
			// the second case's.
			name:     "redisconn.Client",
			staleMax: 12 * time.Second,
			dial: func(t *testing.T, c *redistest.Cluster) func(ctx context.Context) (string, bool, error) {
				rc := newClient(t, c.URL())
				return func(ctx context.Context) (string, bool, error) { return rc.GetCached(ctx, cacheKey, time.Minute) }
			},
		},
		{
			name:     "rueidis ShardsRefreshInterval 1s",
			staleMax: 3 * time.Second,
			dial: func(t *testing.T, c *redistest.Cluster) func(ctx context.Context) (string, bool, error) {
				o := sidecarOptions(rueidis.ClientOption{InitAddress: c.Addrs()})
				o.ClusterOption.ShardsRefreshInterval = time.Second
				rc := newRueidis(t, o)
				return func(ctx context.Context) (string, bool, error) {
					r := rc.DoCache(ctx, rc.B().Get().Key(cacheKey).Cache(), time.Minute)
					v, err := r.ToString()
					return v, r.IsCacheHit(), err
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl := redistest.StartCluster(t)
			master := cl.MasterFor(cacheKey)
			get := tc.dial(t, cl)
			read := func() (string, bool, error) {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				defer cancel()
				return get(ctx)
			}
			do(t, cl.Node(master), "SET", cacheKey, "before")
			if r := do(t, cl.Node(master), "WAIT", "1", "2000"); r != ":1" {
				t.Fatalf("WAIT 1 = %q: the replica did not acknowledge", r)
			}
			var hit bool
			var err error
			for range 3 {
				_, hit, err = read()
			}
			if err != nil || !hit {
				t.Fatalf("third read before the partition: hit %v, %v; want a hit", hit, err)
			}
			cl.PauseNode(master)
			promoted, took, err := cl.WaitFailover(master, 2*recoveryBudget)
			if err != nil {
				t.Fatal(err)
			}
			do(t, cl.Node(promoted), "SET", cacheKey, "after")
			wrote := time.Now()
			var stale, failed int
			var lastStale time.Duration
			for {
				v, hit, err := read()
				switch {
				case err != nil:
					failed++
				case v == "before":
					stale++
					lastStale = time.Since(wrote)
				case v == "after":
					t.Logf("%s: promoted in %s; the first read of the new value came %s after the write (hit %v), after %d stale reads (the last %s after the write) and %d failed ones",
						tc.name, ms(took), ms(time.Since(wrote)), hit, stale, ms(lastStale), failed)
					if lastStale > tc.staleMax {
						t.Errorf("%s: the old value was read %s after the promoted master had the new one, want at most %s", tc.name, ms(lastStale), tc.staleMax)
					}
					return
				default:
					t.Fatalf("%s: read %q", tc.name, v)
				}
				if time.Since(wrote) > tc.staleMax+time.Second {
					t.Fatalf("%s: still %q (%d stale reads) %s after the write, want the new value within %s", tc.name, v, stale, ms(time.Since(wrote)), tc.staleMax)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
