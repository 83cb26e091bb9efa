package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/redistest"
)

// The fault tests run one real sidecar against a Sentinel or Cluster topology, put a steady
// ShouldRateLimit load through it, break the topology the way production breaks (kill -9 of a
// master, a reshard, a node that stops answering) and print what a client saw. Their t.Logf
// lines are the README's fault table.
//
// The load has two kinds of counters, so that a reply matched to the wrong command shows up
// as a wrong verdict whichever way it goes:
//   - exhausted counters (limit 3 a day, driven past it and replicated before the fault):
//     every answer must be OVER_LIMIT, before and after the fault;
//   - a fresh counter per request (limit 1,000,000 a day): every answer must be OK.
//
// The over-limit cache is off so that every request reaches Redis: with it on, exhausted
// counters would be answered from memory and could not catch a mismatched reply.

// faultDomain is the RLS domain of the fault tests; every window is a day, and the tests
// make sure no day boundary falls inside a run.
const faultDomain = `
domain: fault
descriptors:
  - key: ex
    rate_limit: {unit: day, requests_per_unit: 3}
  - key: u
    rate_limit: {unit: day, requests_per_unit: 1000000}
  - key: fr
    rate_limit: {unit: day, requests_per_unit: 10}
  - key: live
    rate_limit: {unit: day, requests_per_unit: 20}
`

// faultTimeout is redis.timeout in the kill and reshard tests. A dead master or CLUSTERDOWN
// fails a call at once whatever the deadline; 250 ms keeps the scheduler's stalls on a shared
// 2-core box from counting as failures after recovery. The paused-node test uses 25 ms, the
// default, since the deadline is what it measures.
const faultTimeout = ", timeout: 250ms"

const (
	exLimit, exSends = 3, 5   // exhausted counters: limit, requests before the fault
	frLimit, frSends = 10, 15 // counters driven only after recovery
	liveLimit        = 20     // counters driven through a reshard
	failoverRate     = 300    // requests per second of the steady load
	failoverWorkers  = 32
	recoveryStreak   = 20 // right answers in a row that count as recovered
)

// Sample classes of the fault loads.
const (
	classUnique    = iota // a fresh counter: must be OK
	classExhausted        // an exhausted counter: must be OVER_LIMIT
	classLive             // a counter driven across its limit: either, counted exactly
)

// faultKeyName is the descriptor key of a class.
func faultKeyName(class int) string {
	switch class {
	case classExhausted:
		return "ex"
	case classLive:
		return "live"
	}
	return "u"
}

// runID keeps counters of one run apart from any other in the same topology.
func runID() string { return strconv.FormatInt(time.Now().UnixNano()%1e9, 36) }

// startFaultSidecar runs a sidecar on redisURL with faultDomain, the over-limit cache off
// and the given extra lines under redis:.
func startFaultSidecar(t *testing.T, redisURL, redisExtra, tail string) *sidecar {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, dir, "fault.yaml", faultDomain)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf(
		"redis: {url: %q%s}\nratelimit: {config_dir: %q, over_limit_cache_size: 0}\n%s", redisURL, redisExtra, dir, tail))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	warmUp(t, s.dial())
	return s
}

