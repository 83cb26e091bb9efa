package redisclientcheck

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
)

// recoveryBudget is the issue's: a client must be back within 5 s of a master's death.
const recoveryBudget = 5 * time.Second

// Load shape: four to eight keys at 75 calls/s each (300-600/s), one second before the
// event and enough after it to see recovery within the budget and a second of success.
const (
	perKeyRate  = 75
	beforeEvent = time.Second
	afterEvent  = recoveryBudget + time.Second
)

// checkRecovery asserts the promises of a failover run: no wrong reply, no call run twice,
// recovery within the budget followed by sustained success.
func checkRecovery(t *testing.T, name string, s loadStats, holds bool) {
	t.Helper()
	t.Logf("%s: %v", name, s)
	if s.firstErr != nil {
		t.Logf("%s: first failure: %v", name, s.firstErr)
	}
	if s.kinds[wrongReply] > 0 || s.kinds[jumped] > 0 {
		t.Errorf("%s: %d replies matched to the wrong command, %d calls ran twice: want none", name, s.kinds[wrongReply], s.kinds[jumped])
	}
	late := s.never || s.recovery > recoveryBudget || s.tail < 500*time.Millisecond
	switch {
	case late && holds:
		t.Errorf("%s: recovered %s after the kill with %s of success after: want within %s, then sustained", name, ms(s.recovery), ms(s.tail), recoveryBudget)
	case late:
		t.Logf("%s: does NOT recover within %s (known)", name, recoveryBudget)
	}
}

func TestFailoverSentinel(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		long  bool
		holds bool
		make  func(t *testing.T, s *redistest.Sentinel) ratelimit.Scripter
	}{
		{name: "rueidis", holds: true, make: func(t *testing.T, s *redistest.Sentinel) ratelimit.Scripter {
			return rueidisScripter{newRueidis(t, rueidis.ClientOption{
				InitAddress: s.SentinelAddrs(), Sentinel: rueidis.SentinelOption{MasterSet: s.MasterName()},
			})}
		}},
		{name: "go-redis", long: true, holds: true, make: func(t *testing.T, s *redistest.Sentinel) ratelimit.Scripter {
			return newFailoverClient(t, s)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && !long() {
				t.Skip("a measurement for REPORT.md: set EXTAUTHZ_CLIENTCHECK_LONG=1")
			}
			s := redistest.StartSentinel(t)
			rdb := tc.make(t, s)
			keys := []string{"{fo}:0", "{fo}:1", "{fo}:2", "{fo}:3"}
			warm(t, rdb, "fo")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []call)
			go func() { done <- runLoad(ctx, rdb, keys, perKeyRate) }()
			time.Sleep(beforeEvent)
			killed := time.Now()
			old := s.KillMaster()
			promoted, took, err := s.WaitFailover(2 * recoveryBudget)
			time.Sleep(time.Until(killed.Add(afterEvent)))
			cancel()
			calls := <-done
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("sentinels: %s -> %s in %s", old, promoted, ms(took))
			checkRecovery(t, tc.name, stats(calls, killed, nil), tc.holds)
			logOdd(t, calls, killed)
			checkExact(t, calls, getter(t, promoted))
		})
	}
}

// keysOn finds n hash-tagged keys that the cluster serves from master (on is true) or from
// any other master (on is false).
func keysOn(t *testing.T, c *redistest.Cluster, prefix, master string, on bool, n int) []string {
	t.Helper()
	var keys []string
	for i := 0; len(keys) < n; i++ {
		if i > 1000 {
			t.Fatalf("no %d keys on %s (on=%v) among 1000", n, master, on)
		}
		key := fmt.Sprintf("{%s%d}", prefix, i)
		if (c.MasterFor(key) == master) == on {
			keys = append(keys, key)
		}
	}
	return keys
}

func TestFailoverCluster(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		long  bool
		holds bool
		make  func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter
	}{
		{name: "rueidis", holds: true, make: func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter {
			return rueidisScripter{newRueidis(t, rueidis.ClientOption{InitAddress: c.Addrs()})}
		}},
		{name: "go-redis", long: true, make: func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter {
			return newClusterClient(t, c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && !long() {
				t.Skip("a measurement for REPORT.md: set EXTAUTHZ_CLIENTCHECK_LONG=1")
			}
			c := redistest.StartCluster(t)
			rdb := tc.make(t, c)
			target := c.MasterFor("{fo}")
			onTarget := keysOn(t, c, "fo", target, true, 4)
			elsewhere := keysOn(t, c, "fo", target, false, 2)
			for _, k := range append(append([]string{}, onTarget...), elsewhere...) {
				warm(t, rdb, k[1:len(k)-1])
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []call)
			go func() { done <- runLoad(ctx, rdb, append(onTarget, elsewhere...), perKeyRate) }()
			time.Sleep(beforeEvent)
			killed := time.Now()
			c.KillMaster(target)
			promoted, took, err := c.WaitFailover(target, 2*recoveryBudget)
			time.Sleep(time.Until(killed.Add(afterEvent)))
			cancel()
			calls := <-done
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("cluster: %s -> %s in %s", target, promoted, ms(took))
			set := func(keys []string) map[string]bool {
				m := map[string]bool{}
				for _, k := range keys {
					m[k] = true
				}
				return m
			}
			checkRecovery(t, tc.name+" (keys on the killed master)", stats(calls, killed, set(onTarget)), tc.holds)
			logOdd(t, calls, killed)
			other := stats(calls, killed, set(elsewhere))
			t.Logf("%s (keys on other masters): %v", tc.name, other)
			if other.firstErr != nil {
				// Redis Cluster refuses every slot while one is unserved (CLUSTERDOWN, with
				// the default cluster-require-full-coverage), until the replica takes over.
				t.Logf("%s (keys on other masters): first failure: %v", tc.name, other.firstErr)
			}
			if other.kinds[wrongReply] > 0 || other.kinds[jumped] > 0 {
				t.Errorf("keys on other masters: %d wrong replies, %d ran twice", other.kinds[wrongReply], other.kinds[jumped])
			}
			get := newClusterClient(t, c)
			checkExact(t, calls, func(key string) int64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				n, err := get.Get(ctx, key).Int64()
				if err != nil && err != redis.Nil {
					t.Fatalf("GET %s: %v", key, err)
				}
				return n
			})
		})
	}
}

