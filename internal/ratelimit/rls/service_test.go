package rls_test

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

const testConfig = `
domain: edge
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: ip
    rate_limit: {unit: hour, requests_per_unit: 5, name: per-ip}
  - key: vip
    rate_limit: {unit: hour, requests_per_unit: 50, name: vip, replaces: [{name: per-ip}]}
  - key: health
    rate_limit: {unlimited: true}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: day
    rate_limit: {unit: day, requests_per_unit: 10}
  - key: every
    descriptors:
      - {key: unit, value: second, rate_limit: {unit: second, requests_per_unit: 10}}
      - {key: unit, value: minute, rate_limit: {unit: minute, requests_per_unit: 10}}
      - {key: unit, value: hour, rate_limit: {unit: hour, requests_per_unit: 10}}
      - {key: unit, value: day, rate_limit: {unit: day, requests_per_unit: 10}}
      - {key: unit, value: week, rate_limit: {unit: week, requests_per_unit: 10}}
      - {key: unit, value: month, rate_limit: {unit: month, requests_per_unit: 10}}
      - {key: unit, value: year, rate_limit: {unit: year, requests_per_unit: 4294967295}}
`

// env is a Service served over a real gRPC socket, counting in a real redis-server.
type env struct {
	client rlsv3.RateLimitServiceClient
	redis  *redistest.Server
	rdb    *redisconn.Client // around the service's own client, for inspection
	svc    *rls.Service
}

func newEnv(t *testing.T, format ratelimit.Format) *env {
	t.Helper()
	return newEnvWith(t, rls.Options{Headers: format, Timeout: time.Second}, nil)
}

// newEnvWith is newEnv with the service's options and, unless counter is nil, the counter it
// builds on the env's redis-server (by default a FixedWindow on a redisconn client).
func newEnvWith(t *testing.T, opts rls.Options, counter func(r *redistest.Server) rls.Counter) *env {
	t.Helper()
	r := redistest.Start(t)
	rdb := newClient(t, r.URL())
	cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(testConfig)}})
	if err != nil {
		t.Fatal(err)
	}
	var c rls.Counter = ratelimit.NewFixedWindow(newClient(t, r.URL()))
	if counter != nil {
		c = counter(r)
	}
	svc := rls.NewService(c, cfg, opts)
	return &env{client: serve(t, svc), redis: r, rdb: rdb, svc: svc}
}

// serve runs svc on a gRPC server on a free loopback port and returns a client of it; both
// stop when the test ends.
func serve(t *testing.T, svc rlsv3.RateLimitServiceServer) rlsv3.RateLimitServiceClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	rlsv3.RegisterRateLimitServiceServer(gs, svc)
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

func desc(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func (e *env) call(t *testing.T, hits uint32, ds ...*ratelimitv3.RateLimitDescriptor) *rlsv3.RateLimitResponse {
	t.Helper()
	resp, err := e.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: ds, HitsAddend: hits})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if len(resp.Statuses) != len(ds) {
		t.Fatalf("got %d statuses for %d descriptors", len(resp.Statuses), len(ds))
	}
	return resp
}

func (e *env) keys(t *testing.T) []string {
	t.Helper()
	return scan(t, e.rdb, "*")
}

