package redistest

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a Redis Cluster on loopback ports: three masters, each with one replica, with a
// one-second node timeout so that a replica takes over a dead master within a few seconds.
type Cluster struct {
	t        testing.TB
	password string
	nodes    []*Server
	ids      map[string]string // addr -> node id
	pids     []int

	mu     sync.Mutex
	paused map[string]bool
	downs  map[string]downed // masters KillMaster or PauseNode took away
}

// downed records a master taken away: when, and which replicas could replace it.
type downed struct {
	at       time.Time
	replicas []string
}

const clusterSlots = 16384

// StartCluster starts the cluster in the test's temporary directory with redis-cli --cluster
// create and returns once every node reports cluster_state:ok with all 16384 slots served,
// every node has the same slot map, and every replica is in sync. Every process is stopped in
// t.Cleanup (a paused one is continued first). The test is skipped when redis-server or
// redis-cli is missing, except under CI.
func StartCluster(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	requireTools(t)
	o := buildOptions(opts)
	if o.sentinelPassword != "" {
		t.Fatal("redistest: WithSentinelPassword applies to StartSentinel only")
	}
	began := time.Now()
	dir := t.TempDir()
	used := map[int]bool{}
	c := &Cluster{t: t, password: o.password, ids: map[string]string{}, paused: map[string]bool{}, downs: map[string]downed{}}
	for i := 0; i < 6; i++ {
		// cluster-port (Redis 7) sets the bus port, which is otherwise port+10000 and may be
		// taken or out of range.
		n := startFresh(t, dir, o.password, "", used, 2, func(p []int) []string {
			return append(o.dataArgs(),
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", p[0])),
				"--cluster-node-timeout", "1000",
				"--cluster-port", strconv.Itoa(p[1]),
				// A replica may take over however long ago it last heard from its master:
				// the tests pause nodes and kill masters and want the failover every time.
				"--cluster-replica-validity-factor", "0",
				// redis-cli's reshard compares a key found on both nodes with DEBUG
				// DIGEST-VALUE, from loopback (see Reshard).
				"--enable-debug-command", "local",
			)
		})
		c.nodes = append(c.nodes, n)
		c.pids = append(c.pids, n.PID())
	}
	create := append([]string{"--cluster", "create"}, c.Addrs()...)
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := runCLI(30*time.Second, o.password, create...); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, n := range c.nodes {
		id, err := askString(n.Addr(), c.password, "CLUSTER", "MYID")
		if err != nil {
			t.Fatalf("redistest: CLUSTER MYID on %s: %v", n.Addr(), err)
		}
		c.ids[n.Addr()] = id
	}
	if err := poll(30*time.Second, 50*time.Millisecond, func() error { return c.converged(true) }); err != nil {
		t.Fatalf("redistest: the cluster did not become ok: %v", err)
	}
	// Cleanups run last-registered first, so paused nodes are continued before the servers'
	// Stop.
	t.Cleanup(c.resumeAll)
	t.Logf("redistest: cluster %s ready in %v", strings.Join(c.Addrs(), ","), time.Since(began).Round(time.Millisecond))
	return c
}

// Addrs are host:port of every node, as seed nodes for a client.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// URL is the redis-cluster:// URL of the cluster with every node as a seed, with the
// password as userinfo when one is set.
func (c *Cluster) URL() string {
	u := "redis-cluster://"
	if c.password != "" {
		u += url.UserPassword("", c.password).String() + "@"
	}
	return u + strings.Join(c.Addrs(), ",")
}

// Password is the nodes' password ("" when there is none).
func (c *Cluster) Password() string { return c.password }

// PIDs are the process ids of every process the cluster started.
func (c *Cluster) PIDs() []int { return append([]int(nil), c.pids...) }

// Node returns the node at addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// NodeID is the cluster node id of the node at addr.
func (c *Cluster) NodeID(addr string) string { return c.ids[addr] }

// live are the nodes that run and are not paused.
func (c *Cluster) live() []*Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Server
	for _, n := range c.nodes {
		if n.Running() && !c.paused[n.Addr()] {
			out = append(out, n)
		}
	}
	return out
}

// slotRange is one range of CLUSTER SLOTS and the master that serves it.
type slotRange struct {
	start, end int64
	master     string
}

