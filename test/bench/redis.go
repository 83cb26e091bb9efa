package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The topologies -topology picks for the private Redis.
const (
	topoPlain    = "plain"    // one redis-server: redis://
	topoSentinel = "sentinel" // a master, a replica and three sentinels: redis-sentinel://
	topoCluster  = "cluster"  // three masters with one replica each: redis-cluster://
)

var topologies = []string{topoPlain, topoSentinel, topoCluster}

// sentinelMaster is the name the sentinels monitor the master under.
const sentinelMaster = "extauthz"

// redisNode is one redis-server process (data node or sentinel) on a loopback port.
type redisNode struct {
	*proc
	port int
}

func (n *redisNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// redisTopology is the private Redis the sidecar uses during a run: one server, a Sentinel
// set or a Cluster, started the way internal/redistest starts them (which needs a testing.TB
// and so cannot be used here). Persistence is off, so disk writes do not disturb the
// measurements and nothing is left behind.
type redisTopology struct {
	kind      string
	data      []*redisNode // plain: the server; sentinel: master, replica; cluster: all six
	masters   []*redisNode // the nodes that take writes: plain and sentinel one, cluster three
	sentinels []*redisNode
}

// startTopology starts the kind of topology in dir; extra are more directives for every data
// node, e.g. "--notify-keyspace-events", "KA". It returns once the topology serves: the
// replica is in sync and the sentinels agree, or every cluster node has every slot. On an
// error it has stopped whatever it started.
func startTopology(ctx context.Context, kind, dir string, extra ...string) (_ *redisTopology, err error) {
	t := &redisTopology{kind: kind}
	defer func() {
		if err != nil {
			stopAll(t.procs())
		}
	}()
	switch kind {
	case topoPlain:
		n, err := t.startNode(ctx, dir, "redis", nil, extra...)
		if err != nil {
			return nil, err
		}
		t.masters = []*redisNode{n}
	case topoSentinel:
		err = t.startSentinel(ctx, dir, extra)
	case topoCluster:
		err = t.startCluster(ctx, dir, extra)
	default:
		return nil, fmt.Errorf("-topology %q: want %s", kind, strings.Join(topologies, ", "))
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// startNode starts one data node named name on a free port and waits for PING. conf, when
// not nil, is written to a file passed first (a sentinel rewrites its file as it learns).
func (t *redisTopology) startNode(ctx context.Context, dir, name string, conf []byte, extra ...string) (*redisNode, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var args []string
	if conf != nil {
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, conf, 0o600); err != nil {
			return nil, err
		}
		args = append(args, path)
	}
	args = append(args, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir)
	p, err := startProc(dir, name, bin, nil, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	n := &redisNode{proc: p, port: port}
	if conf != nil {
		t.sentinels = append(t.sentinels, n)
	} else {
		t.data = append(t.data, n)
	}
	err = waitUntil(ctx, p, 10*time.Second, func() error {
		out, err := respString(ctx, n.addr(), "PING")
		if err == nil && out != "PONG" {
			err = fmt.Errorf("PING answered %q", out)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// replicationArgs are the directives of a data node that has a replica or is one: the first
// full sync would otherwise wait five seconds for more replicas (Redis 7's diskless sync).
var replicationArgs = []string{"--repl-diskless-sync-delay", "0"}

// startSentinel starts a master, its replica and three sentinels (quorum 2). The timeouts are
// long, so that a busy benchmark never makes the sentinels fail over.
func (t *redisTopology) startSentinel(ctx context.Context, dir string, extra []string) error {
	args := append(append([]string{}, replicationArgs...), extra...)
	master, err := t.startNode(ctx, dir, "redis-master", nil, args...)
	if err != nil {
		return err
	}
	t.masters = []*redisNode{master}
	replica, err := t.startNode(ctx, dir, "redis-replica", nil,
		append(args, "--replicaof", "127.0.0.1", strconv.Itoa(master.port))...)
	if err != nil {
		return err
	}
	if err := poll(ctx, 20*time.Second, func() error { return replicaSynced(ctx, replica) }); err != nil {
		return fmt.Errorf("replica %s: %w", replica.addr(), err)
	}
	conf := fmt.Sprintf("sentinel resolve-hostnames no\n"+
		"sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s 10000\n"+
		"sentinel failover-timeout %[1]s 60000\n", sentinelMaster, master.port)
	for i := range 3 {
		if _, err := t.startNode(ctx, dir, "sentinel-"+strconv.Itoa(i), []byte(conf), "--sentinel"); err != nil {
			return err
		}
	}
	if err := poll(ctx, 30*time.Second, func() error { return t.sentinelsAgree(ctx) }); err != nil {
		return fmt.Errorf("the sentinels did not discover the topology: %w", err)
	}
	return nil
}

func replicaSynced(ctx context.Context, n *redisNode) error {
	info, err := respString(ctx, n.addr(), "INFO", "replication")
	if err != nil {
		return err
	}
	if v := infoField(info, "master_link_status"); v != "up" {
		return fmt.Errorf("master_link_status %q", v)
	}
	return nil
}

// sentinelsAgree checks that every sentinel names the master and sees the replica in sync
// and the two other sentinels.
func (t *redisTopology) sentinelsAgree(ctx context.Context) error {
	want := t.masters[0].addr()
	for _, sn := range t.sentinels {
		r, err := respCommand(ctx, sn.addr(), "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.addr(), err)
		}
		a, _ := r.([]any)
		if len(a) != 2 || fmt.Sprintf("%v:%v", a[0], a[1]) != want {
			return fmt.Errorf("sentinel %s: master %v, want %s", sn.addr(), r, want)
		}
		r, err = respCommand(ctx, sn.addr(), "SENTINEL", "REPLICAS", sentinelMaster)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.addr(), err)
		}
		reps, _ := r.([]any)
		if len(reps) != 1 || pairs(reps[0])["flags"] != "slave" || pairs(reps[0])["master-link-status"] != "ok" {
			return fmt.Errorf("sentinel %s: replicas %v", sn.addr(), r)
		}
		r, err = respCommand(ctx, sn.addr(), "SENTINEL", "SENTINELS", sentinelMaster)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.addr(), err)
		}
		if peers, _ := r.([]any); len(peers) != len(t.sentinels)-1 {
			return fmt.Errorf("sentinel %s: sees %d other sentinels, want %d", sn.addr(), len(peers), len(t.sentinels)-1)
		}
	}
	return nil
}

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// startCluster starts six nodes and joins them with redis-cli --cluster create into three
// masters with one replica each, then waits until every node serves every slot with the same
// slot map and every replica is in sync.
func (t *redisTopology) startCluster(ctx context.Context, dir string, extra []string) error {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return fmt.Errorf("redis-cli --cluster create needs redis-cli: %w", err)
	}
	for i := range 6 {
		bus, err := freePort()
		if err != nil {
			return err
		}
		// cluster-port sets the bus port, which is otherwise port+10000 and may be taken or
		// out of range. The node timeout is long, so that a busy benchmark never fails a
		// master over.
		args := append(append([]string{}, replicationArgs...),
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			"--cluster-node-timeout", "10000",
			"--cluster-port", strconv.Itoa(bus))
		if _, err := t.startNode(ctx, dir, "redis-"+strconv.Itoa(i), nil, append(args, extra...)...); err != nil {
			return err
		}
	}
	create := []string{"--cluster", "create"}
	for _, n := range t.data {
		create = append(create, n.addr())
	}
	create = append(create, "--cluster-replicas", "1", "--cluster-yes")
	if out, _, err := runBounded(ctx, time.Minute, cli, create...); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	if err := poll(ctx, 30*time.Second, func() error { return t.clusterConverged(ctx) }); err != nil {
		return fmt.Errorf("the cluster did not become ok: %w", err)
	}
	t.masters = nil
	for _, n := range t.data {
		r, err := respCommand(ctx, n.addr(), "ROLE")
		if err != nil {
			return err
		}
		if role, _ := r.([]any); len(role) > 0 && role[0] == "master" {
			t.masters = append(t.masters, n)
		}
	}
	if len(t.masters) != 3 {
		return fmt.Errorf("the cluster has %d masters, want 3", len(t.masters))
	}
	return nil
}

// clusterConverged checks that every node reports cluster_state:ok with every slot served,
// that all of them have the same slot map, and that every replica is in sync.
func (t *redisTopology) clusterConverged(ctx context.Context) error {
	var firstMap string
	for i, n := range t.data {
		info, err := respString(ctx, n.addr(), "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", n.addr(), err)
		}
		if st := infoField(info, "cluster_state"); st != "ok" {
			return fmt.Errorf("%s: cluster_state %s", n.addr(), st)
		}
		if ok := infoField(info, "cluster_slots_ok"); ok != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("%s: cluster_slots_ok %s", n.addr(), ok)
		}
		m, err := slotMap(ctx, n.addr())
		if err != nil {
			return err
		}
		if i == 0 {
			firstMap = m
		} else if m != firstMap {
			return fmt.Errorf("slot maps differ: %s has %s, %s has %s", t.data[0].addr(), firstMap, n.addr(), m)
		}
		repl, err := respString(ctx, n.addr(), "INFO", "replication")
		if err != nil {
			return fmt.Errorf("INFO on %s: %w", n.addr(), err)
		}
		if infoField(repl, "role") == "slave" && infoField(repl, "master_link_status") != "up" {
			return fmt.Errorf("replica %s: master_link_status %s", n.addr(), infoField(repl, "master_link_status"))
		}
	}
	return nil
}