// warmUp sends requests on 64 fresh counters, spread over every Cluster slot range, until each
// has been answered once, so that the client has its connections and its scripts loaded on
// every node before a test counts anything.
func warmUp(t *testing.T, c rlsv3.RateLimitServiceClient) {
	t.Helper()
	id := runID()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < 64; i++ {
		for {
			sm := rlsSample(context.Background(), c, "fault", "u", fmt.Sprintf("w%sx%d", id, i), answerOK, 0)
			if sm.out == answerOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("warm-up: no answer within 15 s: %s %s", sm.out, sm.err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// exhaust sends exSends requests on each exhausted counter and checks that exactly exLimit
// were allowed.
func exhaust(t *testing.T, c rlsv3.RateLimitServiceClient, values []string) {
	t.Helper()
	for _, v := range values {
		ok := 0
		for i := 0; i < exSends; i++ {
			s := rlsSample(context.Background(), c, "fault", "ex", v, answerOK, classExhausted)
			if s.out == answerFail {
				t.Fatalf("exhausting %s: %s", v, s.err)
			}
			if s.out == answerOK {
				ok++
			}
		}
		if ok != exLimit {
			t.Fatalf("exhausting %s: %d of %d allowed, want %d", v, ok, exSends, exLimit)
		}
	}
}

// failoverRun is what runFailoverLoad saw.
type failoverRun struct {
	samples  []sample
	killAt   time.Time
	newAddr  string        // the promoted master
	foTook   time.Duration // the topology's own failover, from the kill
	foErr    error
	duration time.Duration
}

// runFailoverLoad puts the steady load through c: a quarter of the requests on the exhausted
// counters, the rest on fresh ones. After 1.5 s it calls kill, and it stops 3 s after the
// sidecar recovered (recoveryStreak right answers in a row) or 15 s after the kill. waitFailover
// measures the topology's own failover meanwhile.
func runFailoverLoad(t *testing.T, c rlsv3.RateLimitServiceClient, exhausted []string, kill func(), waitFailover func(time.Duration) (string, time.Duration, error)) failoverRun {
	t.Helper()
	id := runID()
	call := func(ctx context.Context, i int) sample {
		if i%4 == 0 {
			return rlsSample(ctx, c, "fault", "ex", exhausted[(i/4)%len(exhausted)], answerOver, classExhausted)
		}
		return rlsSample(ctx, c, "fault", "u", fmt.Sprintf("%sx%d", id, i), answerOK, classUnique)
	}
	var killNanos atomic.Int64
	var mu sync.Mutex
	var sawFail bool
	var streak, quiet int
	var recoveredAt time.Time
	observe := func(s sample) {
		k := killNanos.Load()
		if k == 0 || s.start.UnixNano() < k {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !s.good() {
			sawFail, streak = true, 0
			return
		}
		quiet++
		if sawFail {
			streak++
		}
		// A longer streak than recoveryStreak decides when to stop, so that a lucky run on
		// the healthy masters of a Cluster does not end the load before the failover.
		if recoveredAt.IsZero() && (streak >= 5*recoveryStreak || !sawFail && quiet >= 500) {
			recoveredAt = time.Now()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	stop := make(chan struct{})
	done := make(chan []sample, 1)
	began := time.Now()
	go func() {
		done <- pacedLoad(ctx, failoverRate, failoverWorkers, failoverRate*30, stop, call, observe)
	}()
	time.Sleep(1500 * time.Millisecond)

	run := failoverRun{killAt: time.Now()}
	killNanos.Store(run.killAt.UnixNano())
	kill()
	type fo struct {
		addr string
		took time.Duration
		err  error
	}
	foCh := make(chan fo, 1)
	go func() {
		a, d, err := waitFailover(20 * time.Second)
		foCh <- fo{a, d, err}
	}()
	for deadline := run.killAt.Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		r := recoveredAt
		mu.Unlock()
		if !r.IsZero() && time.Since(r) >= 3*time.Second {
			break
		}
	}
	close(stop)
	run.samples = <-done
	run.duration = time.Since(began)
	f := <-foCh
	run.newAddr, run.foTook, run.foErr = f.addr, f.took, f.err
	return run
}

// checkFailoverRun asserts what every failover run must show and returns the sidecar's
// recovery time: no wrong verdict, a recovery within 3 s of the topology's own failover, and at
// most 1% failed requests after it. keep selects the requests whose recovery is measured
// separately (a Cluster's killed master's counters); nil measures all together.
func checkFailoverRun(t *testing.T, run failoverRun, groups map[string]func(sample) bool) time.Duration {
	t.Helper()
	if run.foErr != nil {
		t.Fatalf("the topology did not fail over: %v", run.foErr)
	}
	all := stats(run.samples, nil)
	if all.wrong != 0 {
		n := 0
		for _, s := range run.samples {
			if s.wrong() && n < 5 {
				n++
				t.Errorf("wrong verdict %s for %s counter %s, %v after the kill", s.out, faultKeyName(s.class), s.key, s.start.Sub(run.killAt).Round(time.Millisecond))
			}
		}
		t.Fatalf("%d wrong verdicts in %d requests: a reply was matched to the wrong command, or a count was lost", all.wrong, all.n)
	}
	var rec time.Duration
	for name, keep := range groups {
		r, ok := recovery(run.samples, run.killAt, recoveryStreak, keep)
		if !ok {
			t.Fatalf("%s: no %d right answers in a row within %v of the kill (failover took %v); %s",
				name, recoveryStreak, run.duration, run.foTook, stats(run.samples, keep))
		}
		if r > rec {
			rec = r
		}
	}
	if rec > run.foTook+3*time.Second {
		t.Errorf("the sidecar recovered %v after the kill, more than 3 s after the topology's own failover (%v)", rec, run.foTook)
	}
	after := stats(run.samples, func(s sample) bool { return !s.start.Before(run.killAt.Add(rec)) })
	if pct(after.failed, after.n) > 1 {
		t.Errorf("after recovery %s (first error: %s), want at most 1%% failed; failures by time since the kill:\n%s",
			after, after.firstErr, failureTimeline(run.samples, run.killAt, run.killAt.Add(rec)))
	}
	if after.n < 100 {
		t.Errorf("only %d requests after recovery: the run stopped too early to show a steady state", after.n)
	}
	return rec
}

// checkAfterFailover checks the counters once the load is over: the exhausted ones still
// answer OVER_LIMIT and hold at least what was replicated before the kill, and fresh ones
// driven only now are exact, in answers and in Redis. nodeFor names the node that holds a key.
func checkAfterFailover(t *testing.T, c rlsv3.RateLimitServiceClient, exhausted []string, start int64, nodeFor func(key string) *redistest.Server) {
	t.Helper()
	for _, v := range exhausted {
		if s := rlsSample(context.Background(), c, "fault", "ex", v, answerOver, classExhausted); s.out != answerOver {
			t.Errorf("exhausted counter %s after the failover: %s %s, want OVER_LIMIT", v, s.out, s.err)
		}
		key := rlsKey("fault", "ex", v, start)
		if n := getInt(t, nodeFor(key), key); n < exSends {
			t.Errorf("exhausted counter %s holds %d after the failover, want at least the %d replicated before it", v, n, exSends)
		}
	}
	id := runID()
	var fresh []string
	for i := 0; i < 16; i++ {
		fresh = append(fresh, fmt.Sprintf("f%sx%d", id, i))
	}
	driveExact(t, c, "fault", "fr", fresh, frLimit, frSends)
	for _, v := range fresh {
		key := rlsKey("fault", "fr", v, start)
		if n := getInt(t, nodeFor(key), key); n != frSends {
			t.Errorf("counter %s holds %d in Redis, want exactly the %d requests sent", v, n, frSends)
		}
	}
}

// kill -9 of the Sentinel-managed master under load: one sidecar process rides the failover.
func TestSentinelFailoverUnderLoad(t *testing.T) {
	sn := redistest.StartSentinel(t)
	s := startFaultSidecar(t, sn.URL(0), faultTimeout, "")
	pid := s.cmd.Process.Pid
	c := s.dial()
	master := sn.Node(sn.MasterAddr())
	start := roomInWindow(t, master, 86400, 90)

	id := runID()
	var exhausted []string
	for i := 0; i < 16; i++ {
		exhausted = append(exhausted, fmt.Sprintf("e%sx%d", id, i))
	}
	exhaust(t, c, exhausted)
	for _, v := range exhausted {
		if n := getInt(t, master, rlsKey("fault", "ex", v, start)); n != exSends {
			t.Fatalf("counter %s holds %d in Redis, want %d", v, n, exSends)
		}
	}
	waitReplicated(t, master)

	var old string
	run := runFailoverLoad(t, c, exhausted, func() { old = sn.KillMaster() }, sn.WaitFailover)
	rec := checkFailoverRun(t, run, map[string]func(sample) bool{"all counters": nil})
	pidAlive(t, s, pid)
	s.waitReady()
	newMaster := sn.Node(sn.MasterAddr())
	checkAfterFailover(t, c, exhausted, start, func(string) *redistest.Server { return newMaster })
	pidAlive(t, s, pid)

	during := stats(run.samples, func(s sample) bool { return !s.start.Before(run.killAt) && s.start.Before(run.killAt.Add(rec)) })
	t.Logf("FAULT sentinel kill -9 master %s -> %s under %d req/s (redis.timeout 250ms): sentinel failover %v; sidecar pid %d recovered (%d right answers in a row) %v after the kill",
		old, run.newAddr, failoverRate, run.foTook.Round(time.Millisecond), pid, recoveryStreak, rec.Round(time.Millisecond))
	t.Logf("FAULT sentinel whole run %v: %s", run.duration.Round(time.Millisecond), stats(run.samples, nil))
	t.Logf("FAULT sentinel kill..recovery: %s", during)
	t.Logf("FAULT sentinel after: %d exhausted counters still OVER_LIMIT; %d fresh counters exact (%d of %d allowed, %d in Redis)",
		len(exhausted), 16, frLimit, frSends, frSends)
}

// tagOwner returns, for a sample of the fault load, the master that served its counter before
// the fault.
func tagOwner(owners *[16384]string, start int64) func(sample) string {
	return func(s sample) string { return owners[keySlot(rlsKey("fault", faultKeyName(s.class), s.key, start))] }
}

// kill -9 of a Cluster master that holds driven counters: its replica takes over and the
// sidecar follows, with no reply matched to the wrong command.
func TestClusterFailoverUnderLoad(t *testing.T) {
	cl := redistest.StartCluster(t)
	s := startFaultSidecar(t, cl.URL(), faultTimeout, "")
	pid := s.cmd.Process.Pid
	c := s.dial()
	masters := cl.Masters()
	start := roomInWindow(t, cl.Node(masters[0]), 86400, 90)
	owners := slotOwners(t, cl, masters[0])

	id := runID()
	var exhausted []string
	for i := 0; i < 16; i++ {
		exhausted = append(exhausted, fmt.Sprintf("e%sx%d", id, i))
	}
	exhaust(t, c, exhausted)
	byMaster := map[string]int{}
	for _, v := range exhausted {
		key := rlsKey("fault", "ex", v, start)
		m := cl.MasterFor(key)
		if m != owners[keySlot(key)] {
			t.Fatalf("CLUSTER NODES and CLUSTER KEYSLOT disagree on %s: %s vs %s", key, owners[keySlot(key)], m)
		}
		if n := getInt(t, cl.Node(m), key); n != exSends {
			t.Fatalf("counter %s holds %d on %s, want %d", v, n, m, exSends)
		}
		byMaster[m]++
	}
	target := cl.MasterFor(rlsKey("fault", "ex", exhausted[0], start))
	if len(byMaster) < 2 {
		t.Fatalf("every exhausted counter is on one master (%v): the test needs some on the others", byMaster)
	}
	for _, m := range masters {
		waitReplicated(t, cl.Node(m))
	}

	owner := tagOwner(&owners, start)
	onTarget := func(s sample) bool { return owner(s) == target }
	elsewhere := func(s sample) bool { return owner(s) != target }
	run := runFailoverLoad(t, c, exhausted, func() { cl.KillMaster(target) },
		func(d time.Duration) (string, time.Duration, error) { return cl.WaitFailover(target, d) })
	rec := checkFailoverRun(t, run, map[string]func(sample) bool{"the killed master's counters": onTarget, "the other masters' counters": elsewhere})
	recTarget, _ := recovery(run.samples, run.killAt, recoveryStreak, onTarget)
	recOthers, _ := recovery(run.samples, run.killAt, recoveryStreak, elsewhere)
	pidAlive(t, s, pid)
	s.waitReady()
	checkAfterFailover(t, c, exhausted, start, func(key string) *redistest.Server { return cl.Node(cl.MasterFor(key)) })
	pidAlive(t, s, pid)

	window := func(keep func(sample) bool) func(sample) bool {
		return func(s sample) bool {
			return keep(s) && !s.start.Before(run.killAt) && s.start.Before(run.killAt.Add(rec))
		}
	}
	t.Logf("FAULT cluster kill -9 master %s (%d of 16 exhausted counters) -> %s under %d req/s (redis.timeout 250ms): cluster failover %v; sidecar pid %d recovered %v after the kill (killed master's counters %v, others %v)",
		target, byMaster[target], run.newAddr, failoverRate, run.foTook.Round(time.Millisecond), pid, rec.Round(time.Millisecond), recTarget.Round(time.Millisecond), recOthers.Round(time.Millisecond))
	t.Logf("FAULT cluster whole run %v: %s", run.duration.Round(time.Millisecond), stats(run.samples, nil))
	t.Logf("FAULT cluster kill..recovery, killed master's counters: %s", stats(run.samples, window(onTarget)))
	t.Logf("FAULT cluster kill..recovery, other masters' counters: %s (first error: %s)", stats(run.samples, window(elsewhere)), stats(run.samples, window(elsewhere)).firstErr)
	t.Logf("FAULT cluster after: %d exhausted counters still OVER_LIMIT; 16 fresh counters exact (%d of %d allowed, %d in Redis)", len(exhausted), frLimit, frSends, frSends)
}

// A reshard under load: slots holding driven counters move to another master (keys and all,
// by MIGRATE) while requests keep coming. No verdict is wrong, at most 1% of the requests sent
// during the move fail, and counters driven through the move count every request exactly once.
func TestClusterReshardUnderLoad(t *testing.T) {
	cl := redistest.StartCluster(t)
	s := startFaultSidecar(t, cl.URL(), faultTimeout, "")
	pid := s.cmd.Process.Pid
	c := s.dial()
	masters := cl.Masters()
	from, to := masters[0], masters[1]
	start := roomInWindow(t, cl.Node(from), 86400, 90)
	owners := slotOwners(t, cl, from)

	// redis-cli --cluster reshard takes the source's lowest slots first.
	const moveSlots = 2000
	moved := map[int]bool{}
	for slot := 0; slot < 16384 && len(moved) < moveSlots; slot++ {
		if owners[slot] == from {
			moved[slot] = true
		}
	}
	id := runID()
	pick := func(class int, prefix string, n int, inMove bool) []string {
		var out []string
		for i := 0; len(out) < n; i++ {
			v := fmt.Sprintf("%s%sx%d", prefix, id, i)
			if moved[keySlot(rlsKey("fault", faultKeyName(class), v, start))] == inMove {
				out = append(out, v)
			}
		}
		return out
	}
	exMoved := pick(classExhausted, "m", 8, true)
	exhausted := append(append([]string{}, exMoved...), pick(classExhausted, "s", 8, false)...)
	live := pick(classLive, "l", 4, true)
	exhaust(t, c, exhausted)

	call := func(ctx context.Context, i int) sample {
		switch i % 4 {
		case 0:
			return rlsSample(ctx, c, "fault", "ex", exhausted[(i/4)%len(exhausted)], answerOver, classExhausted)
		case 1:
			sm := rlsSample(ctx, c, "fault", "live", live[(i/4)%len(live)], answerOK, classLive)
			sm.any = true
			return sm
		}
		return rlsSample(ctx, c, "fault", "u", fmt.Sprintf("%sx%d", id, i), answerOK, classUnique)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stop := make(chan struct{})
	done := make(chan []sample, 1)
	const rate = 400
	go func() { done <- pacedLoad(ctx, rate, failoverWorkers, rate*80, stop, call, nil) }()
	time.Sleep(time.Second)
	moveStart := time.Now()
	err := cl.Reshard(from, to, moveSlots)
	moveEnd := time.Now()
	time.Sleep(time.Second)
	close(stop)
	samples := <-done
	if err != nil {
		t.Fatalf("reshard: %v", err)
	}

	all := stats(samples, nil)
	inMove := stats(samples, func(s sample) bool { return !s.start.Before(moveStart) && s.start.Before(moveEnd) })
	if all.wrong != 0 {
		for _, s := range samples {
			if s.wrong() {
				t.Errorf("wrong verdict %s for %s counter %s, %v into the move", s.out, faultKeyName(s.class), s.key, s.start.Sub(moveStart).Round(time.Millisecond))
				break
			}
		}
		t.Fatalf("%d wrong verdicts in %d requests", all.wrong, all.n)
	}
	if pct(inMove.failed, inMove.n) > 1 {
		t.Errorf("during the move %s (first error: %s), want at most 1%% failed", inMove, inMove.firstErr)
	}
	if inMove.n < 100 {
		t.Errorf("only %d requests during the move: it was too short to show anything", inMove.n)
	}
	for _, v := range append(append([]string{}, exMoved...), live...) {
		class := classExhausted
		if strings.HasPrefix(v, "l") {
			class = classLive
		}
		key := rlsKey("fault", faultKeyName(class), v, start)
		if m := cl.MasterFor(key); m != to {
			t.Errorf("counter %s is on %s after the reshard, want %s: the test's counters did not move", key, m, to)
		}
	}
	// The counters driven through the move: never counted twice, never lost, never past the limit.
	for _, v := range live {
		var sent, ok, failed int64
		for _, s := range samples {
			if s.class == classLive && s.key == v {
				sent++
				switch s.out {
				case answerOK:
					ok++
				case answerFail:
					failed++
				}
			}
		}
		key := rlsKey("fault", "live", v, start)
		n := getInt(t, cl.Node(cl.MasterFor(key)), key)
		switch {
		case n > sent:
			t.Errorf("counter %s holds %d after %d requests: counted twice", v, n, sent)
		case n < sent-failed:
			t.Errorf("counter %s holds %d after %d answered requests: counts lost in the move", v, n, sent-failed)
		case ok > liveLimit:
			t.Errorf("counter %s: %d allowed, limit %d", v, ok, liveLimit)
		case failed == 0 && (n != sent || ok != min(sent, liveLimit)):
			t.Errorf("counter %s: %d allowed and %d counted of %d requests, want %d and %d", v, ok, n, sent, min(sent, liveLimit), sent)
		}
		if sent <= liveLimit {
			t.Errorf("counter %s got only %d requests, not past its limit of %d", v, sent, liveLimit)
		}
	}
	for _, v := range exhausted {
		if sm := rlsSample(context.Background(), c, "fault", "ex", v, answerOver, classExhausted); sm.out != answerOver {
			t.Errorf("exhausted counter %s after the reshard: %s %s, want OVER_LIMIT", v, sm.out, sm.err)
		}
	}
	pidAlive(t, s, pid)
	t.Logf("FAULT cluster reshard of %d slots %s -> %s under %d req/s (redis.timeout 250ms) took %v: during the move %s (first error: %q)",
		moveSlots, from, to, rate, moveEnd.Sub(moveStart).Round(time.Millisecond), inMove, inMove.firstErr)
	t.Logf("FAULT cluster reshard whole run: %s; %d exhausted counters (8 moved) stayed OVER_LIMIT; %d counters driven through the move counted exactly", all, len(exhausted), len(live))
}

// A master stops answering (SIGSTOP: its connections stay open, nothing comes back). Requests
// on its counters get the failure policy's answer within redis.timeout plus the sidecar's own
// overhead, requests on the other masters are not held up, and with a tiny redis.max_inflight
// the requests past the cap fail at once and are counted on /metrics.
func TestPausedNodeDeadlineAndInflightCap(t *testing.T) {
	cl := redistest.StartCluster(t)
	policies := `
policies:
  - name: open
    match: {path_prefix: /open/}
    auth: none
    limits: [{name: l, by: "header:x-principal", requests: 1000000, window: 24h}]
    failure: {limits: open}
  - name: closed
    match: {path_prefix: /closed/}
    auth: none
    limits: [{name: l, by: "header:x-principal", requests: 1000000, window: 24h}]
    failure: {limits: closed}
`
	s := startFaultSidecar(t, cl.URL(), ", timeout: 25ms", policies)
	pid := s.cmd.Process.Pid
	c := s.dial()
	authz := dialCheck(t, s)
	masters := cl.Masters()
	target := masters[0]
	start := roomInWindow(t, cl.Node(target), 86400, 60)
	owners := slotOwners(t, cl, target)

	id := runID()
	pick := func(slotOf func(v string) int, prefix string, onTarget bool) string {
		for i := 0; ; i++ {
			v := fmt.Sprintf("%s%sx%d", prefix, id, i)
			if (owners[slotOf(v)] == target) == onTarget {
				return v
			}
		}
	}
	rlsSlot := func(v string) int { return keySlot(rlsKey("fault", "u", v, start)) }
	policySlot := func(policy string) func(string) int {
		return func(v string) int { return keySlot(policyKey(policy, v)) }
	}
	rlsT, rlsO := pick(rlsSlot, "r", true), pick(rlsSlot, "r", false)
	openT, openO := pick(policySlot("open"), "o", true), pick(policySlot("open"), "o", false)
	closedT := pick(policySlot("closed"), "c", true)

	// Warm up: scripts loaded and connections open to every master; the keys are where the
	// test thinks they are.
	for _, w := range []sample{
		rlsSample(context.Background(), c, "fault", "u", rlsT, answerOK, 0),
		rlsSample(context.Background(), c, "fault", "u", rlsO, answerOK, 0),
		checkSample(context.Background(), authz, "open", openT, answerOK, 0),
		checkSample(context.Background(), authz, "open", openO, answerOK, 0),
		checkSample(context.Background(), authz, "closed", closedT, answerOK, 0),
	} {
		if w.out != answerOK {
			t.Fatalf("warm-up on %s: %s %s", w.key, w.out, w.err)
		}
	}
	for _, key := range []string{rlsKey("fault", "u", rlsT, start), policyKey("open", openT), policyKey("closed", closedT)} {
		if getInt(t, cl.Node(target), key) != 1 {
			t.Fatalf("%s is not on %s with a count of 1: the test's key names are wrong", key, target)
		}
	}

	// Classes of the paused run.
	const (
		rlsTarget = iota
		rlsOther
		openTarget
		closedTarget
		openOther
		nClasses
	)
	names := [nClasses]string{"RLS, paused master", "RLS, other master", "Check failure.limits open, paused master", "Check failure.limits closed, paused master", "Check, other master"}
	one := func(ctx context.Context, class int) sample {
		var sm sample
		switch class {
		case rlsTarget:
			sm = rlsSample(ctx, c, "fault", "u", rlsT, answerOK, class)
		case rlsOther:
			sm = rlsSample(ctx, c, "fault", "u", rlsO, answerOK, class)
		case openTarget:
			sm = checkSample(ctx, authz, "open", openT, answerOK, class)
		case closedTarget:
			sm = checkSample(ctx, authz, "closed", closedT, answerOK, class)
		default:
			sm = checkSample(ctx, authz, "open", openO, answerOK, class)
		}
		return sm
	}
	busyBefore, found := inflightRejected(t, s)
	if !found {
		t.Errorf("no in-flight rejection metric on /metrics (looked for %v)", inflightMetrics)
	}

	// Before the cluster's node timeout (1 s) can start a failover.
	const pausedFor = 700 * time.Millisecond
	cl.PauseNode(target)
	pausedAt := time.Now()
	samples := closedLoop(16, pausedAt.Add(pausedFor), func(ctx context.Context, i int) sample { return one(ctx, i%nClasses) })
	cl.ResumeNode(target)
	resumedAt := time.Now()

	var byClass [nClasses][]sample
	for _, sm := range samples {
		byClass[sm.class] = append(byClass[sm.class], sm)
	}
	wantErr := [nClasses]string{rlsTarget: "code = Unavailable", openTarget: "degraded", closedTarget: "unavailable"}
	for class, ss := range byClass {
		if len(ss) < 10 {
			t.Errorf("%s: only %d requests while paused", names[class], len(ss))
		}
		st := stats(ss, nil)
		t.Logf("FAULT paused master (SIGSTOP, redis.timeout 25ms), %s: %s (first error: %q)", names[class], st, st.firstErr)
		if want := wantErr[class]; want != "" {
			for _, sm := range ss {
				if sm.out != answerFail || !strings.Contains(sm.err, want) {
					t.Errorf("%s: %s %q, want the failure policy's answer (%s)", names[class], sm.out, sm.err, want)
					break
				}
			}
		} else if pct(st.failed, st.n) > 5 {
			t.Errorf("%s: %s (first error: %s): a paused master held up the others", names[class], st, st.firstErr)
		}
	}
	target3 := stats(samples, func(sm sample) bool {
		return sm.class == rlsTarget || sm.class == openTarget || sm.class == closedTarget
	})
	if target3.p99 >= 250*time.Millisecond {
		t.Errorf("paused master: p99 %v (max %v), want well under 250 ms (redis.timeout 25ms + overhead)", target3.p99, target3.max)
	}
	if v, _ := inflightRejected(t, s); v != busyBefore {
		t.Errorf("in-flight rejections went from %v to %v under the default redis.max_inflight", busyBefore, v)
	}
	back := waitAnswers(t, c, rlsT, 10*time.Second)
	if sm := checkSample(context.Background(), authz, "open", openT, answerOK, 0); sm.out != answerOK {
		t.Errorf("Check on the resumed master: %s %s, want OK without degradation", sm.out, sm.err)
	}
	pidAlive(t, s, pid)
	t.Logf("FAULT paused master for %v: %s across its counters; right answers again %v after SIGCONT",
		resumedAt.Sub(pausedAt).Round(time.Millisecond), target3, back.Round(time.Millisecond))

	t.Run("max_inflight", func(t *testing.T) {
		const maxInflight = 2
		b := startFaultSidecar(t, cl.URL(), fmt.Sprintf(", timeout: 25ms, max_inflight: %d", maxInflight), "")
		bc := b.dial()
		for _, v := range []string{rlsT, rlsO} {
			if sm := rlsSample(context.Background(), bc, "fault", "u", v, answerOK, 0); sm.out != answerOK {
				t.Fatalf("warm-up on %s: %s %s", v, sm.out, sm.err)
			}
		}
		before, found := inflightRejected(t, b)
		if !found {
			t.Fatalf("no in-flight rejection metric on /metrics (looked for %v)", inflightMetrics)
		}
		// Wait for the cluster to settle after the first pause before pausing again.
		waitAnswers(t, bc, rlsT, 10*time.Second)
		cl.PauseNode(target)
		pausedAt := time.Now()
		ss := closedLoop(32, pausedAt.Add(400*time.Millisecond), func(ctx context.Context, i int) sample {
			if i%2 == 0 {
				return rlsSample(ctx, bc, "fault", "u", rlsT, answerOK, rlsTarget)
			}
			return rlsSample(ctx, bc, "fault", "u", rlsO, answerOK, rlsOther)
		})
		cl.ResumeNode(target)
		after, _ := inflightRejected(t, b)
		rejected := after - before
		failed := stats(ss, func(sm sample) bool { return sm.out == answerFail })
		all := stats(ss, nil)
		t.Logf("FAULT paused master, redis.max_inflight %d, 32 concurrent callers: %s; %v rejected at once by the cap (metric); failed requests: p50 %v p99 %v",
			maxInflight, all, rejected, failed.p50, failed.p99)
		for _, sm := range ss {
			if sm.class == rlsTarget && sm.out != answerFail {
				t.Fatalf("paused master's counter answered %s while paused", sm.out)
			}
			if sm.out == answerFail && !strings.Contains(sm.err, "code = Unavailable") {
				t.Fatalf("a request past the cap failed with %q, want Unavailable", sm.err)
			}
		}
		if rejected < 1 || rejected < 0.25*float64(failed.n) {
			t.Errorf("%v in-flight rejections counted for %d failed requests with a cap of %d: the cap did not fail them fast", rejected, failed.n, maxInflight)
		}
		if failed.p50 >= 25*time.Millisecond {
			t.Errorf("failed requests' p50 %v: past the cap they should fail at once, not at redis.timeout (25ms)", failed.p50)
		}
		// Slots are given back: once the master answers, the capped sidecar answers again.
		back := waitAnswers(t, bc, rlsT, 10*time.Second)
		for i := 0; i < recoveryStreak; i++ {
			if sm := rlsSample(context.Background(), bc, "fault", "u", rlsT, answerOK, 0); sm.out != answerOK {
				t.Fatalf("after the pause, request %d with redis.max_inflight %d: %s %s (in-flight slots not given back?)", i, maxInflight, sm.out, sm.err)
			}
		}
		t.Logf("FAULT redis.max_inflight %d: right answers again %v after SIGCONT, %d in a row", maxInflight, back.Round(time.Millisecond), recoveryStreak)
	})
}

// inflightMetrics are the names the in-flight cap's counter has had.
var inflightMetrics = []string{"extauthz_redis_inflight_rejected_total", "extauthz_redis_busy_total"}

// inflightRejected reads the in-flight cap's counter.
func inflightRejected(t *testing.T, s *sidecar) (float64, bool) {
	t.Helper()
	for _, name := range inflightMetrics {
		if v, ok := metricSum(t, s, name); ok {
			return v, true
		}
	}
	return 0, false
}

// policyKey is the Redis key of a policy's limit "l" by header x-principal, for principals
// that need no escaping.
func policyKey(policy, principal string) string {
	return "rl:{" + policy + ":l:header%3A" + principal + "}"
}

// closedLoop runs workers goroutines that each send request after request until until, and
// returns every sample.
func closedLoop(workers int, until time.Time, call func(ctx context.Context, i int) sample) []sample {
	var mu sync.Mutex
	var out []sample
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) {
				i := int(next.Add(1) - 1)
				begin := time.Now()
				sm := call(context.Background(), i)
				sm.start, sm.took = begin, time.Since(begin)
				mu.Lock()
				out = append(out, sm)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// waitAnswers sends requests on counter v until one is answered OK and returns how long that
// took; it fails the test after timeout.
func waitAnswers(t *testing.T, c rlsv3.RateLimitServiceClient, v string, timeout time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for {
		sm := rlsSample(context.Background(), c, "fault", "u", v, answerOK, 0)
		if sm.out == answerOK {
			return time.Since(began)
		}
		if time.Since(began) > timeout {
			t.Fatalf("no right answer on %s within %v: %s %s", v, timeout, sm.out, sm.err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// failureTimeline lists, per 250 ms from t0, the failed requests started from since on, with
// the first error of each interval, for a failure message.
func failureTimeline(ss []sample, t0, since time.Time) string {
	type bucket struct {
		n, failed int
		err       string
	}
	var bs []bucket
	for _, s := range ss {
		if s.start.Before(since) {
			continue
		}
		i := int(s.start.Sub(t0) / (250 * time.Millisecond))
		for len(bs) <= i {
			bs = append(bs, bucket{})
		}
		bs[i].n++
		if s.out == answerFail {
			bs[i].failed++
			if bs[i].err == "" {
				bs[i].err = s.err
			}
		}
	}
	var b strings.Builder
	for i, bk := range bs {
		if bk.failed > 0 {
			fmt.Fprintf(&b, "  %5v: %d of %d failed (%s)\n", time.Duration(i)*250*time.Millisecond, bk.failed, bk.n, bk.err)
		}
	}
	return b.String()
}

// The Sentinel and Cluster form of TestStartsWithoutRedis: the sidecar starts while every node
// of the topology (sentinels included) is stopped with SIGSTOP, so that connections are
// accepted by the kernel and nothing answers, the hardest way for a client to be built. It
// serves what needs no Redis, answers the rest with a fast Unavailable, reports not ready, and
// turns ready by itself once the nodes continue, with no restart.
func TestStartsWhileTopologyHangs(t *testing.T) {
	for _, kind := range []string{"sentinel", "cluster"} {
		t.Run(kind, func(t *testing.T) {
			var url string
			var nodes []*redistest.Server
			if kind == "sentinel" {
				sn := redistest.StartSentinel(t)
				url = sn.URL(0)
				for _, a := range append(sn.SentinelAddrs(), sn.DataAddrs()...) {
					nodes = append(nodes, sn.Node(a))
				}
			} else {
				cl := redistest.StartCluster(t)
				url = cl.URL()
				for _, a := range cl.Addrs() {
					nodes = append(nodes, cl.Node(a))
				}
			}
			for _, n := range nodes {
				n.Pause()
			}
			resumed := false
			resume := func() {
				if !resumed {
					resumed = true
					for _, n := range nodes {
						n.Resume()
					}
				}
			}
			defer resume()

			dir := t.TempDir()
			writeFile(t, dir, "fault.yaml", faultDomain)
			cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf("redis: {url: %q}\nratelimit: {config_dir: %q}\n", url, dir))
			s := startSidecar(t, "--config", cfg)
			started := time.Now()
			pid := s.cmd.Process.Pid
			c := s.dial()
			if code, body := s.get("/readyz"); code != 503 {
				t.Fatalf("/readyz with every node stopped = %d %q, want 503", code, body)
			}
			if sm := rlsSample(context.Background(), c, "no-such-domain", "u", "x", answerOK, 0); sm.out != answerOK {
				t.Fatalf("unknown domain with every node stopped: %s %s, want OK", sm.out, sm.err)
			}
			var worst time.Duration
			for i := 0; i < 5; i++ {
				begin := time.Now()
				sm := rlsSample(context.Background(), c, "fault", "u", "lazy", answerOK, 0)
				took := time.Since(begin)
				worst = max(worst, took)
				if sm.out != answerFail || !strings.Contains(sm.err, "code = Unavailable") {
					t.Fatalf("limited domain with every node stopped: %s %q, want Unavailable", sm.out, sm.err)
				}
			}
			if worst > time.Second {
				t.Errorf("limited domain with every node stopped answered in up to %v, want about redis.timeout", worst)
			}

			// Past redis.dial_timeout (1 s), so that the client's first attempts have failed
			// and it is retrying when the nodes continue.
			time.Sleep(time.Until(started.Add(1500 * time.Millisecond)))
			if code, body := s.get("/readyz"); code != 503 {
				t.Fatalf("/readyz 1.5 s after start with every node stopped = %d %q, want 503", code, body)
			}
			resume()
			up := time.Now()
			for {
				code, _ := s.get("/readyz")
				sm := rlsSample(context.Background(), c, "fault", "u", "lazy", answerOK, 0)
				if code == 200 && sm.out == answerOK {
					break
				}
				if exited(s) {
					t.Fatalf("extauthz exited while the nodes were stopped:\n%s", s.logs.String())
				}
				if time.Since(up) > 15*time.Second {
					t.Fatalf("not ready 15 s after the nodes continued (/readyz %d, %s %s)\n%s", code, sm.out, sm.err, s.logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			pidAlive(t, s, pid)
			t.Logf("FAULT %s, every node SIGSTOPped for 1.5 s from start: Unavailable in at most %v meanwhile; ready and answering %v after SIGCONT, same pid %d",
				kind, worst.Round(time.Millisecond), time.Since(up).Round(time.Millisecond), pid)
		})
	}
}
