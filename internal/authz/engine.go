package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/sessions"
)

// SessionResolver resolves express-session cookies; *sessions.Store is one.
type SessionResolver interface {
	Resolve(ctx context.Context, cookieHeader string) (*sessions.Session, error)
	CookieName() string
}

// KeyResolver resolves API keys; *apikeys.Store is one.
type KeyResolver interface {
	Lookup(ctx context.Context, key string) (apikeys.Record, error)
}

// Limiter checks several limits in one round trip; *ratelimit.Limiter is one.
type Limiter interface {
	Allow(ctx context.Context, reqs []ratelimit.Request) (time.Time, []ratelimit.Decision, error)
}

var (
	_ SessionResolver = (*sessions.Store)(nil)
	_ KeyResolver     = (*apikeys.Store)(nil)
	_ Limiter         = (*ratelimit.Limiter)(nil)
)

// DegradedHeader marks a request let through because Redis failed under a policy whose failure
// mode is open; its value says what was skipped ("auth", "limits" or both).
const DegradedHeader = "x-extauthz-degraded"

// Request is what the engine needs to know about one HTTP request, whichever proxy asked.
type Request struct {
	Method string
	Host   string
	// Path is the request path without the query string.
	Path string
	// Headers has lower-case names; repeated headers joined with ", " (cookies with "; ").
	Headers map[string]string
	// RemoteIP is the downstream client's address, without a port.
	RemoteIP string
	// Policy names the policy to use (from context_extensions); "" means match by route.
	Policy string
}

// Principal kinds.
const (
	KindNone    = "none"
	KindSession = "session"
	KindAPIKey  = "apikey"
)

// Decision is the engine's answer. Exactly one of Allow, Deny (Status 401/403/429) or Err is
// the outcome.
type Decision struct {
	// Allow lets the request through.
	Allow bool
	// Status is the HTTP status of a denial (401, 403, 429); 200 when allowed.
	Status int
	// Err is set when the decision could not be made (Redis failed under a closed policy);
	// transports answer with an error so the proxy's own failure mode applies.
	Err error
	// Reason is a bounded label for metrics and logs: ok, no_policy, unauthenticated,
	// forbidden_role, forbidden_scope, over_limit, backend_error, degraded.
	Reason string
	// Message is the human text of a denial, sent as {"error": Message}.
	Message string

	Policy    string
	Kind      string // none, session or apikey
	Principal string // session subject or API key id; never a secret
	Tier      string

	// SetHeaders are identity headers to set on the upstream request (replacing any copy).
	SetHeaders []ratelimit.Header
	// RemoveHeaders are upstream request headers to strip: configured identity headers this
	// decision does not set, the API key header and (optionally) the session cookie.
	RemoveHeaders []string
	// ResponseHeaders go on the downstream response: RateLimit headers, Retry-After.
	ResponseHeaders []ratelimit.Header
}

// Options configures an Engine.
type Options struct {
	Sessions SessionResolver // nil when sessions are not configured
	Keys     KeyResolver     // nil when API keys are not configured
	Limiter  Limiter
	// Timeout bounds the Redis work of one decision.
	Timeout time.Duration
	Headers ratelimit.Format
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// DecisionSample is the share of allowed decisions logged (0 = none, 1 = all).
	DecisionSample float64
	// DecisionDenials logs every denial and failed decision.
	DecisionDenials bool
}

// Engine decides requests. Its policies are an immutable snapshot swapped whole on reload.
type Engine struct {
	state atomic.Pointer[engineState]
	opts  Options
	log   *zap.Logger
}

type engineState struct {
	list   []*policy
	byName map[string]*policy

	limitPrefix   string
	apiKeyHeaders []string
	keepKeyHeader bool
	stripCookie   bool
	// identityHeaders are every header the session and API key mappings can set, sorted.
	identityHeaders []string
	// keyHeaders map API key record fields to upstream headers, sorted by header.
	keyHeaders []keyHeader
	cookieName string
}

