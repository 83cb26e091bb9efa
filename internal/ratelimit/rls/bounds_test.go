package rls_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// countCalls wraps a Counter and counts the calls that reach it.
type countCalls struct {
	rls.Counter
	n atomic.Int64
}

func (c *countCalls) Add(ctx context.Context, hits []ratelimit.Hit) (ratelimit.FixedWindowResult, error) {
	c.n.Add(1)
	return c.Counter.Add(ctx, hits)
}

func withHits(d *ratelimitv3.RateLimitDescriptor, n uint64) *ratelimitv3.RateLimitDescriptor {
	d.HitsAddend = wrapperspb.UInt64(n)
	return d
}

func override(d *ratelimitv3.RateLimitDescriptor, unit typev3.RateLimitUnit, mult *wrapperspb.UInt32Value) *ratelimitv3.RateLimitDescriptor {
	d.Limit = &ratelimitv3.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 5, Unit: unit, UnitMultiplier: mult}
	return d
}

func many(n int, kv ...string) []*ratelimitv3.RateLimitDescriptor {
	ds := make([]*ratelimitv3.RateLimitDescriptor, n)
	for i := range ds {
		ds[i] = desc(append([]string{"user", fmt.Sprint("u", i)}, kv...)...)
	}
	return ds
}

// Requests past a bound are InvalidArgument, with the bound in the message, and reach
// neither the matcher's counters nor Redis; requests at the bound are decided.
func TestRequestBounds(t *testing.T) {
	var calls *countCalls
	e := newEnvWith(t, rls.Options{Timeout: time.Second}, func(r *redistest.Server) rls.Counter {
		calls = &countCalls{Counter: ratelimit.NewFixedWindow(newClient(t, r.URL()))}
		return calls
	})
	entries := make([]string, 0, 2*(rls.DefaultMaxEntries+1))
	for i := range rls.DefaultMaxEntries + 1 {
		entries = append(entries, fmt.Sprint("k", i), "v")
	}
	for _, tc := range []struct {
		name string
		req  *rlsv3.RateLimitRequest
		// say is in the InvalidArgument message; "" means the request is decided.
		say string
	}{
		{"descriptor hits_addend 2^64-1", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("user", "a"), math.MaxUint64)}}, "max_hits_addend"},
		{"descriptor hits_addend 2^63", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("user", "a"), 1<<63)}}, "max_hits_addend"},
		{"descriptor hits_addend 2^32", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("user", "a"), 1<<32)}}, "maximum 4294967295"},
		{"hits_addend past the bound on an unmatched descriptor", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "a"), withHits(desc("none", "a"), math.MaxUint64)}}, "descriptors[1].hits_addend"},
		{"descriptor hits_addend 2^32-1", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("user", "b"), math.MaxUint32)}}, ""},
		{"request hits_addend 2^32-1", &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: math.MaxUint32, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "c")}}, ""},
		{"64 descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many(rls.DefaultMaxDescriptors)}, ""},
		{"65 descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many(rls.DefaultMaxDescriptors + 1)}, "max_descriptors"},
		{"ten thousand descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many(10000)}, "10000 descriptors, more than the maximum 64"},
		{"ten thousand descriptors, unknown domain", &rlsv3.RateLimitRequest{Domain: "nope", Descriptors: many(10000)}, "max_descriptors"},
		{"32 entries", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(entries[:2*rls.DefaultMaxEntries]...)}}, ""},
		{"33 entries", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc(entries...)}}, "max_entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.n.Load()
			resp, err := e.client.ShouldRateLimit(t.Context(), tc.req)
			if tc.say == "" {
				if err != nil || len(resp.Statuses) != len(tc.req.Descriptors) {
					t.Fatalf("ShouldRateLimit = %v, %v; want a decision", resp, err)
				}
				return
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.say) {
				t.Fatalf("ShouldRateLimit = %v, want InvalidArgument saying %q", err, tc.say)
			}
			if n := calls.n.Load() - before; n != 0 {
				t.Fatalf("%d counter calls for a rejected request, want 0", n)
			}
		})
	}
	t.Run("configured bounds", func(t *testing.T) {
		e := newEnvWith(t, rls.Options{Timeout: time.Second, MaxDescriptors: 2, MaxEntries: 1, MaxHitsAddend: 10}, nil)
		for _, tc := range []struct {
			name string
			req  *rlsv3.RateLimitRequest
			ok   bool
		}{
			{"request hits at the bound", &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 10, Descriptors: many(2)}, true},
			{"request hits past it", &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: 11, Descriptors: many(1)}, false},
			{"descriptor hits past it", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{withHits(desc("user", "x"), 11)}}, false},
			{"three descriptors", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many(3)}, false},
			{"two entries", &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: many(1, "k", "v")}, false},
		} {
			_, err := e.client.ShouldRateLimit(t.Context(), tc.req)
			if tc.ok && err != nil || !tc.ok && status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	})
}

