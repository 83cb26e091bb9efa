package redisclientcheck

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
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
func checkRecovery(t *testing.T, name string, s loadStats) {
	t.Helper()
	t.Logf("%s: %v", name, s)
	if s.firstErr != nil {
		t.Logf("%s: first failure: %v", name, s.firstErr)
	}
	if s.kinds[wrongReply] > 0 || s.kinds[jumped] > 0 {
		t.Errorf("%s: %d replies matched to the wrong command, %d calls ran twice: want none", name, s.kinds[wrongReply], s.kinds[jumped])
	}
	if s.failed == 0 {
		t.Errorf("%s: no call failed: the kill did not reach these keys", name)
	}
	if s.never || s.recovery > recoveryBudget || s.tail < 500*time.Millisecond {
		t.Errorf("%s: recovered %s after the kill, %s before the end of the run: want within %s, then sustained", name, ms(s.recovery), ms(s.tail), recoveryBudget)
	}
	if s.laterLongest > laterOutageMax {
		t.Errorf("%s: after it recovered, an outage of %s (%v): want none over %s", name, ms(s.laterLongest), s.last, laterOutageMax)
	}
}

// laterOutageMax bounds an outage after a client recovered: losing the new master again for
// a second breaks the promise; a few hundred milliseconds of failures is what a box at a
// load average of 20 does to a healthy client (up to 960 ms seen on the reshard's control
// keys).
const laterOutageMax = time.Second

// TestFailoverSentinel kills the Sentinel master under load and holds the sidecar's client to
// the promise: back within 5 s on the promoted master, no reply matched to the wrong
// command, no call run twice, and every key holding the count its last call returned.
func TestFailoverSentinel(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	c := newClient(t, s.URL(0))
	keys := []string{"{fo}:0", "{fo}:1", "{fo}:2", "{fo}:3"}
	warm(t, c, "fo")
	cached := cacheBefore(t, c, s.Node(s.MasterAddr()), "{fo}:session")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []call)
	go func() { done <- runLoad(ctx, c, keys, perKeyRate) }()
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
	checkRecovery(t, "redisconn.Client", stats(calls, killed, nil))
	logOdd(t, calls, killed)
	node := s.Node(promoted)
	checkExact(t, calls, func(key string) int64 { return getInt(t, node, key) })
	checkScriptReloaded(t, node)
	cached.after(t, node)
	if !c.Ready() {
		t.Errorf("redisconn.Client.Ready() is false after it recovered")
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

// clusterGet reads an integer key from the master that serves it now.
func clusterGet(t *testing.T, c *redistest.Cluster) func(key string) int64 {
	return func(key string) int64 { return getInt(t, c.Node(c.MasterFor(key)), key) }
}

func keySet(keys []string) map[string]bool {
	m := map[string]bool{}
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// TestFailoverCluster kills the master of some keys under load: those keys must be back
// within 5 s on the promoted replica, and no key, on that master or another, may see a
// wrong reply or a call run twice.
func TestFailoverCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	c := newClient(t, cl.URL())
	target := cl.MasterFor("{fo}")
	onTarget := keysOn(t, cl, "fo", target, true, 4)
	elsewhere := keysOn(t, cl, "fo", target, false, 2)
	for _, k := range append(slices.Clone(onTarget), elsewhere...) {
		warm(t, c, k[1:len(k)-1])
	}
	cached := cacheBefore(t, c, cl.Node(target), onTarget[0]+":session")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []call)
	go func() { done <- runLoad(ctx, c, append(slices.Clone(onTarget), elsewhere...), perKeyRate) }()
	time.Sleep(beforeEvent)
	killed := time.Now()
	cl.KillMaster(target)
	promoted, took, err := cl.WaitFailover(target, 2*recoveryBudget)
	time.Sleep(time.Until(killed.Add(afterEvent)))
	cancel()
	calls := <-done
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster: %s -> %s in %s", target, promoted, ms(took))
	checkRecovery(t, "redisconn.Client (keys on the killed master)", stats(calls, killed, keySet(onTarget)))
	logOdd(t, calls, killed)
	other := stats(calls, killed, keySet(elsewhere))
	t.Logf("redisconn.Client (keys on other masters): %v", other)
	if other.firstErr != nil {
		// Redis Cluster refuses every slot while one is unserved (CLUSTERDOWN, with the
		// default cluster-require-full-coverage), until the replica takes over.
		t.Logf("redisconn.Client (keys on other masters): first failure: %v", other.firstErr)
	}
	if other.kinds[wrongReply] > 0 || other.kinds[jumped] > 0 {
		t.Errorf("keys on other masters: %d wrong replies, %d ran twice", other.kinds[wrongReply], other.kinds[jumped])
	}
	// Their outages are the server's CLUSTERDOWN, which each node answers until it learns of
	// the promotion, so one key can see several: only the end of the last counts.
	if end := max(other.recovery, other.last.to); other.never || end > recoveryBudget {
		t.Errorf("keys on other masters: failing until %s after the kill (never: %v): want at most %s", ms(end), other.never, recoveryBudget)
	}
	checkExact(t, calls, clusterGet(t, cl))
	checkScriptReloaded(t, cl.Node(promoted))
	cached.after(t, cl.Node(promoted))
}

