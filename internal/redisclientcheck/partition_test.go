package redisclientcheck

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redistest"
)

// partitionRun is how long TestPartitionCluster watches after the partition: long enough to
// see redisconn.Client recover by rueidis's dead-connection detection.
const partitionRun = 14 * time.Second

// Bounds of the partition when the client only finds the silent connection dead by rueidis's
// ConnWriteTimeout (10 s by default, from the last I/O on it): recovery measured from the
// partition, a stale read measured from the write on the promoted master.
const (
	partitionDetectRecovery = 15 * time.Second
	partitionDetectStale    = 12 * time.Second
	// partitionStale bounds a stale read when the client keeps the promise.
	partitionStale = 3 * time.Second
)

// TestPartitionCluster stops (SIGSTOP) a Cluster master under load instead of killing it: its
// connections stay open and silent, as in a network partition, and its replica is promoted.
// It also changes a session on the promoted master that the client had cached from the old
// one (a logout). Timed-out calls and cache hits tell the client nothing, and no
// invalidation comes from the stopped node: a client that only refreshes the slot map on
// MOVED or a broken connection keeps sending to the stopped master, and serving the old
// value, until rueidis finds the silent connection dead by its ConnWriteTimeout (10 s). With
// ClusterOption.ShardsRefreshInterval it learns the new slot map within that interval.
//
// On Sentinel the same partition is no problem: rueidis follows +switch-master at once.
// Checked by hand with redisconn.Client: the load recovered 2.30 s after PauseMaster, 11 ms
// after the promotion, and the changed session read as changed at once (0 stale reads).
func TestPartitionCluster(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		dial func(t *testing.T, c *redistest.Cluster) (scripter, func(ctx context.Context, key string) (string, bool, error))
		// holds says whether the case keeps the promises (recovery within recoveryBudget, no
		// stale read after partitionStale). One that does not is held to the detection
		// bounds, with its breach logged.
		holds bool
	}{
		{
			// Before redisconn set ShardsRefreshInterval (1 s) it recovered 12.2-12.8 s after
			// the partition (promotion at 2.4 s) and read the old session for 9.1-9.6 s after
			// the change.
			name:  "redisconn.Client",
			holds: true,
			dial: func(t *testing.T, c *redistest.Cluster) (scripter, func(ctx context.Context, key string) (string, bool, error)) {
				rc := newClient(t, c.URL())
				return rc, func(ctx context.Context, key string) (string, bool, error) {
					return rc.GetCached(ctx, key, time.Minute)
				}
			},
		},
		{
			name:  "rueidis (redisconn's options) ShardsRefreshInterval 1s",
			holds: true,
			dial: func(t *testing.T, c *redistest.Cluster) (scripter, func(ctx context.Context, key string) (string, bool, error)) {
				o := sidecarOptions(rueidis.ClientOption{InitAddress: c.Addrs()})
				o.ClusterOption.ShardsRefreshInterval = time.Second
				rc := newRueidis(t, o)
				return rueidisScripter{c: rc}, func(ctx context.Context, key string) (string, bool, error) {
					r := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), time.Minute)
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
			c, get := tc.dial(t, cl)
			target := cl.MasterFor("{fo}")
			keys := keysOn(t, cl, "fo", target, true, 4)
			for _, k := range keys {
				warm(t, c, k[1:len(k)-1])
			}
			session := keys[0] + ":session"
			read := func() (string, bool, error) {
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				defer cancel()
				return get(ctx, session)
			}
			do(t, cl.Node(target), "SET", session, "before")
			if r := do(t, cl.Node(target), "WAIT", "1", "2000"); r != ":1" {
				t.Fatalf("WAIT 1 = %q: the replica did not acknowledge", r)
			}
			for range 3 {
				_, _, _ = read()
			}
			if v, hit, err := read(); err != nil || v != "before" || !hit {
				t.Fatalf("session before the partition = %q, hit %v, %v; want a cache hit", v, hit, err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []call)
			go func() { done <- runLoad(ctx, c, slices.Clone(keys), perKeyRate) }()
			time.Sleep(beforeEvent)
			paused := time.Now()
			cl.PauseNode(target)
			promoted, took, err := cl.WaitFailover(target, 2*recoveryBudget)
			if err != nil {
				cancel()
				<-done
				t.Fatal(err)
			}
			do(t, cl.Node(promoted), "SET", session, "after")
			wrote := time.Now()
			// Read the session until it shows the change, while the load runs on.
			var stale, failed int
			var lastStale, seen time.Duration
			for seen == 0 && time.Since(paused) < partitionRun {
				v, _, err := read()
				switch {
				case err != nil:
					failed++
				case v == "before":
					stale++
					lastStale = time.Since(wrote)
				case v == "after":
					seen = time.Since(wrote)
				default:
					t.Errorf("session read %q", v)
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(time.Until(paused.Add(partitionRun)))
			cancel()
			calls := <-done
			cl.ResumeNode(target)

			st := stats(calls, paused, nil)
			t.Logf("%s: %s paused, %s promoted in %s", tc.name, target, promoted, ms(took))
			t.Logf("%s: %v", tc.name, st)
			if st.firstErr != nil {
				t.Logf("%s: first failure: %v", tc.name, st.firstErr)
			}
			logOdd(t, calls, paused)
			t.Logf("%s: the session changed on the promoted master read as the old value %d times, the last %s after the change; the new value first %s after it (0: never); %d reads failed",
				tc.name, stale, ms(lastStale), ms(seen), failed)
			if st.kinds[wrongReply] > 0 || st.kinds[jumped] > 0 {
				t.Errorf("%s: %d replies matched to the wrong command, %d calls ran twice: want none", tc.name, st.kinds[wrongReply], st.kinds[jumped])
			}
			checkExact(t, calls, clusterGet(t, cl))
			if seen == 0 {
				t.Errorf("%s: the session never read as changed within %s of the partition", tc.name, partitionRun)
			}

			recovered := !st.never && st.recovery <= recoveryBudget
			fresh := seen != 0 && lastStale <= partitionStale
			switch {
			case tc.holds && !recovered:
				t.Errorf("%s: recovered %s after the partition (never: %v), want within %s", tc.name, ms(st.recovery), st.never, recoveryBudget)
			case tc.holds && !fresh:
				t.Errorf("%s: the old session read %s after the change, want at most %s", tc.name, ms(lastStale), partitionStale)
			case tc.holds:
			case recovered && fresh:
				t.Logf("%s: now keeps the promises across a partition: make holds true", tc.name)
			default:
				t.Logf("%s: BREAKS the promises across a partition (known, see REPORT.md): recovered %s after it (5 s promised), the old session read up to %s after the change",
					tc.name, ms(st.recovery), ms(lastStale))
				if st.never || st.recovery > partitionDetectRecovery || lastStale > partitionDetectStale {
					t.Errorf("%s: recovered %s after the partition (never: %v), old session up to %s after the change: want at least rueidis's dead-connection detection, within %s and %s",
						tc.name, ms(st.recovery), st.never, ms(lastStale), partitionDetectRecovery, partitionDetectStale)
				}
			}
		})
	}
}
