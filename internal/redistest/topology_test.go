package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running at the
// end: every goroutine must have an owner that stops it. Two rueidis goroutines are the
// exceptions, each a sleep that ends by itself and that Close does not stop
// (internal/redisclientcheck REPORT.md): a failed rueidis.NewClient leaves a delayed topology
// refresh sleeping for up to a second, and a Cluster client that dropped a node (the killed
// master below) closes that node's connections 5 s later.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}

// failoverBudget is how long a topology may take to replace a dead master: the issue asks
// clients to recover within 5 s, so the harness must fail over well within it.
const failoverBudget = 5 * time.Second

func TestSentinelReplicates(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{name: "plain"},
		{name: "password", opts: []Option{WithPassword("data pw"), WithSentinelPassword("sentinel-pw")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := StartSentinel(t, tc.opts...)
			ctx := context.Background()
			master := s.MasterAddr()
			if _, err := command(ctx, master, s.Password(), "SET", "k", "v"); err != nil {
				t.Fatalf("SET on the master: %v", err)
			}
			replicas := s.ReplicaAddrs()
			if len(replicas) != 1 {
				t.Fatalf("ReplicaAddrs() = %v, want one replica", replicas)
			}
			// Polled: WAIT would count only the writes of its own connection, and this SET
			// came over another one.
			err := poll(2*time.Second, 10*time.Millisecond, func() error {
				got, err := command(ctx, replicas[0], s.Password(), "GET", "k")
				if err == nil && got != "v" {
					return fmt.Errorf("GET k on the replica = %v, want %q", got, "v")
				}
				return err
			})
			if err != nil {
				t.Error(err)
			}

			// A client that only knows the sentinels finds the same master.
			fc := newRueidis(t, rueidis.ClientOption{
				InitAddress: s.SentinelAddrs(), Password: s.Password(),
				Sentinel: rueidis.SentinelOption{MasterSet: s.MasterName(), Password: s.SentinelPassword()},
			})
			if got, err := fc.Do(ctx, fc.B().Get().Key("k").Build()).ToString(); err != nil || got != "v" {
				t.Errorf("GET k through the sentinels = %q, %v, want %q", got, err, "v")
			}
			if s.Password() != "" {
				_, err := command(ctx, master, "", "GET", "k")
				if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
					t.Errorf("GET without a password = %v, want NOAUTH", err)
				}
			}
			want := "redis-sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/extauthz/2"
			if tc.name == "password" {
				want = "redis-sentinel://:data%20pw@" + strings.Join(s.SentinelAddrs(), ",") + "/extauthz/2?sentinel_password=sentinel-pw"
			}
			if got := s.URL(2); got != want {
				t.Errorf("URL(2) = %q, want %q", got, want)
			}
		})
	}
}

func TestSentinelFailover(t *testing.T) {
	var pids []int
	t.Run("kill the master", func(t *testing.T) {
		s := StartSentinel(t)
		pids = s.PIDs()
		ctx := context.Background()
		fc := newRueidis(t, rueidis.ClientOption{
			InitAddress: s.SentinelAddrs(),
			Sentinel:    rueidis.SentinelOption{MasterSet: s.MasterName(), TopologyRefreshInterval: time.Second},
			// One connection, so that WAIT below counts the SET's own connection.
			PipelineMultiplex: -1,
		})
		if err := fc.Do(ctx, fc.B().Set().Key("k").Value("before").Build()).Error(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if n, err := fc.Do(ctx, fc.B().Wait().Numreplicas(1).Timeout(2000).Build()).AsInt64(); err != nil || n != 1 {
			t.Fatalf("WAIT 1 = %d, %v, want 1 replica", n, err)
		}
		replica := s.ReplicaAddrs()[0]

		old := s.KillMaster()
		got, took, err := s.WaitFailover(2 * failoverBudget)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("sentinel failover: %s -> %s in %v", old, got, took.Round(time.Millisecond))
		if got != replica {
			t.Errorf("new master = %s, want the replica %s", got, replica)
		}
		if took > failoverBudget {
			t.Errorf("failover took %v, want at most %v", took, failoverBudget)
		}
		if got := s.MasterAddr(); got != replica {
			t.Errorf("MasterAddr() = %s, want %s", got, replica)
		}
		// The failover client follows the sentinels to the new master, with the data.
		err = poll(failoverBudget, 50*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			return fc.Do(ctx, fc.B().Set().Key("k2").Value("after").Build()).Error()
		})
		if err != nil {
			t.Fatalf("SET after the failover: %v", err)
		}
		if v, err := fc.Do(ctx, fc.B().Get().Key("k").Build()).ToString(); err != nil || v != "before" {
			t.Errorf("GET k after the failover = %q, %v, want %q", v, err, "before")
		}

		// A paused master keeps its port and answers nothing; cleanup must continue and
		// stop it all the same.
		paused := s.PauseMaster()
		if err := Ping(paused, 300*time.Millisecond); err == nil {
			t.Errorf("PING a paused master answered")
		}
		s.ResumeMaster()
		if err := Ping(paused, 2*time.Second); err != nil {
			t.Errorf("PING a resumed master: %v", err)
		}
		s.PauseMaster()
	})
	if pids != nil { // nil when the subtest skipped before starting anything
		assertGone(t, pids)
	}
}