// A request-side override has a window of at most ratelimit.MaxWindow (YEAR x 10), a
// unit_multiplier of at least 1, and every key any unit writes gets a TTL: a scan of Redis
// after requests with every configured unit and the largest overrides finds none without.
func TestOverrideWindowsAndEveryKeyExpires(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	for _, tc := range []struct {
		name string
		unit typev3.RateLimitUnit
		mult *wrapperspb.UInt32Value
		say  string
	}{
		{"year x 10", typev3.RateLimitUnit_YEAR, wrapperspb.UInt32(10), ""},
		{"seconds of ten years", typev3.RateLimitUnit_SECOND, wrapperspb.UInt32(uint32(ratelimit.MaxWindow / time.Second)), ""},
		{"year, no multiplier", typev3.RateLimitUnit_YEAR, nil, ""},
		{"one second past ten years", typev3.RateLimitUnit_SECOND, wrapperspb.UInt32(uint32(ratelimit.MaxWindow/time.Second) + 1), "maximum 315360000 seconds"},
		{"year x 11", typev3.RateLimitUnit_YEAR, wrapperspb.UInt32(11), "maximum 315360000 seconds"},
		{"year x 2^32-1", typev3.RateLimitUnit_YEAR, wrapperspb.UInt32(math.MaxUint32), "maximum 315360000 seconds"},
		{"multiplier 0", typev3.RateLimitUnit_MINUTE, wrapperspb.UInt32(0), "unit_multiplier"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &rlsv3.RateLimitRequest{Domain: "edge", HitsAddend: math.MaxUint32,
				Descriptors: []*ratelimitv3.RateLimitDescriptor{override(desc("user", tc.name), tc.unit, tc.mult)}}
			for range 2 {
				_, err := e.client.ShouldRateLimit(t.Context(), req)
				if tc.say == "" && err != nil {
					t.Fatalf("ShouldRateLimit = %v, want a decision", err)
				}
				if tc.say != "" && (status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.say)) {
					t.Fatalf("ShouldRateLimit = %v, want InvalidArgument saying %q", err, tc.say)
				}
			}
		})
	}
	for _, u := range []string{"second", "minute", "hour", "day", "week", "month", "year"} {
		e.call(t, math.MaxUint32, desc("every", "", "unit", u))
		e.call(t, math.MaxUint32, desc("every", "", "unit", u))
	}
	keys := scan(t, e.rdb, "*")
	for _, k := range keys {
		if ttl := ttl(t, e.rdb, k); ttl <= 0 {
			t.Errorf("key %s has TTL %v, want > 0", k, ttl)
		}
	}
	n := len(keys)
	if n != 3+7 {
		t.Errorf("scanned %d keys, want 10 (3 overrides, 7 units)", n)
	}
}

