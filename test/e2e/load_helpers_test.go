package e2e

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"

	"github.com/extauthz/extauthz/internal/redistest"
)

// This file holds what the fault and scale tests share: a paced load with one record per
// request, the numbers drawn from it, and a few facts read straight from Redis (replication
// offsets, Cluster slots, counters) without any client library.

// outcome is what one request got back.
type outcome uint8

const (
	answerOK   outcome = iota // answered: allowed
	answerOver                // answered: over the limit
	answerFail                // no verdict: an error, or a failure-policy answer
)

func (o outcome) String() string {
	switch o {
	case answerOK:
		return "OK"
	case answerOver:
		return "OVER_LIMIT"
	}
	return "failed"
}

// sample is one request of a load.
type sample struct {
	class int       // what the caller was driving (its own numbering)
	key   string    // the descriptor value or principal
	start time.Time // when the request was sent
	took  time.Duration
	out   outcome
	want  outcome // the verdict the request must get when it is answered
	any   bool    // either verdict is right (a counter driven across its limit)
	err   string
}

// wrong reports an answer that contradicts the verdict the request must get.
func (s sample) wrong() bool { return s.out != answerFail && !s.any && s.out != s.want }

// good is an answer with the right verdict.
func (s sample) good() bool { return s.out != answerFail && (s.any || s.out == s.want) }