func (c *Cluster) slots(addr string) ([]slotRange, error) {
	r, err := ask(addr, c.password, "CLUSTER", "SLOTS")
	if err != nil {
		return nil, fmt.Errorf("CLUSTER SLOTS on %s: %w", addr, err)
	}
	entries, _ := r.([]any)
	out := make([]slotRange, 0, len(entries))
	for _, e := range entries {
		a, _ := e.([]any)
		if len(a) < 3 {
			return nil, fmt.Errorf("CLUSTER SLOTS on %s: entry %v", addr, e)
		}
		start, ok1 := a[0].(int64)
		end, ok2 := a[1].(int64)
		m, _ := a[2].([]any)
		if !ok1 || !ok2 || len(m) < 2 {
			return nil, fmt.Errorf("CLUSTER SLOTS on %s: entry %v", addr, e)
		}
		host, _ := m[0].(string)
		port, _ := m[1].(int64)
		out = append(out, slotRange{start: start, end: end, master: fmt.Sprintf("%s:%d", host, port)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	return out, nil
}

// SlotCounts asks a live node how many slots each master serves.
func (c *Cluster) SlotCounts() (map[string]int, error) {
	live := c.live()
	if len(live) == 0 {
		return nil, errors.New("redistest: no live node")
	}
	ranges, err := c.slots(live[0].Addr())
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, r := range ranges {
		counts[r.master] += int(r.end - r.start + 1)
	}
	return counts, nil
}

// Masters are the nodes that serve slots, as a live node sees them, in address order.
func (c *Cluster) Masters() []string {
	c.t.Helper()
	counts, err := c.SlotCounts()
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	var out []string
	for m := range counts {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

// converged checks that every live node reports cluster_state:ok with every slot served and
// that all of them have the same slot map; with replicas, also that every live replica
// is in sync with its master.
func (c *Cluster) converged(replicas bool) error {
	var first string
	var firstMap string
	for _, n := range c.live() {
		info, err := askString(n.Addr(), c.password, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.Addr(), err)
		}
		if st := infoField(info, "cluster_state"); st != "ok" {
			return fmt.Errorf("%s: cluster_state %s", n.Addr(), st)
		}
		if ok := infoField(info, "cluster_slots_ok"); ok != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_slots_ok %s", n.Addr(), ok)
		}
		ranges, err := c.slots(n.Addr())
		if err != nil {
			return err
		}
		m := fmt.Sprint(ranges)
		if first == "" {
			first, firstMap = n.Addr(), m
		} else if m != firstMap {
			return fmt.Errorf("slot maps differ: %s has %s, %s has %s", first, firstMap, n.Addr(), m)
		}
		if !replicas {
			continue
		}
		repl, err := askString(n.Addr(), c.password, "INFO", "replication")
		if err != nil {
			return fmt.Errorf("INFO on %s: %w", n.Addr(), err)
		}
		if infoField(repl, "role") == "slave" && infoField(repl, "master_link_status") != "up" {
			return fmt.Errorf("replica %s: master_link_status %s", n.Addr(), infoField(repl, "master_link_status"))
		}
	}
	if first == "" {
		return errors.New("no live node")
	}
	return nil
}

// MasterFor is the master that serves key, by CLUSTER KEYSLOT and CLUSTER SLOTS asked of a
// live node. It must be called from the test's goroutine.
func (c *Cluster) MasterFor(key string) string {
	c.t.Helper()
	live := c.live()
	if len(live) == 0 {
		c.t.Fatal("redistest: no live node")
	}
	addr := live[0].Addr()
	r, err := ask(addr, c.password, "CLUSTER", "KEYSLOT", key)
	slot, ok := r.(int64)
	if err != nil || !ok {
		c.t.Fatalf("redistest: CLUSTER KEYSLOT on %s = %v, %v", addr, r, err)
	}
	ranges, err := c.slots(addr)
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	for _, sr := range ranges {
		if sr.start <= slot && slot <= sr.end {
			return sr.master
		}
	}
	c.t.Fatalf("redistest: slot %d of %q is not served", slot, key)
	return ""
}

// replicasOf lists the replicas of master from its own CLUSTER NODES.
func (c *Cluster) replicasOf(master string) ([]string, error) {
	text, err := askString(master, c.password, "CLUSTER", "NODES")
	if err != nil {
		return nil, fmt.Errorf("CLUSTER NODES on %s: %w", master, err)
	}
	id := c.ids[master]
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		// <id> <ip:port@cport[,hostname]> <flags> <master id> ...
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != id || !strings.Contains(f[2], "slave") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		out = append(out, addr)
	}
	return out, nil
}

// takeDown records the node at addr, when it is a master, as taken away now, with the
// replicas that could replace it.
func (c *Cluster) takeDown(addr string) (n *Server, master bool) {
	c.t.Helper()
	n = c.Node(addr)
	if n == nil {
		c.t.Fatalf("redistest: %s is not a node of the cluster", addr)
	}
	r, err := ask(addr, c.password, "ROLE")
	role, _ := r.([]any)
	if err != nil || len(role) == 0 {
		c.t.Fatalf("redistest: ROLE on %s = %v, %v", addr, r, err)
	}
	if role[0] != "master" {
		return n, false
	}
	reps, err := c.replicasOf(addr)
	if err != nil {
		c.t.Fatalf("redistest: %v", err)
	}
	c.mu.Lock()
	c.downs[addr] = downed{at: time.Now(), replicas: reps}
	c.mu.Unlock()
	return n, true
}

// KillMaster sends SIGKILL to the master at addr and waits for it to exit. WaitFailover
// measures from this moment.
func (c *Cluster) KillMaster(addr string) {
	c.t.Helper()
	n, master := c.takeDown(addr)
	if !master {
		c.t.Fatalf("redistest: %s is not a master", addr)
	}
	n.Stop()
}

// PauseNode sends SIGSTOP to the node at addr. When it is a master, WaitFailover measures
// from this moment.
func (c *Cluster) PauseNode(addr string) {
	c.t.Helper()
	n, _ := c.takeDown(addr)
	c.mu.Lock()
	c.paused[addr] = true
	c.mu.Unlock()
	n.Pause()
}

// ResumeNode sends SIGCONT to the node at addr. A master that lost its slots meanwhile comes
// back as a replica.
func (c *Cluster) ResumeNode(addr string) {
	c.t.Helper()
	n := c.Node(addr)
	if n == nil {
		c.t.Fatalf("redistest: %s is not a node of the cluster", addr)
	}
	c.mu.Lock()
	delete(c.paused, addr)
	c.mu.Unlock()
	n.Resume()
}

func (c *Cluster) resumeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for addr := range c.paused {
		if n := c.Node(addr); n != nil && n.Running() {
			_ = n.cmd.Process.Signal(syscall.SIGCONT)
		}
		delete(c.paused, addr)
	}
}

// WaitFailover waits until a replica of oldMaster (taken away by KillMaster or PauseNode)
// answers ROLE as a master and every live node reports cluster_state:ok with the same slot
// map, in which oldMaster serves nothing. It returns the promoted replica and the time since
// oldMaster was taken away. It is safe to call from any goroutine.
func (c *Cluster) WaitFailover(oldMaster string, timeout time.Duration) (string, time.Duration, error) {
	c.mu.Lock()
	d, ok := c.downs[oldMaster]
	c.mu.Unlock()
	if !ok {
		return "", 0, fmt.Errorf("redistest: %s was not a master taken away by KillMaster or PauseNode", oldMaster)
	}
	var promoted string
	err := poll(timeout, 20*time.Millisecond, func() error {
		promoted = ""
		for _, r := range d.replicas {
			role, err := ask(r, c.password, "ROLE")
			if a, _ := role.([]any); err == nil && len(a) > 0 && a[0] == "master" {
				promoted = r
				break
			}
		}
		if promoted == "" {
			return fmt.Errorf("no replica of %s (%v) is a master", oldMaster, d.replicas)
		}
		if err := c.converged(false); err != nil {
			return err
		}
		counts, err := c.SlotCounts()
		if err != nil {
			return err
		}
		if counts[oldMaster] != 0 || counts[promoted] == 0 {
			return fmt.Errorf("slots: %s serves %d, %s serves %d", oldMaster, counts[oldMaster], promoted, counts[promoted])
		}
		return nil
	})
	took := time.Since(d.at)
	if err != nil {
		return "", took, fmt.Errorf("redistest: no failover from %s: %w", oldMaster, err)
	}
	return promoted, took, nil
}

// Reshard moves slots slots from the master at from to the master at to with redis-cli
// --cluster reshard (keys included, by MIGRATE), then waits until every live node has the
// same slot map. The whole move is bounded by a minute. It is safe to call from any
// goroutine, for example while a load runs.
//
// A key can be on both nodes when redis-cli migrates it ("Target key exists"): a MIGRATE that
// timed out on a loaded machine has left the target a copy (redis/redis#5271). redis-cli then
// compares the two with DEBUG DIGEST-VALUE, which the nodes allow from loopback, and replaces
// the target's copy when they are equal; when they differ it stops, and so does the test. It is
// not given --cluster-replace: replacing a copy that differs loses the counts it holds (a make test
// run here lost one count of 106), which the reshard tests exist to catch.
func (c *Cluster) Reshard(from, to string, slots int) error {
	fromID, toID := c.ids[from], c.ids[to]
	if fromID == "" || toID == "" {
		return fmt.Errorf("redistest: reshard %s -> %s: not nodes of the cluster", from, to)
	}
	out, err := runCLI(time.Minute, c.password, "--cluster", "reshard", from,
		"--cluster-from", fromID, "--cluster-to", toID,
		"--cluster-slots", strconv.Itoa(slots), "--cluster-yes")
	if err != nil {
		return fmt.Errorf("redistest: redis-cli --cluster reshard: %w\n%s", err, out)
	}
	// redis-cli exits 0 after some failures and prints [ERR] instead.
	if strings.Contains(out, "[ERR]") {
		return fmt.Errorf("redistest: redis-cli --cluster reshard:\n%s", out)
	}
	if err := poll(20*time.Second, 50*time.Millisecond, func() error { return c.converged(false) }); err != nil {
		return fmt.Errorf("redistest: after reshard: %w", err)
	}
	return nil
}