// slotMap renders a node's CLUSTER SLOTS as "start-end@master ..." for comparison.
func slotMap(ctx context.Context, addr string) (string, error) {
	r, err := respCommand(ctx, addr, "CLUSTER", "SLOTS")
	if err != nil {
		return "", fmt.Errorf("CLUSTER SLOTS on %s: %w", addr, err)
	}
	entries, _ := r.([]any)
	ranges := make([]string, 0, len(entries))
	for _, e := range entries {
		a, _ := e.([]any)
		if len(a) < 3 {
			return "", fmt.Errorf("CLUSTER SLOTS on %s: entry %v", addr, e)
		}
		m, _ := a[2].([]any)
		if len(m) < 2 {
			return "", fmt.Errorf("CLUSTER SLOTS on %s: entry %v", addr, e)
		}
		ranges = append(ranges, fmt.Sprintf("%v-%v@%v:%v", a[0], a[1], m[0], m[1]))
	}
	slices.Sort(ranges)
	return strings.Join(ranges, " "), nil
}

// poll calls check every 50ms until it returns nil, ctx ends or timeout passes, and returns
// the last error then.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not reached within %v: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// procs are every process of the topology, for stopAll.
func (t *redisTopology) procs() []*proc {
	var ps []*proc
	for _, n := range append(append([]*redisNode{}, t.data...), t.sentinels...) {
		ps = append(ps, n.proc)
	}
	return ps
}