// pacedLoad sends rate requests a second on workers goroutines until stop is closed, max
// requests have been sent, or ctx ends, and returns one sample per request, by start time.
// call makes request i (0, 1, 2, ...) and fills in everything but start and took; observe,
// when set, sees every sample as it completes.
func pacedLoad(ctx context.Context, rate, workers, max int, stop <-chan struct{}, call func(ctx context.Context, i int) sample, observe func(sample)) []sample {
	tokens := make(chan int, workers)
	go func() {
		defer close(tokens)
		const tick = 10 * time.Millisecond
		tk := time.NewTicker(tick)
		defer tk.Stop()
		begin := time.Now()
		sent := 0
		for sent < max {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			case now := <-tk.C:
				due := int(float64(rate) * now.Sub(begin).Seconds())
				for ; sent < due && sent < max; sent++ {
					select {
					case tokens <- sent:
					case <-stop:
						return
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	var mu sync.Mutex
	out := make([]sample, 0, max)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tokens {
				start := time.Now()
				s := call(ctx, i)
				s.start, s.took = start, time.Since(start)
				if observe != nil {
					observe(s)
				}
				mu.Lock()
				out = append(out, s)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
	return out
}

// rlsSample sends one ShouldRateLimit with one descriptor (key, value) and a 2 s deadline of
// its own, and records the answer.
func rlsSample(ctx context.Context, c rlsv3.RateLimitServiceClient, domain, key, value string, want outcome, class int) sample {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s := sample{class: class, key: value, want: want}
	resp, err := c.ShouldRateLimit(ctx, rlsRequest(domain, key, value))
	switch {
	case err != nil:
		s.out, s.err = answerFail, err.Error()
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OK:
		s.out = answerOK
	case resp.GetOverallCode() == rlsv3.RateLimitResponse_OVER_LIMIT:
		s.out = answerOver
	default:
		s.out, s.err = answerFail, "overall code "+resp.GetOverallCode().String()
	}
	return s
}

// loadStats are the numbers of a set of samples.
type loadStats struct {
	n, failed, wrong int
	p50, p99, max    time.Duration
	firstErr         string
}

func (st loadStats) String() string {
	return fmt.Sprintf("%d requests, %d failed (%.2f%%), %d wrong verdicts, latency p50 %v p99 %v max %v",
		st.n, st.failed, pct(st.failed, st.n), st.wrong, st.p50.Round(10*time.Microsecond), st.p99.Round(10*time.Microsecond), st.max.Round(10*time.Microsecond))
}

func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// stats summarizes the samples keep selects (all when keep is nil).
func stats(ss []sample, keep func(sample) bool) loadStats {
	var st loadStats
	var lat []time.Duration
	for _, s := range ss {
		if keep != nil && !keep(s) {
			continue
		}
		st.n++
		lat = append(lat, s.took)
		if s.out == answerFail {
			st.failed++
			if st.firstErr == "" {
				st.firstErr = s.err
			}
		}
		if s.wrong() {
			st.wrong++
		}
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		st.p50 = lat[len(lat)/2]
		st.p99 = lat[(len(lat)*99)/100]
		st.max = lat[len(lat)-1]
	}
	return st
}

// recovery is the time from t0 to the start of the first run of streak requests in a row (by
// start time, among those keep selects) that all got the right verdict, counted from the first
// failure at or after t0. ok is false when no such run exists; when nothing failed after t0
// the recovery is 0.
func recovery(ss []sample, t0 time.Time, streak int, keep func(sample) bool) (d time.Duration, ok bool) {
	var after []sample
	for _, s := range ss {
		if !s.start.Before(t0) && (keep == nil || keep(s)) {
			after = append(after, s)
		}
	}
	first := -1
	for i, s := range after {
		if !s.good() {
			first = i
			break
		}
	}
	if first < 0 {
		return 0, true
	}
	run := 0
	for i := first; i < len(after); i++ {
		if !after[i].good() {
			run = 0
			continue
		}
		run++
		if run == streak {
			return after[i-streak+1].start.Sub(t0), true
		}
	}
	return 0, false
}

// metricSum adds up every sample of the metric name (any labels) on the sidecar's /metrics;
// found is false when the metric is absent.
func metricSum(t *testing.T, s *sidecar, name string) (sum float64, found bool) {
	t.Helper()
	_, body := s.get("/metrics")
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{[^}]*\})? (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("metric %s: %v", name, err)
		}
		sum += v
		found = true
	}
	return sum, found
}

// pidAlive checks that the sidecar is the process it was: not exited, same PID.
func pidAlive(t *testing.T, s *sidecar, pid int) {
	t.Helper()
	if exited(s) {
		t.Fatalf("extauthz (pid %d) exited: %v\n%s", pid, s.exitErr, s.logs.String())
	}
	if got := s.cmd.Process.Pid; got != pid {
		t.Fatalf("extauthz pid = %d, want %d (restarted)", got, pid)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		t.Fatalf("extauthz pid %d is gone: %v", pid, err)
	}
}

// infoValue reads field from the text of an INFO reply.
func infoValue(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// waitReplicated waits until every replica of the master at n has acknowledged the master's
// replication offset as it is now, so that killing the master loses none of what was written
// so far (Redis replication is asynchronous: without this, a failover may forget counts).
func waitReplicated(t *testing.T, n *redistest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := n.Do(ctx, "INFO", "replication")
	if err != nil {
		t.Fatalf("INFO replication on %s: %v", n.Addr(), err)
	}
	want, err := strconv.ParseInt(infoValue(info, "master_repl_offset"), 10, 64)
	if err != nil {
		t.Fatalf("master_repl_offset of %s: %v\n%s", n.Addr(), err, info)
	}
	for {
		info, err = n.Do(ctx, "INFO", "replication")
		if err != nil {
			t.Fatalf("INFO replication on %s: %v", n.Addr(), err)
		}
		reps, _ := strconv.Atoi(infoValue(info, "connected_slaves"))
		acked := 0
		for i := 0; i < reps; i++ {
			// slave0:ip=127.0.0.1,port=1234,state=online,offset=5678,lag=0
			for _, kv := range strings.Split(infoValue(info, "slave"+strconv.Itoa(i)), ",") {
				if v, ok := strings.CutPrefix(kv, "offset="); ok {
					if off, _ := strconv.ParseInt(v, 10, 64); off >= want {
						acked++
					}
				}
			}
		}
		if reps > 0 && acked == reps {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("the replicas of %s did not reach offset %d:\n%s", n.Addr(), want, info)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// crc16 is Redis Cluster's CRC16 (XMODEM).
func crc16(b string) uint16 {
	var crc uint16
	for i := 0; i < len(b); i++ {
		crc ^= uint16(b[i]) << 8
		for j := 0; j < 8; j++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// keySlot is the Cluster slot of key, hash tags included.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

// slotOwners maps every slot to the address of its master, from CLUSTER NODES asked of the
// node at addr.
func slotOwners(t *testing.T, c *redistest.Cluster, addr string) [16384]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := c.Node(addr).Do(ctx, "CLUSTER", "NODES")
	if err != nil {
		t.Fatalf("CLUSTER NODES on %s: %v", addr, err)
	}
	var owners [16384]string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		// <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "master") {
			continue
		}
		node, _, _ := strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") { // a slot being migrated or imported
				continue
			}
			lo, hi, isRange := strings.Cut(r, "-")
			a, err1 := strconv.Atoi(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.Atoi(hi)
			}
			if err1 != nil || err2 != nil {
				t.Fatalf("CLUSTER NODES on %s: slot range %q", addr, r)
			}
			for s := a; s <= b; s++ {
				owners[s] = node
			}
		}
	}
	for s, o := range owners {
		if o == "" {
			t.Fatalf("CLUSTER NODES on %s: slot %d has no master", addr, s)
		}
	}
	return owners
}

// redisTime is the Unix time in seconds of the node at n.
func redisTime(t *testing.T, n *redistest.Server) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return redisNow(t, ctx, n)
}

// roomInWindow sleeps past the next boundary of the epoch-aligned windows of size window
// seconds when fewer than need seconds are left in the current one by n's clock, and returns
// the start of the window the test then runs in.
func roomInWindow(t *testing.T, n *redistest.Server, window, need int64) int64 {
	t.Helper()
	now := redisTime(t, n)
	if left := window - now%window; left < need {
		t.Logf("only %d s left in the current %d s window: waiting for the next one", left, window)
		time.Sleep(time.Duration(left)*time.Second + 200*time.Millisecond)
		now = redisTime(t, n)
	}
	return now - now%window
}

// rlsKey is the Redis key of a one-entry RLS counter in the day window that starts at start,
// for names that need no escaping (letters and digits).
func rlsKey(domain, key, value string, start int64) string {
	return fmt.Sprintf("rls:{%s.%s_%s}:86400:%d", domain, key, value, start)
}

// getInt reads an integer key from the node at n; -1 when it is missing. A reply that is no
// integer (a MOVED error, for one) fails the test.
func getInt(t *testing.T, n *redistest.Server, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := n.Do(ctx, "GET", key)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", key, n.Addr(), err)
	}
	if out == "" {
		return -1
	}
	v, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		t.Fatalf("GET %s on %s = %q", key, n.Addr(), out)
	}
	return v
}

