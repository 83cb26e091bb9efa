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

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running at the
// end: every goroutine must have an owner that stops it.
// go-redis's pool probes a dead address once a second in a goroutine that notices Close
// only after its next sleep, so a client that once dialled a killed node may leave it
// running for up to a second after Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9/internal/pool.(*ConnPool).tryDial"))
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
			master := newClient(t, s.MasterAddr(), s.Password())
			if err := master.Set(ctx, "k", "v", 0).Err(); err != nil {
				t.Fatalf("SET on the master: %v", err)
			}
			if n, err := master.Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n != 1 {
				t.Fatalf("WAIT 1 = %d, %v, want 1 replica", n, err)
			}
			replicas := s.ReplicaAddrs()
			if len(replicas) != 1 {
				t.Fatalf("ReplicaAddrs() = %v, want one replica", replicas)
			}
			if got, err := newClient(t, replicas[0], s.Password()).Get(ctx, "k").Result(); err != nil || got != "v" {
				t.Errorf("GET k on the replica = %q, %v, want %q", got, err, "v")
			}

			// A client that only knows the sentinels finds the same master.
			fc := redis.NewFailoverClient(&redis.FailoverOptions{
				MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs(),
				Password: s.Password(), SentinelPassword: s.SentinelPassword(),
			})
			defer fc.Close()
			if got, err := fc.Get(ctx, "k").Result(); err != nil || got != "v" {
				t.Errorf("GET k through the sentinels = %q, %v, want %q", got, err, "v")
			}
			if s.Password() != "" {
				err := newClient(t, s.MasterAddr(), "").Get(ctx, "k").Err()
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
		fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs()})
		defer fc.Close()
		if err := fc.Set(ctx, "k", "before", 0).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
		if n, err := fc.Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n != 1 {
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
			return fc.Set(ctx, "k2", "after", 0).Err()
		})
		if err != nil {
			t.Fatalf("SET after the failover: %v", err)
		}
		if v, err := fc.Get(ctx, "k").Result(); err != nil || v != "before" {
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
				if err := rdb.Set(ctx, key, i, 0).Err(); err != nil {
					t.Fatalf("SET %s: %v", key, err)
				}
				slot, err := rdb.ClusterKeySlot(ctx, key).Result()
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
				if got, err := rdb.Get(ctx, key).Int(); err != nil || got != i {
					t.Fatalf("GET %s = %d, %v, want %d", key, got, err, i)
				}
				// Every tenth key is read straight from MasterFor(key): no MOVED on the way.
				if i%10 == 0 {
					m := c.MasterFor(key)
					masters[m] = true
					if got, err := newClient(t, m, c.Password()).Get(ctx, key).Int(); err != nil || got != i {
						t.Fatalf("GET %s on MasterFor = %s: %d, %v, want %d", key, m, got, err, i)
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
	if err := rdb.Set(ctx, key, "before", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	old := c.MasterFor(key)
	if n, err := newClient(t, old, "").Do(ctx, "WAIT", 1, 2000).Int(); err != nil || n != 1 {
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
	// its value. The client made before the kill is not asked: go-redis v9.23's ClusterClient
	// kept dialling the dead master for over 30 s here, which is the client's business (issue
	// 11, section 1), not the harness's.
	var seeds []string
	for _, a := range c.Addrs() {
		if a != old {
			seeds = append(seeds, a)
		}
	}
	fresh := redis.NewClusterClient(&redis.ClusterOptions{Addrs: seeds})
	defer fresh.Close()
	err = poll(failoverBudget, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		v, err := fresh.Get(ctx, key).Result()
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
			if err := rdb.Set(ctx, "key:"+strconv.Itoa(i), i, 0).Err(); err != nil {
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
			if got, err := rdb.Get(ctx, key).Int(); err != nil || got != i {
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

func newClient(t *testing.T, addr, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, Password: password, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newClusterClient(t *testing.T, c *Cluster) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), Password: c.Password()})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}