func TestExhaustionExactRemainingAndReset(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	for i, want := range []uint32{2, 1, 0} {
		resp := e.call(t, 0, desc("user", "alice"))
		st := resp.Statuses[0]
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || st.Code != rlsv3.RateLimitResponse_OK {
			t.Fatalf("request %d: %v, want OK", i+1, resp.OverallCode)
		}
		if st.LimitRemaining != want {
			t.Fatalf("request %d: remaining = %d, want %d", i+1, st.LimitRemaining, want)
		}
		if st.CurrentLimit.GetRequestsPerUnit() != 3 || st.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE {
			t.Fatalf("current_limit = %v", st.CurrentLimit)
		}
		reset := st.DurationUntilReset.AsDuration()
		if reset <= 0 || reset > time.Minute {
			t.Fatalf("duration_until_reset = %v, want in (0, 1m]", reset)
		}
	}
	resp := e.call(t, 0, desc("user", "alice"))
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || resp.Statuses[0].Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("4th request: %v, want OVER_LIMIT", resp.OverallCode)
	}
	if resp.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("4th request: remaining = %d", resp.Statuses[0].LimitRemaining)
	}
	// Another value of the same key has its own counter.
	if r := e.call(t, 0, desc("user", "bob")); r.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("bob: remaining = %d, want 2", r.Statuses[0].LimitRemaining)
	}
	// The day window resets at the next UTC midnight (epoch aligned), by Redis's clock.
	st := e.call(t, 0, desc("day", "x")).Statuses[0]
	now := time.Now().UTC()
	midnight := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
	if diff := st.DurationUntilReset.AsDuration() - midnight.Sub(now); diff < -2*time.Second || diff > 2*time.Second {
		t.Fatalf("day reset = %v, want about %v", st.DurationUntilReset.AsDuration(), midnight.Sub(now))
	}
}

func TestSeveralDescriptorsInOneRequest(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	e.call(t, 3, desc("user", "dave")) // user dave is now at his limit
	resp := e.call(t, 0, desc("user", "dave"), desc("ip", "10.0.0.1"), desc("nothing", "here"))
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("overall = %v, want OVER_LIMIT", resp.OverallCode)
	}
	if resp.Statuses[0].Code != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("status[0] = %v", resp.Statuses[0].Code)
	}
	if s := resp.Statuses[1]; s.Code != rlsv3.RateLimitResponse_OK || s.LimitRemaining != 4 || s.CurrentLimit.GetName() != "per-ip" {
		t.Fatalf("status[1] = %v", s)
	}
	if s := resp.Statuses[2]; s.Code != rlsv3.RateLimitResponse_OK || s.CurrentLimit != nil || s.LimitRemaining != 0 {
		t.Fatalf("status[2] (no rule) = %v", s)
	}
}

func TestHitsAddend(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	// Request-level hits_addend.
	if r := e.call(t, 2, desc("ip", "a")); r.Statuses[0].LimitRemaining != 3 {
		t.Fatalf("after 2 hits remaining = %d, want 3", r.Statuses[0].LimitRemaining)
	}
	// Per-descriptor hits_addend wins; 0 checks without counting.
	check := desc("ip", "a")
	check.HitsAddend = wrapperspb.UInt64(0)
	for i := 0; i < 3; i++ {
		if r := e.call(t, 7, check); r.Statuses[0].LimitRemaining != 3 || r.OverallCode != rlsv3.RateLimitResponse_OK {
			t.Fatalf("check-only: %v", r)
		}
	}
	four := desc("ip", "a")
	four.HitsAddend = wrapperspb.UInt64(4)
	if r := e.call(t, 1, four); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("2+4 hits over a limit of 5: %v", r.OverallCode)
	}
	// A check-only call on a counter that is over reports OVER_LIMIT too.
	if r := e.call(t, 0, check); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("check-only when over: %v", r.OverallCode)
	}
	// A check-only call on a fresh counter writes nothing.
	fresh := desc("ip", "never-counted")
	fresh.HitsAddend = wrapperspb.UInt64(0)
	e.call(t, 0, fresh)
	for _, k := range e.keys(t) {
		if strings.Contains(k, "never-counted") {
			t.Fatalf("check-only created key %q", k)
		}
	}
}

func TestReplaces(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	resp := e.call(t, 0, desc("ip", "b"), desc("vip", "yes"))
	if s := resp.Statuses[0]; s.Code != rlsv3.RateLimitResponse_OK || s.CurrentLimit != nil {
		t.Fatalf("replaced status = %v, want OK without a limit", s)
	}
	if s := resp.Statuses[1]; s.CurrentLimit.GetName() != "vip" || s.LimitRemaining != 49 {
		t.Fatalf("replacing status = %v", s)
	}
	for _, k := range e.keys(t) {
		if strings.Contains(k, "ip_b") {
			t.Fatalf("replaced counter was touched: %q", k)
		}
	}
}