// Descriptor values of any length make keys of bounded length: past maxKeyTail the
// descriptor is hashed, and values that differ anywhere still count apart.
func TestLongValuesMakeShortKeys(t *testing.T) {
	e := newEnv(t, ratelimit.FormatDraft7)
	long := strings.Repeat("x", 1<<20)
	for _, v := range []string{long + "a", long + "b", "a" + long, strings.Repeat("%", 200), strings.Repeat("_", 200)} {
		if r := e.call(t, 0, desc("user", v)); r.Statuses[0].LimitRemaining != 2 {
			t.Fatalf("value of %d bytes shares a counter: remaining %d", len(v), r.Statuses[0].LimitRemaining)
		}
	}
	// Short values keep their readable key.
	e.call(t, 0, desc("user", "short"))
	keys := e.keys(t)
	if len(keys) != 6 {
		t.Fatalf("%d keys, want 6: %q", len(keys), keys)
	}
	readable := 0
	for _, k := range keys {
		if len(k) > 400 {
			t.Errorf("key of %d bytes: %.80q...", len(k), k)
		}
		if strings.Contains(k, "{edge.user_short}") {
			readable++
		}
	}
	if readable != 1 {
		t.Errorf("short value's key not spelled out: %q", keys)
	}
}

// A hits_addend near 2^63 once made Redis answer a number the client read as a protocol
// error, closing the shared pipelined connection and failing unrelated decisions. Now it is
// InvalidArgument before any Redis call, and concurrent decisions on the same client (one
// multiplexed connection) all succeed with the connection kept.
func TestHugeHitsAddendLeavesOtherDecisionsAlone(t *testing.T) {
	var failures atomic.Int64
	e := newEnvWith(t, rls.Options{Timeout: 2 * time.Second}, func(r *redistest.Server) rls.Counter {
		c := newClientWith(t, redisconn.Options{URL: r.URL(), Timeout: 2 * time.Second, OnConnFailure: func(string) { failures.Add(1) }})
		return ratelimit.NewFixedWindow(c)
	})
	const workers, each = 16, 25
	var wg sync.WaitGroup
	var bad atomic.Int64
	var first atomic.Value
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				d := desc("user", fmt.Sprint("w", w, "-", i))
				wantCode := codes.OK
				if w%2 == 1 {
					withHits(d, []uint64{1<<63 - 1, math.MaxUint64, 1 << 62}[i%3])
					wantCode = codes.InvalidArgument
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := e.client.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{d}})
				cancel()
				if status.Code(err) != wantCode {
					if bad.Add(1) == 1 {
						first.Store(fmt.Sprintf("worker %d: %v, want %v", w, err, wantCode))
					}
				}
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d calls answered wrongly; first: %v", n, first.Load())
	}
	if n := failures.Load(); n != 0 {
		t.Fatalf("the client reported %d connection failures, want 0", n)
	}
}

// The counter's own ErrInvalidHit (a bound the service did not check) is InvalidArgument,
// never Unavailable: it is the request, not Redis.
func TestInvalidHitIsInvalidArgument(t *testing.T) {
	e := newEnvWith(t, rls.Options{Timeout: time.Second}, func(*redistest.Server) rls.Counter { return invalidHitCounter{} })
	_, err := e.client.ShouldRateLimit(t.Context(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "a")}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("ShouldRateLimit = %v, want InvalidArgument", err)
	}
}

type invalidHitCounter struct{}

func (invalidHitCounter) Add(context.Context, []ratelimit.Hit) (ratelimit.FixedWindowResult, error) {
	return ratelimit.FixedWindowResult{}, fmt.Errorf("hit 0: %w", ratelimit.ErrInvalidHit)
}

// Nothing a config file can say fails at run time: every unit's window is within what the
// counter accepts, so rls.Parse (and LoadDir) accepting a limit means it can be counted.
func TestEveryConfigUnitFitsTheCounter(t *testing.T) {
	for v := range rlsv3.RateLimitResponse_RateLimit_Unit_name {
		w, ok := rls.UnitWindow(rlsv3.RateLimitResponse_RateLimit_Unit(v))
		if ok && (w <= 0 || w > int64(ratelimit.MaxWindow/time.Second)) {
			t.Errorf("unit %v: window %ds outside 1..%v", rlsv3.RateLimitResponse_RateLimit_Unit(v), w, ratelimit.MaxWindow)
		}
	}
}