// reshardSlots is how many slots TestReshard moves under load.
const reshardSlots = 200

func TestReshard(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		long bool
		make func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter
	}{
		{name: "rueidis", make: func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter {
			return rueidisScripter{newRueidis(t, rueidis.ClientOption{InitAddress: c.Addrs()})}
		}},
		{name: "go-redis", long: true, make: func(t *testing.T, c *redistest.Cluster) ratelimit.Scripter {
			return newClusterClient(t, c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.long && !long() {
				t.Skip("a measurement for REPORT.md: set EXTAUTHZ_CLIENTCHECK_LONG=1")
			}
			c := redistest.StartCluster(t)
			rdb := tc.make(t, c)
			masters := c.Masters()
			from, to := masters[0], masters[1]
			keys := movingKeys(t, c, from, 8)
			for _, k := range keys {
				warm(t, rdb, k[1:len(k)-1])
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan []call)
			go func() { done <- runLoad(ctx, rdb, keys, perKeyRate) }()
			time.Sleep(beforeEvent / 2)
			began := time.Now()
			err := c.Reshard(from, to, reshardSlots)
			took := time.Since(began)
			time.Sleep(time.Second)
			cancel()
			calls := <-done
			if err != nil {
				t.Fatal(err)
			}
			var moved int
			for _, k := range keys {
				if c.MasterFor(k) == to {
					moved++
				}
			}
			t.Logf("reshard of %d slots %s -> %s took %s; %d of the %d keys under load moved", reshardSlots, from, to, ms(took), moved, len(keys))
			if moved == 0 {
				t.Errorf("none of the keys under load moved: the test did not test a reshard")
			}
			st := stats(calls, began, nil)
			logOdd(t, calls, began)
			t.Logf("%s: %v", tc.name, st)
			if st.firstErr != nil {
				t.Logf("%s: first failure: %v", tc.name, st.firstErr)
			}
			if st.kinds[wrongReply] > 0 || st.kinds[jumped] > 0 || st.kinds[regressed] > 0 {
				t.Errorf("%s: %d wrong replies, %d ran twice, %d counts went back: want none", tc.name, st.kinds[wrongReply], st.kinds[jumped], st.kinds[regressed])
			}
			if st.failed*100 > st.calls {
				t.Errorf("%s: %d of %d calls failed during the reshard, want at most 1%%", tc.name, st.failed, st.calls)
			}
			get := newClusterClient(t, c)
			checkExact(t, calls, func(key string) int64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				n, err := get.Get(ctx, key).Int64()
				if err != nil && err != redis.Nil {
					t.Fatalf("GET %s: %v", key, err)
				}
				return n
			})
		})
	}
}

// movingKeys finds n hash-tagged keys, each in its own slot, among the first reshardSlots
// slots that from serves: redis-cli --cluster reshard moves a source's slots lowest first.
func movingKeys(t *testing.T, c *redistest.Cluster, from string, n int) []string {
	t.Helper()
	ctx := context.Background()
	node := redis.NewClient(&redis.Options{Addr: from, Protocol: 2, DisableIdentity: true})
	defer node.Close()
	ranges, err := node.ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	moving := map[int64]bool{}
	for slot := int64(0); slot < 16384 && len(moving) < reshardSlots; slot++ {
		for _, r := range ranges {
			if int64(r.Start) <= slot && slot <= int64(r.End) && len(r.Nodes) > 0 && r.Nodes[0].Addr == from {
				moving[slot] = true
			}
		}
	}
	var keys []string
	used := map[int64]bool{}
	for i := 0; len(keys) < n; i++ {
		if i > 20000 {
			t.Fatalf("found %d of %d keys in the moving slots", len(keys), n)
		}
		key := fmt.Sprintf("{rs%d}", i)
		slot, err := node.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT: %v", err)
		}
		if moving[slot] && !used[slot] {
			used[slot] = true
			keys = append(keys, key)
		}
	}
	return keys
}