func TestUnlimitedNeverTouchesRedis(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	e.redis.Stop() // no Redis at all: unlimited must still answer
	resp := e.call(t, 0, desc("health", "probe"))
	if s := resp.Statuses[0]; s.Code != rlsv3.RateLimitResponse_OK || s.LimitRemaining != math.MaxUint32 || s.CurrentLimit != nil {
		t.Fatalf("unlimited status = %v", s)
	}
	if len(resp.ResponseHeadersToAdd) != 0 {
		t.Fatalf("unlimited added headers %v", resp.ResponseHeadersToAdd)
	}
}

func TestShadowModeNeverDenies(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	for i := 0; i < 3; i++ {
		resp := e.call(t, 0, desc("trial", "t1"))
		if resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].Code != rlsv3.RateLimitResponse_OK {
			t.Fatalf("shadow request %d: %v", i+1, resp)
		}
		if i > 0 && resp.Statuses[0].LimitRemaining != 0 {
			t.Fatalf("shadow request %d: remaining = %d, want 0", i+1, resp.Statuses[0].LimitRemaining)
		}
	}
}

func TestRequestSideOverride(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	d := desc("user", "erin")
	d.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1, Unit: typev3.RateLimitUnit_HOUR}
	r := e.call(t, 0, d)
	if s := r.Statuses[0]; s.CurrentLimit.GetRequestsPerUnit() != 1 || s.CurrentLimit.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR || s.LimitRemaining != 0 {
		t.Fatalf("override status = %v", s)
	}
	if r := e.call(t, 0, d); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("second call over an override of 1/hour: %v", r.OverallCode)
	}
	// The override counter is apart from the config's (another window): the config limit is untouched.
	if r := e.call(t, 0, desc("user", "erin")); r.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("config counter after override calls: remaining = %d, want 2", r.Statuses[0].LimitRemaining)
	}
	// An override without a unit is a bad request.
	bad := desc("user", "erin")
	bad.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 1}
	_, err := e.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{bad}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("override without unit: %v, want InvalidArgument", err)
	}
}

