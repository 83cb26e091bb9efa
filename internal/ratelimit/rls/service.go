package rls

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Counter adds hits to fixed windows in one atomic round trip; *ratelimit.FixedWindow is one.
type Counter interface {
	Add(ctx context.Context, hits []ratelimit.Hit) (ratelimit.FixedWindowResult, error)
}

var _ Counter = (*ratelimit.FixedWindow)(nil)

var _ rlsv3.RateLimitServiceServer = (*Service)(nil)

// Options tunes a Service. Zero values take the documented defaults.
type Options struct {
	// Prefix starts every Redis key of the service (default "rls:").
	Prefix string
	// Headers is the RateLimit header draft added to responses; the zero value adds none.
	Headers ratelimit.Format
	// Timeout bounds the Redis round trip of one request (default 25ms).
	Timeout time.Duration
	// CounterBounded says the counter's Redis client already bounds every call by Timeout
	// (redisconn.Pipe does), so the service derives no per-request context and timer for it.
	CounterBounded bool
	// Logger receives problems; nil means no logging.
	Logger *zap.Logger
	// Metrics receives counters; nil means none.
	Metrics *metrics.Metrics
	// OverLimitCacheSize is how many counters already over their limit are remembered
	// locally until their window ends; 0 turns the cache off.
	OverLimitCacheSize int
}

// Service answers envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit with the
// verdicts envoyproxy/ratelimit gives for the same config directory.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	cfg     atomic.Pointer[Config]
	counter Counter
	prefix  string
	headers ratelimit.Format
	timeout time.Duration
	bounded bool
	log     *zap.Logger
	m       *metrics.Metrics
	over    *overCache
	counts  labelCache
}

// NewService returns a Service counting with counter and matching with cfg (nil: no domains).
func NewService(counter Counter, cfg *Config, opts Options) *Service {
	if opts.Prefix == "" {
		opts.Prefix = "rls:"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 25 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Service{
		counter: counter,
		prefix:  opts.Prefix,
		headers: opts.Headers,
		timeout: opts.Timeout,
		bounded: opts.CounterBounded,
		log:     opts.Logger,
		m:       opts.Metrics,
		over:    newOverCache(opts.OverLimitCacheSize),
	}
	if cfg == nil {
		cfg, _ = Parse(nil)
	}
	s.cfg.Store(cfg)
	return s
}

// Swap replaces the config snapshot atomically; requests in flight finish on the old one.
func (s *Service) Swap(cfg *Config) { s.cfg.Store(cfg) }

// Config returns the snapshot in use.
func (s *Service) Config() *Config { return s.cfg.Load() }

// descriptorState is the per-descriptor working state of one request.
type descriptorState struct {
	limit *RateLimit
	// code is the metric code for descriptors decided without counting.
	code string
	// hit is the index into the hits slice, or -1 when the descriptor is not counted.
	hit int
	key string
	// cachedReset is set when the local over-limit cache answered: the time left in the window.
	cachedReset time.Duration
	cached      bool
}

// ShouldRateLimit decides one request. Bad requests get InvalidArgument; a Redis failure gets
// Unavailable within the deadline so that Envoy's failure_mode_deny decides, never a made-up
// verdict.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	start := time.Now()
	if s.m != nil {
		g := s.m.InFlight.WithLabelValues("ShouldRateLimit")
		g.Inc()
		defer g.Dec()
	}
	resp, domainLabel, err := s.decide(ctx, req)
	code := "OK"
	if err != nil {
		code = status.Code(err).String()
	} else if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		code = "OVER_LIMIT"
	}
	if s.m != nil {
		s.counts.counter(s.m.RLSRequests, false, domainLabel, "", code).Inc()
		s.m.RLSDuration.WithLabelValues(code).Observe(time.Since(start).Seconds())
	}
	return resp, err
}