// url is the sidecar's redis.url for the topology.
func (t *redisTopology) url() string {
	join := func(ns []*redisNode) string {
		addrs := make([]string, len(ns))
		for i, n := range ns {
			addrs[i] = n.addr()
		}
		return strings.Join(addrs, ",")
	}
	switch t.kind {
	case topoSentinel:
		return "redis-sentinel://" + join(t.sentinels) + "/" + sentinelMaster + "/0"
	case topoCluster:
		return "redis-cluster://" + join(t.data)
	}
	return "redis://" + t.masters[0].addr() + "/0"
}

// pids is loadgen's -pids list of the data nodes, whose CPU counts as Redis's: "redis=PID"
// for one server, "redis0=PID,redis1=PID,..." for several (replicas replicate every write).
// Sentinels are left out: they only ping.
func (t *redisTopology) pids() string {
	if len(t.data) == 1 {
		return fmt.Sprintf("redis=%d", t.data[0].pid())
	}
	items := make([]string, len(t.data))
	for i, n := range t.data {
		items[i] = fmt.Sprintf("redis%d=%d", i, n.pid())
	}
	return strings.Join(items, ",")
}

// describe names the topology for the report.
func (t *redisTopology) describe() string {
	switch t.kind {
	case topoSentinel:
		return "sentinel (1 master, 1 replica, 3 sentinels)"
	case topoCluster:
		return "cluster (3 masters, 3 replicas)"
	}
	return "plain (1 redis-server)"
}

