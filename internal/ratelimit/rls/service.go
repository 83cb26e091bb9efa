package rls

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisurl"
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
	// Timeout bounds the Redis round trip of one request (default redisurl.DefaultTimeout).
	// The service bounds every call itself (ratelimit.Bound): the client sets no deadline of
	// its own, and a caller's shorter deadline (Envoy's filter timeout) is kept as it is.
	Timeout time.Duration
	// Logger receives problems; nil means no logging.
	Logger *zap.Logger
	// Metrics receives counters; nil means none.
	Metrics *metrics.Metrics
	// OverLimitCacheSize is how many counters already over their limit are remembered
	// locally until their window ends; 0 turns the cache off.
	OverLimitCacheSize int
	// MaxDescriptors caps the descriptors of one request (default DefaultMaxDescriptors, at
	// most MaxDescriptorsCap); a request with more is InvalidArgument.
	MaxDescriptors int
	// MaxEntries caps the entries of one descriptor (default DefaultMaxEntries, at most
	// MaxEntriesCap); a descriptor with more is InvalidArgument.
	MaxEntries int
	// MaxHitsAddend caps a request's or a descriptor's hits_addend (default
	// DefaultMaxHitsAddend, at most ratelimit.MaxHits); a larger one is InvalidArgument.
	MaxHitsAddend uint64
}

// The input bounds of one ShouldRateLimit request, checked before any matching or Redis
// call. See "Limits and maxima" in docs/ratelimit.md.
const (
	// DefaultMaxDescriptors is far above what Envoy sends: one descriptor per matching
	// rate_limits action list of the route and virtual host, usually one to four.
	DefaultMaxDescriptors = 64
	// MaxDescriptorsCap bounds MaxDescriptors, and with it the counters one script adds:
	// 256 take Redis under a millisecond, where ten thousand took tens of milliseconds.
	MaxDescriptorsCap = 256
	// DefaultMaxEntries is far above what Envoy sends: one entry per action of an action
	// list, usually one to three.
	DefaultMaxEntries = 32
	// MaxEntriesCap bounds MaxEntries. Entries only lengthen a descriptor, which a key
	// hashes past maxKeyTail bytes, so this bounds matching and hashing work.
	MaxEntriesCap = 256
	// DefaultMaxHitsAddend is the largest limit requests_per_unit can express (2^32-1), which
	// is also the largest request-level hits_addend: a larger addend is over every limit.
	DefaultMaxHitsAddend = math.MaxUint32
)

// Service answers envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit with the
// verdicts envoyproxy/ratelimit gives for the same config directory.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	cfg     atomic.Pointer[Config]
	counter Counter
	prefix  string
	headers ratelimit.Format
	timeout time.Duration
	log     *zap.Logger
	m       *metrics.Metrics
	over    *overCache
	counts  labelCache

	maxDescs   int
	maxEntries int
	maxHits    uint64
}

// NewService returns a Service counting with counter and matching with cfg (nil: no domains).
func NewService(counter Counter, cfg *Config, opts Options) *Service {
	if opts.Prefix == "" {
		opts.Prefix = "rls:"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = redisurl.DefaultTimeout
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	opts.MaxDescriptors = bound(opts.MaxDescriptors, DefaultMaxDescriptors, MaxDescriptorsCap)
	opts.MaxEntries = bound(opts.MaxEntries, DefaultMaxEntries, MaxEntriesCap)
	opts.MaxHitsAddend = bound(opts.MaxHitsAddend, DefaultMaxHitsAddend, ratelimit.MaxHits)
	s := &Service{
		counter: counter,
		prefix:  opts.Prefix,
		headers: opts.Headers,
		timeout: opts.Timeout,
		log:     opts.Logger,
		m:       opts.Metrics,
		over:    newOverCache(opts.OverLimitCacheSize),

		maxDescs:   opts.MaxDescriptors,
		maxEntries: opts.MaxEntries,
		maxHits:    opts.MaxHitsAddend,
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
	// hits is what the descriptor adds to its counter.
	hits uint64
	key  string
	// shared is MatchShared's: the share_threshold patterns that key the descriptor's entries.
	shared []string
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
	if err := s.checkBounds(req); err != nil {
		return nil, domainLabel, err
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
		st.hits = hitsFor(req, d)
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
		st.limit, st.shared = cfg.MatchShared(domain, d.GetEntries())
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
		st.key = s.counterKey(domain, descs[i].GetEntries(), st.shared)
		if !st.limit.ShadowMode {
			if left, ok := s.over.over(cacheKey(st.key, st.limit.Window), localNow); ok {
				st.cached, st.cachedReset = true, left
				continue
			}
		}
		st.hit = len(hits)
		hits = append(hits, ratelimit.Hit{Key: st.key, Window: st.limit.Window, Hits: st.hits})
	}

	var res ratelimit.FixedWindowResult
	if len(hits) > 0 {
		cctx, cancel := ratelimit.Bound(ctx, s.timeout)
		t0 := time.Now()
		var err error
		res, err = s.counter.Add(cctx, hits)
		cancel()
		if s.m != nil {
			s.m.RedisDuration.WithLabelValues("rls_fixed_window").Observe(time.Since(t0).Seconds())
		}
		if err != nil {
			if errors.Is(err, ratelimit.ErrInvalidHit) {
				// checkBounds and overrideLimit let nothing through that the counter
				// rejects; should they ever disagree, the request is still the problem,
				// not Redis.
				return nil, domainLabel, status.Error(codes.InvalidArgument, err.Error())
			}
			// The caller's context decides between timeout and canceled: Envoy's filter
			// timeout arrives as the call's deadline, usually ended by a stream reset.
			reason := ratelimit.CallReason(ctx, err)
			if s.m != nil {
				s.m.RedisErrors.WithLabelValues("rls_fixed_window", reason).Inc()
			}
			s.log.Warn("rate limit backend failed", zap.String("domain", domainLabel), zap.String("reason", reason), zap.Error(err))
			if cerr := ratelimit.ContextErr(ctx); cerr != nil {
				return nil, domainLabel, status.FromContextError(cerr).Err()
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