// driveExact sends sends requests on each of values (concurrently, 8 at a time) and checks
// that each got exactly limit OK answers, the rest OVER_LIMIT, and nothing failed.
func driveExact(t *testing.T, c rlsv3.RateLimitServiceClient, domain, key string, values []string, limit, sends int) {
	t.Helper()
	jobs := make(chan string)
	var mu sync.Mutex
	ok := map[string]int{}
	var failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for v := range jobs {
				s := rlsSample(context.Background(), c, domain, key, v, answerOK, 0)
				switch s.out {
				case answerFail:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, s.err)
				case answerOK:
					mu.Lock()
					ok[v]++
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < sends; i++ {
		for _, v := range values {
			jobs <- v
		}
	}
	close(jobs)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests on fresh keys failed, the first with %v", n, sends*len(values), firstErr.Load())
	}
	for _, v := range values {
		if ok[v] != limit {
			t.Errorf("fresh key %s: %d OK of %d sent, want exactly %d", v, ok[v], sends, limit)
		}
	}
}

// checkSample sends one ext_authz Check for principal (the x-principal header) under the named
// policy with a 2 s deadline of its own. An allowed answer marked degraded (decided on local
// counts because Redis failed) is a failure-policy answer: answerFail with err "degraded";
// UNAVAILABLE is answerFail with err "unavailable".
func checkSample(ctx context.Context, c authv3.AuthorizationClient, policy, principal string, want outcome, class int) sample {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s := sample{class: class, key: principal, want: want}
	resp, err := c.Check(ctx, checkRequest("GET", "/"+policy+"/x", map[string]string{"x-principal": principal}, policy))
	switch code := codes.Code(resp.GetStatus().GetCode()); {
	case err != nil:
		s.out, s.err = answerFail, err.Error()
	case code == codes.OK:
		if _, degraded := headerValue(resp.GetOkResponse().GetHeaders(), "x-extauthz-degraded"); degraded {
			s.out, s.err = answerFail, "degraded"
		} else {
			s.out = answerOK
		}
	case code == codes.ResourceExhausted:
		s.out = answerOver
	case code == codes.Unavailable:
		s.out, s.err = answerFail, "unavailable"
	default:
		s.out, s.err = answerFail, "status "+code.String()
	}
	return s
}