func TestUnknownDomainAndBadRequests(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	resp, err := e.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "x")}})
	if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].CurrentLimit != nil {
		t.Fatalf("unknown domain: %v %v", resp, err)
	}
	for name, req := range map[string]*rlsv3.RateLimitRequest{
		"empty domain":   {Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "x")}},
		"no descriptors": {Domain: "edge"},
	} {
		if _, err := e.client.ShouldRateLimit(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

func TestSeparatorsInValuesDoNotCollide(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	d1 := &ratelimitv3.RateLimitDescriptor{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user", Value: "a_b.user_c"}}}
	e.call(t, 3, d1)
	// Without escaping, "user" = "a" ... would share a key with the value above.
	for _, v := range []string{"a", "a_b", "a_b.user", "{a_b.user_c}"} {
		if r := e.call(t, 0, desc("user", v)); r.Statuses[0].LimitRemaining != 2 {
			t.Fatalf("value %q shares a counter: remaining = %d", v, r.Statuses[0].LimitRemaining)
		}
	}
	for _, k := range e.keys(t) {
		if strings.Count(k, "{") != 1 || strings.Count(k, "}") != 1 {
			t.Fatalf("key %q has a broken hash tag", k)
		}
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	e.redis.Stop()
	start := time.Now()
	_, err := e.client.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "z")}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("redis down: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("redis down: took %v", took)
	}
}

func headerMap(resp *rlsv3.RateLimitResponse) map[string]string {
	m := map[string]string{}
	for _, h := range resp.ResponseHeadersToAdd {
		m[h.Key] = h.Value
	}
	return m
}

func TestHeaderDrafts(t *testing.T) {
	for _, tc := range []struct {
		format ratelimit.Format
		check  func(t *testing.T, h map[string]string)
	}{
		{ratelimit.FormatDraft7, func(t *testing.T, h map[string]string) {
			if h["RateLimit-Policy"] != "3;w=60" || !strings.HasPrefix(h["RateLimit"], "limit=3, remaining=0, reset=") {
				t.Fatalf("draft-7 headers = %v", h)
			}
		}},
		{ratelimit.FormatDraft6, func(t *testing.T, h map[string]string) {
			if h["RateLimit-Policy"] != "3;w=60" || h["RateLimit-Limit"] != "3" || h["RateLimit-Remaining"] != "0" || h["RateLimit-Reset"] == "" {
				t.Fatalf("draft-6 headers = %v", h)
			}
		}},
		{ratelimit.FormatDraft8, func(t *testing.T, h map[string]string) {
			if !strings.HasPrefix(h["RateLimit"], `"3-in-1min"; r=0; t=`) || !strings.HasPrefix(h["RateLimit-Policy"], `"3-in-1min"; q=3; w=60; pk=:`) {
				t.Fatalf("draft-8 headers = %v", h)
			}
		}},
		{ratelimit.FormatLegacy, func(t *testing.T, h map[string]string) {
			if h["X-RateLimit-Limit"] != "3" || h["X-RateLimit-Remaining"] != "0" || len(h["X-RateLimit-Reset"]) < 10 {
				t.Fatalf("legacy headers = %v", h)
			}
		}},
		{ratelimit.FormatNone, func(t *testing.T, h map[string]string) {
			if len(h) != 0 {
				t.Fatalf("none: headers = %v", h)
			}
		}},
	} {
		t.Run(tc.format.String(), func(t *testing.T) {
			e := newEnv(t, tc.format)
			var resp *rlsv3.RateLimitResponse
			for i := 0; i < 4; i++ {
				resp = e.call(t, 0, desc("user", "hdr"))
			}
			h := headerMap(resp)
			tc.check(t, h)
			if tc.format != ratelimit.FormatNone && h["Retry-After"] == "" {
				t.Fatalf("no Retry-After on a denial: %v", h)
			}
		})
	}
}

func TestOverLimitCacheSkipsRedis(t *testing.T) {
	r := redistest.Start(t)
	rdb := newClient(t, r.URL())
	cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(testConfig)}})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.NewService(ratelimit.NewFixedWindow(newClient(t, r.URL())), cfg, rls.Options{Timeout: time.Second, Headers: ratelimit.FormatDraft7, OverLimitCacheSize: 100})
	call := func(v string) *rlsv3.RateLimitResponse {
		t.Helper()
		resp, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", v)}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i := 0; i < 4; i++ {
		call("hammer")
	}
	count := func() string {
		keys := scan(t, rdb, "*hammer*")
		if len(keys) != 1 {
			t.Fatalf("keys = %v", keys)
		}
		return get(t, rdb, keys[0])
	}
	if got := count(); got != "4" {
		t.Fatalf("count after 4 calls = %s", got)
	}
	// From now on the local cache answers: OVER_LIMIT with every field, and Redis is not asked.
	r.Stop()
	resp := call("hammer")
	st := resp.Statuses[0]
	if resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || st.LimitRemaining != 0 || st.CurrentLimit.GetRequestsPerUnit() != 3 {
		t.Fatalf("cached answer = %v", resp)
	}
	if d := st.DurationUntilReset.AsDuration(); d <= 0 || d > time.Minute {
		t.Fatalf("cached reset = %v", d)
	}
	if h := headerMap(resp); h["Retry-After"] == "" || !strings.HasPrefix(h["RateLimit"], "limit=3, remaining=0, reset=") {
		t.Fatalf("cached headers = %v", h)
	}
	// Another value is not over: it needs Redis, which is down.
	if _, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "fresh")}}); status.Code(err) != codes.Unavailable {
		t.Fatalf("uncached value with Redis down: %v", err)
	}
}