func (s *Service) decide(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, string, error) {
	cfg := s.cfg.Load()
	domain := req.GetDomain()
	domainLabel := metrics.UnknownDomain
	known := domain != "" && cfg.HasDomain(domain)
	if known {
		domainLabel = domain
	}
	if domain == "" {
		return nil, domainLabel, status.Error(codes.InvalidArgument, "rate limit domain must not be empty")
	}
	descs := req.GetDescriptors()
	if len(descs) == 0 {
		return nil, domainLabel, status.Error(codes.InvalidArgument, "rate limit descriptor list must not be empty")
	}

	// Requests carry a few descriptors: their state, quotas and response parts come from
	// arrays sized once per request (and, up to smallDescs, from the stack).
	var stateBuf [smallDescs]descriptorState
	states := stateBuf[:0]
	if len(descs) > smallDescs {
		states = make([]descriptorState, 0, len(descs))
	}
	states = states[:len(descs)]
	for i, d := range descs {
		st := &states[i]
		st.hit = -1
		if !known {
			// An unknown domain answers OK with no limit, even for request-side overrides,
			// as the reference does.
			st.code = "NO_LIMIT"
			continue
		}
		if o := d.GetLimit(); o != nil {
			lim, err := overrideLimit(o)
			if err != nil {
				return nil, domainLabel, status.Errorf(codes.InvalidArgument, "descriptors[%d].limit: %v", i, err)
			}
			st.limit = lim
			continue
		}
		st.limit = cfg.Match(domain, d.GetEntries())
		if st.limit == nil {
			st.code = "NO_LIMIT"
		}
	}
	dropReplaced(states)

	hits := make([]ratelimit.Hit, 0, len(descs))
	localNow := time.Now()
	for i := range states {
		st := &states[i]
		if st.limit == nil || st.limit.Unlimited {
			continue
		}
		st.key = s.counterKey(domain, descs[i].GetEntries())
		if !st.limit.ShadowMode {
			if left, ok := s.over.over(cacheKey(st.key, st.limit.Window), localNow); ok {
				st.cached, st.cachedReset = true, left
				continue
			}
		}
		st.hit = len(hits)
		hits = append(hits, ratelimit.Hit{Key: st.key, Window: st.limit.Window, Hits: hitsFor(req, descs[i])})
	}

	var res ratelimit.FixedWindowResult
	if len(hits) > 0 {
		cctx, cancel := ctx, context.CancelFunc(nil)
		if !s.bounded {
			cctx, cancel = ratelimit.Bound(ctx, s.timeout)
		}
		t0 := time.Now()
		var err error
		res, err = s.counter.Add(cctx, hits)
		if cancel != nil {
			cancel()
		}
		if s.m != nil {
			s.m.RedisDuration.WithLabelValues("rls_fixed_window").Observe(time.Since(t0).Seconds())
		}
		if err != nil {
			reason := redisReason(ctx, err)
			if s.m != nil {
				s.m.RedisErrors.WithLabelValues("rls_fixed_window", reason).Inc()
			}
			s.log.Warn("rate limit backend failed", zap.String("domain", domainLabel), zap.String("reason", reason), zap.Error(err))
			if ctx.Err() != nil {
				return nil, domainLabel, status.FromContextError(ctx.Err()).Err()
			}
			return nil, domainLabel, status.Error(codes.Unavailable, "rate limit backend unavailable: "+reason)
		}
		if len(res.Counts) != len(hits) {
			return nil, domainLabel, status.Error(codes.Unavailable, "rate limit backend gave a malformed reply")
		}
	}

	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs)),
	}
	statuses := make([]rlsv3.RateLimitResponse_DescriptorStatus, len(descs))
	var limits []rlsv3.RateLimitResponse_RateLimit // for the counted descriptors, made on first use
	var quotaBuf [smallDescs]ratelimit.Quota
	quotas := quotaBuf[:0]
	if res.Now.IsZero() {
		// Nothing went to Redis (every counter was answered locally): the local clock is the
		// only one there is, and only legacy headers' absolute reset time reads it.
		res.Now = localNow
	}
	nowUnix := res.Now.Unix()
	for i := range states {
		st := &states[i]
		ds := &statuses[i]
		ds.Code = rlsv3.RateLimitResponse_OK
		resp.Statuses[i] = ds
		switch {
		case st.limit == nil:
		case st.limit.Unlimited:
			ds.LimitRemaining = math.MaxUint32
			st.code = "UNLIMITED"
		default:
			lim := st.limit
			limit := uint64(lim.RequestsPerUnit)
			var after uint64
			var reset time.Duration
			if st.cached {
				after, reset = limit+1, st.cachedReset
			} else {
				after = res.Counts[st.hit]
				windowEnd := time.Unix(nowUnix-nowUnix%lim.Window+lim.Window, 0)
				reset = max(windowEnd.Sub(res.Now), 0)
			}
			over := after > limit
			var remaining uint64
			if !over {
				remaining = limit - after
			}
			if over && !st.cached && !lim.ShadowMode {
				s.over.add(cacheKey(st.key, lim.Window), localNow.Add(reset), localNow)
			}
			if limits == nil {
				limits = make([]rlsv3.RateLimitResponse_RateLimit, len(descs))
			}
			cl := &limits[i]
			cl.Name, cl.RequestsPerUnit, cl.Unit = lim.Name, lim.RequestsPerUnit, lim.Unit
			ds.CurrentLimit = cl
			ds.LimitRemaining = uint32(remaining)
			ds.DurationUntilReset = durationpb.New(reset)
			st.code = "OK"
			if over {
				if lim.ShadowMode {
					st.code = "SHADOW_OVER_LIMIT"
				} else {
					st.code = "OVER_LIMIT"
					if st.cached {
						st.code = "OVER_LIMIT_CACHED"
					}
					ds.Code = rlsv3.RateLimitResponse_OVER_LIMIT
					resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
				}
			}
			// Shadow rules never show up in client-facing headers: they must not change
			// what a client sees.
			if !lim.ShadowMode && s.headers != ratelimit.FormatNone {
				quotas = append(quotas, ratelimit.Quota{
					Name:      lim.Name,
					Limit:     limit,
					Remaining: remaining,
					Window:    time.Duration(lim.Window) * time.Second,
					Reset:     reset,
					Key:       st.key,
					Over:      over,
				})
			}
		}
		if s.m != nil {
			rule := "_none"
			if st.limit != nil {
				rule = st.limit.Rule
			}
			s.counts.counter(s.m.RLSDescriptors, true, domainLabel, rule, st.code).Inc()
		}
	}
	if len(quotas) > 0 {
		var hbuf [6]ratelimit.Header
		hs := ratelimit.AppendHeaders(hbuf[:0], s.headers, quotas, res.Now)
		vals := make([]corev3.HeaderValue, len(hs))
		resp.ResponseHeadersToAdd = make([]*corev3.HeaderValue, len(hs))
		for i, h := range hs {
			vals[i].Key, vals[i].Value = h.Name, h.Value
			resp.ResponseHeadersToAdd[i] = &vals[i]
		}
	}
	return resp, domainLabel, nil
}

