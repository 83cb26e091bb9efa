package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// The soak's load runs in the orchestrator rather than in loadgen because it mixes both RPCs
// and many principals in one schedule, and because the sampler needs its counts interval by
// interval rather than once at the end.

// outcome is how a soak call ended, as loadgen classifies it.
type outcome int

const (
	outOK     outcome = iota // allowed
	outOver                  // over a limit (OVER_LIMIT; Check RESOURCE_EXHAUSTED or 429)
	outDenied                // a Check denied for another reason (here: 401, no identity)
	outError                 // a gRPC error, a timeout, an error_response or an unknown answer
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"ok", "over", "denied", "errors"}

// kind is one kind of request in the mix.
type kind struct {
	name   string
	weight int // share of all calls, out of the sum of the weights
	// expect is the set of outcomes that are right for this kind; any other answer that is not
	// an error counts as wrong.
	expect []outcome
}

// The mix: half ShouldRateLimit, half Check. Every principal, key and counter is drawn in turn
// from a fixed set (cycling through it), so that after the first few seconds every cache,
// memo and counter the sidecar keeps is as large as this load makes it, and anything that
// still grows after that is not a cache filling up.
const (
	kindRLSUser   = iota // domain soak, descriptor user=u<i>: a high limit, always OK
	kindRLSHot           // descriptors user=u<i> and hot=h<j>: 40 hot values over their 100/min
	kindSession          // a Check with one of the sessions
	kindHotSess          // a Check with one of 5 hot sessions, over the 600/min per-principal limit
	kindAPIKey           // a Check with one of the API keys (half of them tier pro)
	kindNoSession        // a Check with a well-signed cookie whose session is not in Redis: 401
	kindAnonymous        // a Check without credentials: 401
	nKinds
)

var kinds = [nKinds]kind{
	kindRLSUser:   {"rls user", 75, []outcome{outOK}},
	kindRLSHot:    {"rls user+hot", 25, []outcome{outOK, outOver}},
	kindSession:   {"check session", 70, []outcome{outOK}},
	kindHotSess:   {"check hot session", 8, []outcome{outOK, outOver}},
	kindAPIKey:    {"check api key", 15, []outcome{outOK}},
	kindNoSession: {"check unknown session", 4, []outcome{outDenied}},
	kindAnonymous: {"check anonymous", 3, []outcome{outDenied}},
}

// Sizes of the small sets in the mix.
const (
	soakHotValues   = 40
	soakHotSessions = 5
	soakNoSessions  = 1000
)

// fixtures are the credentials and descriptor values the load draws from.
type fixtures struct {
	rlsValues []string // u0...: as many as sessions
	hotValues []string
	sessions  []string // Cookie header values of sessions in Redis
	hot       []string // Cookie header values of the hot sessions (also in Redis)
	missing   []string // Cookie header values of well-signed sessions not in Redis
	apiKeys   []string
}

// stats counts one phase's calls. The sampler takes the counts of each interval with take;
// the totals per kind stay for the report.
type stats struct {
	n       [nOutcomes]atomic.Uint64
	wrong   atomic.Uint64
	dropped atomic.Uint64
	hist    latencyHist
	perKind [nKinds][nOutcomes + 1]atomic.Uint64 // the last column counts wrong answers

	mu       sync.Mutex
	errKinds map[string]uint64 // errors by class: gRPC code, or error_response
	firstErr error
}

func (s *stats) record(k int, o outcome, err error, latency time.Duration) {
	s.n[o].Add(1)
	s.perKind[k][o].Add(1)
	s.hist.record(latency)
	if o != outError && !expected(k, o) {
		s.wrong.Add(1)
		s.perKind[k][nOutcomes].Add(1)
	}
	if o == outError {
		s.mu.Lock()
		if s.errKinds == nil {
			s.errKinds = map[string]uint64{}
		}
		s.errKinds[errClass(err)]++
		if s.firstErr == nil {
			s.firstErr = fmt.Errorf("%s: %w", kinds[k].name, err)
		}
		s.mu.Unlock()
	}
}

// errResponse is a Check answered with error_response: the sidecar could not decide.
type errResponse struct{ msg string }

func (e errResponse) Error() string { return "check answered error_response: " + e.msg }

// errClass names the class of a call's error for the report: a bounded set of names.
func errClass(err error) string {
	var er errResponse
	if errors.As(err, &er) {
		return "Check error_response"
	}
	if st, ok := status.FromError(err); ok {
		return "gRPC " + st.Code().String()
	}
	return "other"
}

// errorSummary is the errors by class and the first one, for the report.
func (s *stats) errorSummary() (map[string]uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.errKinds), s.firstErr
}

func expected(k int, o outcome) bool {
	for _, e := range kinds[k].expect {
		if e == o {
			return true
		}
	}
	return false
}

// intervalCounts are the counts since the last take.
type intervalCounts struct {
	n              [nOutcomes]uint64
	wrong, dropped uint64
	p50, p99       time.Duration
	requests       uint64
}