func TestClusterKeys(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{name: "plain"},
		{name: "password", opts: []Option{WithPassword("cluster-pw")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := StartCluster(t, tc.opts...)
			ctx := context.Background()
			rdb := newClusterClient(t, c)
			const n = 1000
			slots := map[int64]bool{}
			for i := 0; i < n; i++ {
				key := "key:" + strconv.Itoa(i)
				if err := rdb.Do(ctx, rdb.B().Set().Key(key).Value(strconv.Itoa(i)).Build()).Error(); err != nil {
					t.Fatalf("SET %s: %v", key, err)
				}
				slot, err := rdb.Do(ctx, rdb.B().ClusterKeyslot().Key(key).Build()).AsInt64()
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
				}
				slots[slot] = true
			}
			if len(slots) < n*9/10 {
				t.Errorf("the keys fell in %d slots, want most of %d", len(slots), n)
			}
			masters := map[string]bool{}
			for i := 0; i < n; i++ {
				key := "key:" + strconv.Itoa(i)
				if got, err := rdb.Do(ctx, rdb.B().Get().Key(key).Build()).AsInt64(); err != nil || got != int64(i) {
					t.Fatalf("GET %s = %d, %v, want %d", key, got, err, i)
				}
				// Every tenth key is read straight from MasterFor(key): no MOVED on the way.
				if i%10 == 0 {
					m := c.MasterFor(key)
					masters[m] = true
					if got, err := command(ctx, m, c.Password(), "GET", key); err != nil || got != strconv.Itoa(i) {
						t.Fatalf("GET %s on MasterFor = %s: %v, %v, want %d", key, m, got, err, i)
					}
				}
			}
			if len(masters) != 3 {
				t.Errorf("the keys were served by %d masters, want 3", len(masters))
			}
			if got, want := c.URL(), "redis-cluster://"+strings.Join(c.Addrs(), ","); tc.name == "plain" && got != want {
				t.Errorf("URL() = %q, want %q", got, want)
			}
		})
	}
}