// labelCache keeps the counters of the request and descriptor metrics by their labels, so that a
// request does not hash and validate its label values again: every label is bounded by the
// configuration (domain, rule) or a closed set (code), and so is the cache.
type labelCache struct {
	mu sync.RWMutex
	m  map[labelKey]prometheus.Counter
}

// labelKey names one counter of vec; withRule is false for vectors labelled by domain and
// code only (RLSRequests), true for domain, rule and code (RLSDescriptors).
type labelKey struct {
	vec              *prometheus.CounterVec
	withRule         bool
	domain, rule, cd string
}

func (c *labelCache) counter(vec *prometheus.CounterVec, withRule bool, domain, rule, code string) prometheus.Counter {
	k := labelKey{vec: vec, withRule: withRule, domain: domain, rule: rule, cd: code}
	c.mu.RLock()
	ctr, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return ctr
	}
	if withRule {
		ctr = vec.WithLabelValues(domain, rule, code)
	} else {
		ctr = vec.WithLabelValues(domain, code)
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[labelKey]prometheus.Counter)
	}
	c.m[k] = ctr
	c.mu.Unlock()
	return ctr
}

// smallDescs is how many descriptors a request may carry before decide's per-request arrays
// move from the stack to the heap.
const smallDescs = 4

// cacheKey names a counter in one window size: the same descriptor under an override with
// another unit is another counter.
func cacheKey(key string, window int64) string {
	return key + ":" + strconv.FormatInt(window, 10)
}