// New compiles cfg's policies into an Engine.
func New(cfg *config.Config, opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = config.DefaultRedisTimeout
	}
	e := &Engine{opts: opts, log: opts.Logger}
	if err := e.Load(cfg); err != nil {
		return nil, err
	}
	return e, nil
}

// Load swaps in cfg's policies; decisions in flight finish on the old ones.
func (e *Engine) Load(cfg *config.Config) error {
	list, byName, err := compilePolicies(cfg.Policies)
	if err != nil {
		return err
	}
	st := &engineState{
		list:          list,
		byName:        byName,
		limitPrefix:   cfg.Limits.Prefix,
		apiKeyHeaders: cfg.APIKeys.Headers,
		keepKeyHeader: cfg.APIKeys.KeepHeader,
		stripCookie:   cfg.Sessions.StripCookie,
		cookieName:    cfg.Sessions.Cookie,
	}
	for _, h := range sortedKeys(cfg.APIKeys.IdentityHeaders) {
		st.keyHeaders = append(st.keyHeaders, keyHeader{name: h, field: cfg.APIKeys.IdentityHeaders[h]})
	}
	seen := map[string]bool{}
	for _, h := range append(sortedKeys(cfg.Sessions.Headers), sortedKeys(cfg.APIKeys.IdentityHeaders)...) {
		if !seen[h] {
			seen[h] = true
			st.identityHeaders = append(st.identityHeaders, h)
		}
	}
	sort.Strings(st.identityHeaders)
	e.state.Store(st)
	return nil
}

// Decide answers one request.
func (e *Engine) Decide(ctx context.Context, r *Request) Decision {
	start := time.Now()
	d := e.decide(ctx, r)
	if m := e.opts.Metrics; m != nil {
		result := "allow"
		switch {
		case d.Err != nil:
			result = "error"
		case !d.Allow:
			result = "deny"
		}
		policy := d.Policy
		if policy == "" {
			policy = "_none"
		}
		m.Decisions.WithLabelValues(policy, result, d.Reason).Inc()
		m.DecisionDuration.WithLabelValues(result).Observe(time.Since(start).Seconds())
	}
	e.logDecision(d, time.Since(start))
	return d
}

// logDecision writes the decision log: every denial and error when DecisionDenials is set, a
// DecisionSample share of the allowed decisions. It names the policy, the kind of principal,
// the verdict and the latency, never a principal, key, cookie or address.
func (e *Engine) logDecision(d Decision, took time.Duration) {
	switch {
	case !d.Allow || d.Err != nil:
		if !e.opts.DecisionDenials {
			return
		}
	case e.opts.DecisionSample <= 0:
		return
	case e.opts.DecisionSample < 1 && rand.Float64() >= e.opts.DecisionSample:
		return
	}
	verdict := "allow"
	switch {
	case d.Err != nil:
		verdict = "error"
	case !d.Allow:
		verdict = "deny"
	}
	e.log.Info("decision",
		zap.String("policy", d.Policy),
		zap.String("kind", d.Kind),
		zap.String("verdict", verdict),
		zap.Int("status", d.Status),
		zap.String("reason", d.Reason),
		zap.Duration("latency", took))
}