// cachedKey is a session cached by the client under test before a master is killed.
type cachedKey struct {
	c   *redisconn.Client
	key string
}

// cacheBefore sets key on master, waits until its replica has it, and reads it through c's
// cache until a read is a hit.
func cacheBefore(t *testing.T, c *redisconn.Client, master *redistest.Server, key string) cachedKey {
	t.Helper()
	do(t, master, "SET", key, "before")
	// WAIT: the replica has the value before the master dies, so that the promoted node
	// holds "before" until after() writes.
	if r := do(t, master, "WAIT", "1", "2000"); r != ":1" {
		t.Fatalf("WAIT 1 = %q: the replica did not acknowledge", r)
	}
	ck := cachedKey{c: c, key: key}
	for range 3 {
		if v, hit, err := ck.read(); err == nil && v == "before" && hit {
			return ck
		}
	}
	t.Fatalf("three reads of %s before the kill: no cache hit", key)
	return ck
}

func (ck cachedKey) read() (string, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return ck.c.GetCached(ctx, ck.key, time.Minute)
}

// after changes the key on the promoted master (a logout after the failover): the next read
// must see it, not the dead master's value from the cache.
func (ck cachedKey) after(t *testing.T, promoted *redistest.Server) {
	t.Helper()
	do(t, promoted, "SET", ck.key, "after")
	v, hit, err := ck.read()
	t.Logf("the session cached before the kill, changed on the promoted %s: read %q, hit %v, %v", promoted.Addr(), v, hit, err)
	if err != nil || v != "after" {
		t.Errorf("read of %s after it changed on the promoted master = %q (hit %v), %v; want \"after\": the cache kept the dead master's value", ck.key, v, hit, err)
	}
}

// checkScriptReloaded checks that the calls on a promoted replica went through Eval's
// NOSCRIPT fallback: a replica gets a script's effects, not the script, so the first
// EVALSHA there fails with NOSCRIPT and the client must send EVAL.
func checkScriptReloaded(t *testing.T, node *redistest.Server) {
	t.Helper()
	evals, evalshas := cmdCalls(t, node, "eval"), cmdCalls(t, node, "evalsha")
	t.Logf("promoted %s ran EVAL %d times and EVALSHA %d times", node.Addr(), evals, evalshas)
	if evals == 0 || evalshas == 0 {
		t.Errorf("promoted %s: EVAL %d, EVALSHA %d: want the NOSCRIPT fallback (EVAL at least once) and EVALSHA after it", node.Addr(), evals, evalshas)
	}
}

// reshardSlots is how many slots TestReshard moves under load.
const reshardSlots = 200