// overrideLimit builds the limit a request asks for with its own `limit` field; it replaces
// config matching for that descriptor.
func overrideLimit(o *ratelimitv3.RateLimitDescriptor_RateLimitOverride) (*RateLimit, error) {
	// envoy.type.v3.RateLimitUnit and the response's Unit share their numbering for
	// SECOND..YEAR.
	unit := rlsv3.RateLimitResponse_RateLimit_Unit(int32(o.GetUnit()))
	window, ok := UnitWindow(unit)
	if !ok {
		return nil, errors.New("unknown rate limit unit " + o.GetUnit().String())
	}
	if m := o.GetUnitMultiplier(); m != nil && m.GetValue() > 1 {
		window *= int64(m.GetValue())
	}
	return &RateLimit{
		RequestsPerUnit: o.GetRequestsPerUnit(),
		Unit:            unit,
		Window:          window,
		Rule:            "_override",
	}, nil
}

// dropReplaced removes every matched limit whose name another matched limit replaces; such a
// descriptor answers OK with no current limit and its counter is not touched.
func dropReplaced(states []descriptorState) {
	var replaced map[string]struct{}
	for i := range states {
		lim := states[i].limit
		if lim == nil || lim.Unlimited || len(lim.Replaces) == 0 {
			continue
		}
		if replaced == nil {
			replaced = make(map[string]struct{})
		}
		for _, n := range lim.Replaces {
			replaced[n] = struct{}{}
		}
	}
	if replaced == nil {
		return
	}
	for i := range states {
		lim := states[i].limit
		if lim == nil || lim.Name == "" {
			continue
		}
		if _, ok := replaced[lim.Name]; ok {
			states[i].limit = nil
			states[i].code = "REPLACED"
		}
	}
}

// hitsFor is the descriptor's own hits_addend when set (0 means check only), else the
// request's (0 means 1).
func hitsFor(req *rlsv3.RateLimitRequest, d *ratelimitv3.RateLimitDescriptor) uint64 {
	if d.GetIsNegativeHits() {
		// Refunds are not supported: the counter is read, never decremented.
		return 0
	}
	if h := d.GetHitsAddend(); h != nil {
		return h.GetValue()
	}
	if n := req.GetHitsAddend(); n > 0 {
		return uint64(n)
	}
	return 1
}

// counterKey is prefix + "{" + domain and every entry, escaped + "}". The whole descriptor is
// the Cluster hash tag, and escaping keeps ("a_b", "c") apart from ("a", "b_c") and keeps
// braces in values from moving the tag.
func (s *Service) counterKey(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry) string {
	n := len(s.prefix) + len(domain) + 2
	for _, e := range entries {
		n += len(e.GetKey()) + len(e.GetValue()) + 2
	}
	b := make([]byte, 0, n+16)
	b = append(b, s.prefix...)
	b = append(b, '{')
	b = ratelimit.AppendEscaped(b, domain)
	for _, e := range entries {
		b = append(b, '.')
		b = ratelimit.AppendEscaped(b, e.GetKey())
		b = append(b, '_')
		b = ratelimit.AppendEscaped(b, e.GetValue())
	}
	b = append(b, '}')
	return string(b)
}

// redisReason names a backend failure; a caller that went away is "canceled" whatever the
// error says.
func redisReason(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return "canceled"
	}
	return ratelimit.FailureReason(err)
}