// take returns the counts since the last take and starts a new interval. A call that ends
// while take runs may land in either interval; over a soak that is noise.
func (s *stats) take() intervalCounts {
	var c intervalCounts
	for i := range c.n {
		c.n[i] = s.n[i].Swap(0)
		c.requests += c.n[i]
	}
	c.wrong, c.dropped = s.wrong.Swap(0), s.dropped.Swap(0)
	h := s.hist.take()
	c.p50, c.p99 = h.quantile(0.50), h.quantile(0.99)
	return c
}

// latencyHist buckets latencies in quarter powers of two of microseconds (19% wide), which is
// enough to see a trend in p99.
type latencyHist struct {
	b [latencyBuckets]atomic.Uint64
}

const latencyBuckets = 128 // 2^(128/4) µs is over an hour

type histCounts [latencyBuckets]uint64

func (h *latencyHist) record(d time.Duration) {
	us := max(d.Microseconds(), 0)
	i := min(int(4*math.Log2(float64(us)+1)), latencyBuckets-1)
	h.b[i].Add(1)
}

func (h *latencyHist) take() histCounts {
	var c histCounts
	for i := range c {
		c[i] = h.b[i].Swap(0)
	}
	return c
}

// quantile returns the upper edge of the bucket holding quantile q, or 0 without calls.
func (c histCounts) quantile(q float64) time.Duration {
	var total uint64
	for _, n := range c {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range c {
		seen += n
		if seen >= rank {
			return time.Duration(math.Exp2(float64(i+1)/4)-1) * time.Microsecond
		}
	}
	return 0
}

// driver makes the soak's calls over a few gRPC connections.
type driver struct {
	conns   []*grpc.ClientConn
	fx      *fixtures
	timeout time.Duration
	next    [nKinds]atomic.Uint64 // per kind, the next element of its set to use
	weights [nKinds + 1]int       // cumulative weights
}

func newDriver(conns []*grpc.ClientConn, fx *fixtures, timeout time.Duration) *driver {
	d := &driver{conns: conns, fx: fx, timeout: timeout}
	for i, k := range kinds {
		d.weights[i+1] = d.weights[i] + k.weight
	}
	return d
}

// dialSoak opens n connections to addr and waits until each is ready.
func dialSoak(ctx context.Context, addr string, n int) ([]*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var conns []*grpc.ClientConn
	for range n {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			closeConns(conns)
			return nil, err
		}
		conns = append(conns, cc)
		cc.Connect()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				closeConns(conns)
				return nil, fmt.Errorf("connect to %s: %w (last state %v)", addr, ctx.Err(), s)
			}
		}
	}
	return conns, nil
}

func closeConns(conns []*grpc.ClientConn) {
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// worker is one caller: its own messages, reused from call to call, and its own random source
// for picking the kind of each call.
type worker struct {
	d    *driver
	conn *grpc.ClientConn
	rng  *rand.Rand

	rls1, rls2 *rlsv3.RateLimitRequest // one descriptor (user), two (user, hot)
	rlsResp    *rlsv3.RateLimitResponse
	check      *authv3.CheckRequest
	headers    map[string]string // check's headers, mutated per call
	checkResp  *authv3.CheckResponse
}

func (d *driver) newWorker(i int) *worker {
	entry := func(k string) *commonrlv3.RateLimitDescriptor {
		return &commonrlv3.RateLimitDescriptor{Entries: []*commonrlv3.RateLimitDescriptor_Entry{{Key: k}}}
	}
	w := &worker{
		d:         d,
		conn:      d.conns[i%len(d.conns)],
		rng:       rand.New(rand.NewPCG(uint64(i), 0x736f616b)),
		rls1:      &rlsv3.RateLimitRequest{Domain: "soak", Descriptors: []*commonrlv3.RateLimitDescriptor{entry("user")}},
		rls2:      &rlsv3.RateLimitRequest{Domain: "soak", Descriptors: []*commonrlv3.RateLimitDescriptor{entry("user"), entry("hot")}},
		rlsResp:   &rlsv3.RateLimitResponse{},
		checkResp: &authv3.CheckResponse{},
	}
	id := "soak-" + strconv.Itoa(i)
	w.headers = map[string]string{
		":authority": "localhost", ":method": "GET", ":path": "/api/items", ":scheme": "http",
		"accept": "*/*", "user-agent": "extauthz-soak", "x-forwarded-proto": "http", "x-request-id": id,
	}
	addr := func(port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	w.check = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr(40000 + uint32(i%20000))},
		Destination: &authv3.AttributeContext_Peer{Address: addr(8080)},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: id, Method: "GET", Headers: w.headers, Path: "/api/items", Host: "localhost",
			Scheme: "http", Protocol: "HTTP/1.1",
		}},
	}}
	return w
}

// pick chooses the next call's kind by weight.
func (w *worker) pick() int {
	r := w.rng.IntN(w.d.weights[nKinds])
	for k := range nKinds {
		if r < w.d.weights[k+1] {
			return k
		}
	}
	return nKinds - 1
}