// TestReshard moves 200 slots, with the keys under load in them, from one master to another:
// the client must follow MOVED and ASK with no wrong verdict (a wrong reply, a call run
// twice, a count that went back), no error but a stray timeout, and exact counts afterwards.
func TestReshard(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t)
	c := newClient(t, cl.URL())
	masters := cl.Masters()
	from, to := masters[0], masters[1]
	// Control keys stay on the source master: they share its load and the pauses MIGRATE
	// causes there, but no redirect. What fails on them is the box's doing or the server's,
	// not the client's handling of MOVED and ASK.
	keys, control := movingKeys(t, cl, from, 8)
	for _, k := range append(slices.Clone(keys), control...) {
		warm(t, c, k[1:len(k)-1])
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []call)
	go func() { done <- runLoad(ctx, c, append(slices.Clone(keys), control...), perKeyRate) }()
	time.Sleep(beforeEvent / 2)
	began := time.Now()
	err := cl.Reshard(from, to, reshardSlots)
	took := time.Since(began)
	time.Sleep(time.Second)
	cancel()
	calls := <-done
	if err != nil {
		t.Fatal(err)
	}
	var moved int
	for _, k := range keys {
		if cl.MasterFor(k) == to {
			moved++
		}
	}
	t.Logf("reshard of %d slots %s -> %s took %s; %d of the %d keys under load moved", reshardSlots, from, to, ms(took), moved, len(keys))
	if moved == 0 {
		t.Errorf("none of the keys under load moved: the test did not test a reshard")
	}
	logOdd(t, calls, began)
	st, ctl := stats(calls, began, keySet(keys)), stats(calls, began, keySet(control))
	t.Logf("redisconn.Client, moving keys: %v", st)
	t.Logf("redisconn.Client, control keys that stay on %s: %v", from, ctl)
	if st.firstErr != nil {
		t.Logf("redisconn.Client: first failure on a moving key: %v", st.firstErr)
	}
	if k := st.kinds; k[wrongReply]+k[jumped]+k[regressed]+ctl.kinds[wrongReply]+ctl.kinds[jumped]+ctl.kinds[regressed] > 0 {
		t.Errorf("moving keys: %d wrong replies, %d ran twice, %d counts went back; control keys: %d, %d, %d: want none",
			k[wrongReply], k[jumped], k[regressed], ctl.kinds[wrongReply], ctl.kinds[jumped], ctl.kinds[regressed])
	}
	// A redirect the client did not follow reaches the caller as an error (MOVED, ASK,
	// TRYAGAIN), or as timeouts on the moving keys. Stray timeouts are the box's: under -race
	// beside other test binaries they come and go with Redis healthy, on the control keys as
	// much as on the moving ones.
	var firstOther error
	for _, c := range calls {
		if c.err != nil && !redisconn.IsTimeout(c.err) && firstOther == nil {
			firstOther = c.err
		}
	}
	if firstOther != nil {
		t.Errorf("a call failed with an error that is not a timeout: %v", firstOther)
	}
	// An unfollowed redirect leaves a key failing until the topology is refreshed; the box
	// stalls the control keys as much as the moving ones (at a load average of 20: 0.96 s on
	// a control key against 1.36 s on a moving one).
	if limit := max(outageMin, 2*ctl.longest); st.never || st.longest > limit {
		t.Errorf("a moving key failed for %s in a row (%v), the control keys at most %s: want at most %s", ms(st.longest), st.last, ms(ctl.longest), ms(limit))
	}
	movingRate := float64(st.failed) / float64(max(st.calls, 1))
	controlRate := float64(ctl.failed) / float64(max(ctl.calls, 1))
	if movingRate > 2*controlRate+0.01 {
		t.Errorf("%.2f%% of the calls on moving keys failed, against %.2f%% on the control keys: want at most twice as many plus 1 point", 100*movingRate, 100*controlRate)
	}
	checkExact(t, calls, clusterGet(t, cl))
}

// movingKeys finds n hash-tagged keys, each in its own slot, among the first reshardSlots
// slots that from serves: redis-cli --cluster reshard moves a source's slots lowest first.
// staying are n keys that from serves and keeps. from's slots come from its own line of
// CLUSTER NODES.
func movingKeys(t *testing.T, c *redistest.Cluster, from string, n int) (moving, staying []string) {
	t.Helper()
	var owned [][2]int
	for _, line := range strings.Split(do(t, c.Node(from), "CLUSTER", "NODES"), "\n") {
		// <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being imported or migrated
			}
			lo, hi, found := strings.Cut(r, "-")
			if !found {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				t.Fatalf("CLUSTER NODES on %s: slot range %q", from, r)
			}
			owned = append(owned, [2]int{a, b})
		}
	}
	slices.SortFunc(owned, func(a, b [2]int) int { return a[0] - b[0] })
	moves := map[int]bool{}
	stays := map[int]bool{}
	for _, r := range owned {
		for slot := r[0]; slot <= r[1]; slot++ {
			if len(moves) < reshardSlots {
				moves[slot] = true
			} else {
				stays[slot] = true
			}
		}
	}
	if len(moves) < reshardSlots || len(stays) == 0 {
		t.Fatalf("%s serves the slots %v, want more than %d", from, owned, reshardSlots)
	}
	used := map[int]bool{}
	for i := 0; len(moving) < n || len(staying) < n; i++ {
		if i > 20000 {
			t.Fatalf("found %d moving and %d staying keys of %d", len(moving), len(staying), n)
		}
		key := fmt.Sprintf("{rs%d}", i)
		slot := ratelimit.Slot(key)
		switch {
		case used[slot]:
		case moves[slot] && len(moving) < n:
			moving = append(moving, key)
			used[slot] = true
		case stays[slot] && len(staying) < n:
			staying = append(staying, key)
			used[slot] = true
		}
	}
	keys := moving
	// ratelimit.Slot is the client side's idea of a slot; the server's must agree.
	if r := do(t, c.Node(from), "CLUSTER", "KEYSLOT", keys[0]); r != ":"+strconv.Itoa(ratelimit.Slot(keys[0])) {
		t.Fatalf("CLUSTER KEYSLOT %s = %q, ratelimit.Slot says %d", keys[0], r, ratelimit.Slot(keys[0]))
	}
	return moving, staying
}