// do runs one command on the master that owns key (args[1]): on a cluster it follows one
// MOVED redirection.
func (t *redisTopology) do(ctx context.Context, args ...string) (any, error) {
	r, err := respCommand(ctx, t.masters[0].addr(), args...)
	var re replyError
	if errors.As(err, &re) && strings.HasPrefix(string(re), "MOVED ") {
		f := strings.Fields(string(re))
		if len(f) != 3 {
			return nil, err
		}
		return respCommand(ctx, f[2], args...)
	}
	return r, err
}

// eachMaster runs one command on every master and returns the first master's reply (SCRIPT
// LOAD answers the same SHA on each).
func (t *redisTopology) eachMaster(ctx context.Context, args ...string) (any, error) {
	var first any
	for i, n := range t.masters {
		r, err := respCommand(ctx, n.addr(), args...)
		if err != nil {
			return nil, fmt.Errorf("%s on %s: %w", args[0], n.addr(), err)
		}
		if i == 0 {
			first = r
		}
	}
	return first, nil
}

// incrScript is the raw Redis ceiling's unit of work: one fixed-window counter, incremented and
// given an expiry on first use, which is the least a Redis-backed limiter can do per descriptor.
const incrScript = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end
return n`

// redisBenchResult is what redis-benchmark measured.
type redisBenchResult struct {
	rps           float64
	p50MS, p99MS  float64
	command, line string // the command run and its CSV result row, for the raw file
}

// benchmarkEvalSHA runs redis-benchmark with the INCR script at concurrency c over keys keys
// (1 means one hot key). It uses --csv rather than -q because the CSV row carries p50 and p99
// along with the rate in one parseable line, where -q prints only rps and p50 behind progress
// output. On a cluster it runs with --cluster, which spreads the clients over the masters and
// puts each master's hash tag in place of {tag}, so one hot key there is one per master.
func (t *redisTopology) benchmarkEvalSHA(ctx context.Context, sha string, c, keys, n int) (redisBenchResult, error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return redisBenchResult{}, err
	}
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(t.masters[0].port), "-c", strconv.Itoa(c), "-n", strconv.Itoa(n), "--csv"}
	key := "key:__rand_int__"
	if t.kind == topoCluster {
		args = append(args, "--cluster")
		key = "key:{tag}:__rand_int__"
	}
	if keys > 1 {
		args = append(args, "-r", strconv.Itoa(keys))
	}
	args = append(args, "EVALSHA", sha, "1", key)
	res := redisBenchResult{command: shellQuote(append([]string{"redis-benchmark"}, args...))}
	// redis-benchmark retries a refused connection forever, so it runs under a timeout too.
	out, _, err := runBounded(ctx, 60*time.Second, bin, args...)
	if err != nil {
		return res, err
	}
	// With --cluster the CSV follows a description of the masters.
	table := out
	if i := strings.Index(out, "\"test\","); i >= 0 {
		table = out[i:]
	}
	rows, err := csv.NewReader(strings.NewReader(table)).ReadAll()
	if err != nil || len(rows) < 2 {
		return res, fmt.Errorf("redis-benchmark: unexpected output %q", out)
	}
	head, row := rows[0], rows[len(rows)-1]
	res.line = strings.Join(row, ",")
	field := func(name string) (float64, error) {
		for i, h := range head {
			if h == name && i < len(row) {
				return strconv.ParseFloat(row[i], 64)
			}
		}
		return 0, fmt.Errorf("redis-benchmark: no %q column in %q", name, out)
	}
	if res.rps, err = field("rps"); err != nil {
		return res, err
	}
	if res.p50MS, err = field("p50_latency_ms"); err != nil {
		return res, err
	}
	if res.p99MS, err = field("p99_latency_ms"); err != nil {
		return res, err
	}
	return res, nil
}

// redisVersion is the installed redis-server's version, e.g. "7.0.15".
func redisVersion(ctx context.Context) string {
	out, _, err := runBounded(ctx, 5*time.Second, "redis-server", "--version")
	if err != nil {
		return "unknown"
	}
	for f := range strings.FieldsSeq(out) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(out)
}