func (e *Engine) decide(ctx context.Context, r *Request) Decision {
	st := e.state.Load()
	d := Decision{Kind: KindNone}
	p := st.find(r)
	if p == nil {
		d.Status, d.Reason, d.Message = 403, "no_policy", "no policy allows this request"
		d.RemoveHeaders = st.removals(nil, "")
		return d
	}
	d.Policy = p.name

	ctx, cancel := ratelimit.Bound(ctx, e.opts.Timeout)
	defer cancel()

	id, status, reason, err := e.identify(ctx, st, p, r)
	var degraded []string
	switch {
	case err != nil && p.authOpen:
		e.log.Warn("identity backend failed, letting the request through unauthenticated (failure.auth: open)",
			zap.String("policy", p.name), zap.Error(err))
		degraded = append(degraded, "auth")
		id = identity{kind: KindNone}
	case err != nil:
		d.Err, d.Reason = err, "backend_error"
		return d
	case status != 0:
		d.Status, d.Reason = status, reason
		d.Message = denialMessage(reason)
		d.RemoveHeaders = st.removals(nil, id.keyHeader)
		return d
	}
	d.Kind, d.Principal, d.Tier = id.kind, id.principal, id.tier

	if len(p.roles) > 0 && !id.hasAnyRole(p.roles) {
		d.Status, d.Reason, d.Message = 403, "forbidden_role", denialMessage("forbidden_role")
		d.RemoveHeaders = st.removals(nil, id.keyHeader)
		return d
	}
	if len(p.scopes) > 0 && id.kind == KindAPIKey && !id.hasAllScopes(p.scopes) {
		d.Status, d.Reason, d.Message = 403, "forbidden_scope", denialMessage("forbidden_scope")
		d.RemoveHeaders = st.removals(nil, id.keyHeader)
		return d
	}

	limits := p.limits
	if id.kind == KindAPIKey && id.tier != "" {
		if tl, ok := p.tiers[id.tier]; ok {
			limits = tl
		}
	}
	if len(limits) > 0 {
		over, hdrs, err := e.limit(ctx, st, p, limits, id, r)
		switch {
		case err != nil && p.limitsOpen:
			e.log.Warn("rate limit backend failed, letting the request through (failure.limits: open)",
				zap.String("policy", p.name), zap.Error(err))
			degraded = append(degraded, "limits")
		case err != nil:
			d.Err, d.Reason = err, "backend_error"
			return d
		}
		d.ResponseHeaders = hdrs
		if over {
			d.Status, d.Reason, d.Message = 429, "over_limit", denialMessage("over_limit")
			d.RemoveHeaders = st.removals(nil, id.keyHeader)
			return d
		}
	}

	d.Allow, d.Status, d.Reason = true, 200, "ok"
	d.SetHeaders = id.headers
	if len(degraded) > 0 {
		d.Reason = "degraded"
		d.SetHeaders = append(d.SetHeaders, ratelimit.Header{Name: DegradedHeader, Value: strings.Join(degraded, ",")})
	}
	d.RemoveHeaders = st.removals(d.SetHeaders, id.keyHeader)
	return d
}

// find picks the policy: the one a route names, else the first whose match fits.
func (st *engineState) find(r *Request) *policy {
	if r.Policy != "" {
		return st.byName[r.Policy]
	}
	path := normalizePath(r.Path)
	for _, p := range st.list {
		if p.matches(r.Method, r.Host, path) {
			return p
		}
	}
	return nil
}

// removals lists the upstream headers to strip: every identity header this decision does not
// set (so a client cannot smuggle its own x-user-id), the degraded marker unless set, the API
// key header the key came in, and the session cookie when configured. A header that is set is
// never listed, because Envoy applies removals after the header mutations.
func (st *engineState) removals(set []ratelimit.Header, keyHeader string) []string {
	isSet := func(name string) bool {
		for _, h := range set {
			if h.Name == name {
				return true
			}
		}
		return false
	}
	out := make([]string, 0, len(st.identityHeaders)+3)
	for _, h := range st.identityHeaders {
		if !isSet(h) {
			out = append(out, h)
		}
	}
	if !isSet(DegradedHeader) {
		out = append(out, DegradedHeader)
	}
	if keyHeader != "" && !st.keepKeyHeader {
		out = append(out, keyHeader)
	}
	if st.stripCookie {
		out = append(out, "cookie")
	}
	return out
}

func denialMessage(reason string) string {
	switch reason {
	case "unauthenticated":
		return "authentication required"
	case "forbidden_role":
		return "insufficient role"
	case "forbidden_scope":
		return "insufficient scope"
	case "over_limit":
		return "rate limit exceeded"
	default:
		return "forbidden"
	}
}