func TestClusterFailover(t *testing.T) {
	c := StartCluster(t)
	ctx := context.Background()
	rdb := newClusterClient(t, c)
	const key = "failover"
	if err := rdb.Do(ctx, rdb.B().Set().Key(key).Value("before").Build()).Error(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	old := c.MasterFor(key)
	// WAIT counts the replicas that have the writes of its own connection, so it goes over
	// the connection the SET took: rueidis's one connection to that node.
	node, ok := rdb.Nodes()[old]
	if !ok {
		t.Fatalf("the cluster client has no connection to %s", old)
	}
	if n, err := node.Do(ctx, node.B().Wait().Numreplicas(1).Timeout(2000).Build()).AsInt64(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 on %s = %d, %v, want 1 replica", old, n, err)
	}

	c.KillMaster(old)
	promoted, took, err := c.WaitFailover(old, 2*failoverBudget)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster failover: %s -> %s in %v", old, promoted, took.Round(time.Millisecond))
	if took > failoverBudget {
		t.Errorf("failover took %v, want at most %v", took, failoverBudget)
	}
	if got := c.MasterFor(key); got != promoted {
		t.Errorf("MasterFor(%q) = %s, want the promoted %s", key, got, promoted)
	}
	// A fresh client, seeded with the live nodes, sees the promoted replica serve the key with
	// its value. The client made before the kill is not asked: how a client recovers is the
	// client's business (internal/redisclientcheck), not the harness's.
	var seeds []string
	for _, a := range c.Addrs() {
		if a != old {
			seeds = append(seeds, a)
		}
	}
	var fresh rueidis.Client
	err = poll(failoverBudget, 50*time.Millisecond, func() error {
		if fresh == nil {
			// rueidis.NewClient reads the topology at once, and fails while a slot has no
			// master.
			rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: seeds, DisableCache: true, ClientSetInfo: []string{}})
			if err != nil {
				return err
			}
			fresh = rc
			t.Cleanup(rc.Close)
		}
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		v, err := fresh.Do(ctx, fresh.B().Get().Key(key).Build()).ToString()
		if err == nil && v != "before" {
			return fmt.Errorf("GET %s = %q, want %q", key, v, "before")
		}
		return err
	})
	if err != nil {
		t.Errorf("read through a new cluster client after the failover: %v", err)
	}
}

func TestClusterReshard(t *testing.T) {
	var pids []int
	t.Run("reshard", func(t *testing.T) {
		c := StartCluster(t)
		pids = c.PIDs()
		ctx := context.Background()
		rdb := newClusterClient(t, c)
		const n = 300
		for i := 0; i < n; i++ {
			if err := rdb.Do(ctx, rdb.B().Set().Key("key:"+strconv.Itoa(i)).Value(strconv.Itoa(i)).Build()).Error(); err != nil {
				t.Fatalf("SET: %v", err)
			}
		}
		masters := c.Masters()
		from, to := masters[0], masters[1]
		before, err := c.SlotCounts()
		if err != nil {
			t.Fatal(err)
		}
		began := time.Now()
		if err := c.Reshard(from, to, 100); err != nil {
			t.Fatal(err)
		}
		t.Logf("reshard of 100 slots with %d keys in the cluster took %v", n, time.Since(began).Round(time.Millisecond))
		after, err := c.SlotCounts()
		if err != nil {
			t.Fatal(err)
		}
		if after[from] != before[from]-100 || after[to] != before[to]+100 {
			t.Errorf("slots after the reshard: %s %d -> %d, %s %d -> %d, want 100 moved",
				from, before[from], after[from], to, before[to], after[to])
		}
		for i := 0; i < n; i++ {
			key := "key:" + strconv.Itoa(i)
			if got, err := rdb.Do(ctx, rdb.B().Get().Key(key).Build()).AsInt64(); err != nil || got != int64(i) {
				t.Fatalf("GET %s after the reshard = %d, %v, want %d", key, got, err, i)
			}
		}
		// Cleanup must continue a paused node and stop it like the rest.
		c.PauseNode(c.Addrs()[5])
	})
	if pids != nil { // nil when the subtest skipped before starting anything
		assertGone(t, pids)
	}
}

// assertGone fails the test when any of pids is still a redis process.
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no process ids to check")
	}
	for _, pid := range pids {
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Errorf("read the process listing of pid %d: %v", pid, err)
			continue
		}
		if strings.HasPrefix(string(comm), "redis") {
			t.Errorf("pid %d (%s) outlived its test", pid, strings.TrimSpace(string(comm)))
		}
	}
}

// newRueidis builds a rueidis client closed when the test ends, without client-side caching
// and without CLIENT SETINFO (which Redis 7.0 answers with an error).
func newRueidis(t *testing.T, o rueidis.ClientOption) rueidis.Client {
	t.Helper()
	o.DisableCache = true
	o.ClientSetInfo = []string{}
	rc, err := rueidis.NewClient(o)
	if err != nil {
		t.Fatalf("rueidis.NewClient: %v", err)
	}
	t.Cleanup(rc.Close)
	return rc
}

func newClusterClient(t *testing.T, c *Cluster) rueidis.Client {
	t.Helper()
	return newRueidis(t, rueidis.ClientOption{InitAddress: c.Addrs(), Password: c.Password()})
}