// nth returns the next element of set for kind k, cycling through it.
func (w *worker) nth(k int, set []string) string {
	return set[(w.d.next[k].Add(1)-1)%uint64(len(set))]
}

// call makes one call of kind k.
func (w *worker) call(ctx context.Context, k int) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, w.d.timeout)
	defer cancel()
	fx := w.d.fx
	switch k {
	case kindRLSUser:
		w.rls1.Descriptors[0].Entries[0].Value = w.nth(k, fx.rlsValues)
		return w.rateLimit(ctx, w.rls1)
	case kindRLSHot:
		w.rls2.Descriptors[0].Entries[0].Value = w.nth(kindRLSUser, fx.rlsValues)
		w.rls2.Descriptors[1].Entries[0].Value = w.nth(k, fx.hotValues)
		return w.rateLimit(ctx, w.rls2)
	}
	delete(w.headers, "cookie")
	delete(w.headers, "x-api-key")
	switch k {
	case kindSession:
		w.headers["cookie"] = w.nth(k, fx.sessions)
	case kindHotSess:
		w.headers["cookie"] = w.nth(k, fx.hot)
	case kindAPIKey:
		w.headers["x-api-key"] = w.nth(k, fx.apiKeys)
	case kindNoSession:
		w.headers["cookie"] = w.nth(k, fx.missing)
	}
	return w.authorize(ctx)
}

func (w *worker) rateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (outcome, error) {
	if err := w.conn.Invoke(ctx, rlsv3.RateLimitService_ShouldRateLimit_FullMethodName, req, w.rlsResp); err != nil {
		return outError, err
	}
	switch code := w.rlsResp.GetOverallCode(); code {
	case rlsv3.RateLimitResponse_OK:
		return outOK, nil
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		return outOver, nil
	default:
		return outError, fmt.Errorf("overall code %v", code)
	}
}

func (w *worker) authorize(ctx context.Context) (outcome, error) {
	if err := w.conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, w.check, w.checkResp); err != nil {
		return outError, err
	}
	code := codes.Code(w.checkResp.GetStatus().GetCode())
	switch {
	case w.checkResp.GetErrorResponse() != nil:
		// The sidecar could not decide (its backend failed): Envoy's failure mode applies.
		return outError, errResponse{w.checkResp.GetStatus().GetMessage()}
	case code == codes.OK:
		return outOK, nil
	case code == codes.ResourceExhausted,
		w.checkResp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_TooManyRequests:
		return outOver, nil
	default:
		return outDenied, nil
	}
}

// maxLate is how far behind schedule a fixed-rate call may start before it is dropped instead,
// so that a stalled sidecar cannot build an unbounded backlog.
const maxLate = time.Second

// openLoop makes rate calls a second for dur whatever the sidecar does: slot k is due at
// start + k/rate and goes to whichever of workers is free. Latency counts from the slot's time
// when every worker was busy (no coordinated omission). It returns when every slot has been
// made or dropped, or ctx ends; it makes at most rate × dur calls.
func (d *driver) openLoop(ctx context.Context, st *stats, start time.Time, rate float64, dur time.Duration, workers int) {
	slots := int64(rate * dur.Seconds())
	interval := float64(time.Second) / rate
	var next atomic.Int64
	var wg sync.WaitGroup
	for i := range workers {
		w := d.newWorker(i)
		wg.Go(func() {
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= slots {
					return
				}
				due := start.Add(time.Duration(float64(k) * interval))
				if wait := time.Until(due); wait > 0 {
					timer.Reset(wait)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				if time.Since(due) > maxLate {
					st.dropped.Add(1)
					continue
				}
				kind := w.pick()
				o, err := w.call(ctx, kind)
				if ctx.Err() != nil {
					return // interrupted: the failure says nothing about the sidecar
				}
				st.record(kind, o, err, time.Since(due))
			}
		})
	}
	wg.Wait()
}

// closedLoop makes calls back to back from c workers until end, at most maxCalls in all.
func (d *driver) closedLoop(ctx context.Context, st *stats, end time.Time, c int, maxCalls int64) {
	var budget atomic.Int64
	budget.Store(maxCalls)
	var wg sync.WaitGroup
	for i := range c {
		w := d.newWorker(i)
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(end) && budget.Add(-1) >= 0 {
				kind := w.pick()
				t0 := time.Now()
				o, err := w.call(ctx, kind)
				if ctx.Err() != nil {
					return
				}
				st.record(kind, o, err, time.Since(t0))
			}
		})
	}
	wg.Wait()
}

// errNoFixtures guards against a mix with an empty set, which nth would divide by.
var errNoFixtures = errors.New("soak: every credential and value set must be non-empty")

func (fx *fixtures) validate() error {
	for _, set := range [][]string{fx.rlsValues, fx.hotValues, fx.sessions, fx.hot, fx.missing, fx.apiKeys} {
		if len(set) == 0 {
			return errNoFixtures
		}
	}
	return nil
}