// limit checks the policy's limits for this request in one round trip and returns whether any
// is exceeded, with the RateLimit headers describing them.
func (e *Engine) limit(ctx context.Context, st *engineState, p *policy, limits []limit, id identity, r *Request) (bool, []ratelimit.Header, error) {
	reqs := make([]ratelimit.Request, 0, len(limits))
	names := make([]string, 0, len(limits))
	for _, l := range limits {
		subject, raw, ok := subjectFor(l, id, r)
		if !ok {
			continue // e.g. by header:NAME and the request has no such header
		}
		key := limitKey(st.limitPrefix, p.name, l.name, subject)
		if l.shared != "" {
			// rate-limit-redis's own layout, so Express apps count on the same key.
			key = l.shared + raw
		}
		reqs = append(reqs, ratelimit.Request{Key: key, Limit: l.value, Cost: 1})
		names = append(names, l.name)
	}
	if len(reqs) == 0 {
		return false, nil, nil
	}
	t0 := time.Now()
	now, ds, err := e.opts.Limiter.Allow(ctx, reqs)
	if m := e.opts.Metrics; m != nil {
		m.RedisDuration.WithLabelValues("policy_limits").Observe(time.Since(t0).Seconds())
		if err != nil {
			m.RedisErrors.WithLabelValues("policy_limits", ratelimit.FailureReason(err)).Inc()
		}
	}
	if err != nil {
		return false, nil, err
	}
	if len(ds) != len(reqs) {
		return false, nil, errors.New("limiter answered a different number of decisions")
	}
	over := false
	quotas := make([]ratelimit.Quota, len(ds))
	for i, dec := range ds {
		if !dec.Allowed {
			over = true
		}
		reset := dec.Reset
		if !dec.Allowed && dec.RetryAfter > reset {
			reset = dec.RetryAfter
		}
		quotas[i] = ratelimit.Quota{
			Name:      names[i],
			Limit:     uint64(max(dec.Limit, 0)),
			Remaining: uint64(max(dec.Remaining, 0)),
			Window:    reqs[i].Limit.Window,
			Reset:     reset,
			Key:       reqs[i].Key,
			Over:      !dec.Allowed,
		}
	}
	return over, ratelimit.AppendHeaders(nil, e.opts.Headers, quotas, now), nil
}

// subjectFor names whom a limit counts: subject is kind-qualified for our own keys, raw is the
// bare value (what an Express app's keyGenerator would give) for shared keys. A principal
// limit falls back to the client address for anonymous requests, so open routes are still
// limited per client.
func subjectFor(l limit, id identity, r *Request) (subject, raw string, ok bool) {
	switch l.by {
	case "principal":
		if id.kind != KindNone && id.principal != "" {
			return id.kind + ":" + id.principal, id.principal, true
		}
		return "ip:" + r.RemoteIP, r.RemoteIP, r.RemoteIP != ""
	case "ip":
		return "ip:" + r.RemoteIP, r.RemoteIP, r.RemoteIP != ""
	case "apikey":
		if id.kind == KindAPIKey {
			return "apikey:" + id.principal, id.principal, true
		}
		return "", "", false
	case "header":
		v, ok := r.Headers[l.header]
		if !ok || v == "" {
			return "", "", false
		}
		return "header:" + v, v, true
	}
	return "", "", false
}

// maxSubjectLen is the longest subject kept readable in a key; longer ones (header values)
// are hashed so that a hostile header cannot make huge keys.
const maxSubjectLen = 96

// limitKey is prefix + "{" + policy:limit:subject + "}". Every part is escaped, so `{`, `}`
// and `:` in user input can neither collide with another subject nor move the key's Cluster
// slot.
func limitKey(prefix, policy, limit, subject string) string {
	if len(subject) > maxSubjectLen {
		sum := sha256.Sum256([]byte(subject))
		subject = "sha256-" + hex.EncodeToString(sum[:16])
	}
	b := make([]byte, 0, len(prefix)+len(policy)+len(limit)+len(subject)+16)
	b = append(b, prefix...)
	b = append(b, '{')
	b = ratelimit.AppendEscaped(b, policy)
	b = append(b, ':')
	b = ratelimit.AppendEscaped(b, limit)
	b = append(b, ':')
	b = ratelimit.AppendEscaped(b, subject)
	b = append(b, '}')
	return string(b)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
