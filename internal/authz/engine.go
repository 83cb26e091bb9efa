package authz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisurl"
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

// Request is the canonical request the engine decides on, whichever proxy asked. Transports
// never build one themselves: Engine.Read makes it from what they received (canonical.go).
type Request struct {
	Method string
	// Host is lower-case, without port or trailing dot.
	Host string
	// Path is the canonical path (internal/canon): no query, no dot or empty segments, escapes
	// decoded but for the structural ones a deployment allowed.
	Path string
	// Headers has lower-case names; repeated headers joined with ", " (cookies with "; ").
	Headers map[string]string
	// RemoteIP is the downstream client's address, without a port.
	RemoteIP string
	// Policy names the policy to use, chosen by the operator (Envoy's context_extensions, the
	// /nginx/<policy> and /forward/<policy> endpoints); "" means match by route.
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
	// ErrReason says, with Err, why the backend failed: timeout (a deadline, the caller's or
	// redis.timeout), canceled (the caller went away), bad_reply or unavailable.
	ErrReason string
	// Reason is a bounded label for metrics and logs: ok, no_policy, unauthenticated,
	// forbidden_role, forbidden_scope, over_limit, over_credits, backend_error, degraded.
	Reason string
	// Message is the human text of a denial, sent as {"error": Message}.
	Message string

	Policy    string
	Kind      string // none (anonymous, under auth none or optional), session or apikey
	Principal string // session subject or API key id; never a secret
	Tier      string

	// SetHeaders are identity headers to set on the upstream request (replacing any copy).
	SetHeaders []ratelimit.Header
	// RemoveHeaders are upstream request headers to strip: configured identity headers this
	// decision does not set, the API key header and (optionally) the session cookie.
	RemoveHeaders []string
	// KeyHeader is the header an API key came in when it must not reach the upstream
	// (apikeys.keep_header false); also listed in RemoveHeaders.
	KeyHeader string
	// ResponseHeaders go on the downstream response: RateLimit headers, Retry-After.
	ResponseHeaders []ratelimit.Header

	// WouldDeny is set when a policy in mode: shadow let the request through that enforcing it
	// would have denied or failed: the bounded reason of that outcome (unauthenticated,
	// forbidden_role, forbidden_scope, over_limit, backend_error, ...); Reason is then "shadow".
	WouldDeny string
	// shadow is what a shadow policy's decision keeps to let a denial through (shadow.go).
	shadow shadowState
}

// Options configures an Engine.
type Options struct {
	Sessions SessionResolver // nil when sessions are not configured
	Keys     KeyResolver     // nil when API keys are not configured
	Limiter  Limiter
	// Timeout bounds the Redis work of one decision (default redisurl.DefaultTimeout).
	Timeout time.Duration
	Headers ratelimit.Format
	Logger  *zap.Logger
	Metrics *metrics.Metrics
	// DecisionSample is the share of allowed decisions logged (0 = none, 1 = all).
	DecisionSample float64
	// DecisionDenials logs every denial and failed decision.
	DecisionDenials bool
}

// Engine decides requests. Its policies are a compiled policy.Set swapped whole on reload.
type Engine struct {
	state atomic.Pointer[policy.Set]
	opts  Options
	log   *zap.Logger
}

// New returns an Engine deciding on set.
func New(set *policy.Set, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Timeout <= 0 {
		opts.Timeout = redisurl.DefaultTimeout
	}
	e := &Engine{opts: opts, log: opts.Logger}
	e.Load(set)
	return e
}

// Load swaps in set; decisions in flight finish on the previous one.
func (e *Engine) Load(set *policy.Set) {
	e.state.Store(set)
	// sessions.scopes set but a session store that does not read them: every session would
	// fail every scopes requirement (403). Said once per load, loudly: it is a wiring bug.
	if r, ok := e.opts.Sessions.(interface{ ReadsScopes() bool }); ok && set != nil && set.SessionScopes && !r.ReadsScopes() {
		e.log.Error("sessions.scopes is configured but the session store reads no scopes; sessions will fail every scopes requirement")
	}
}

// Policies returns the set decisions use now.
func (e *Engine) Policies() *policy.Set { return e.state.Load() }

// Decide answers one canonical request (see Read).
func (e *Engine) Decide(ctx context.Context, r *Request) Decision {
	return e.decideOn(ctx, e.state.Load(), r)
}

// decideOn decides r on the policy set st and records the decision. A transport reads and
// decides one request on one snapshot, so a reload in between cannot read a request with one
// set's rules and match it against another's policies.
func (e *Engine) decideOn(ctx context.Context, st *policy.Set, r *Request) Decision {
	start := time.Now()
	d := e.decide(ctx, st, r)
	if d.shadow.on {
		d = shadowed(st, d)
	}
	e.record(d, time.Since(start))
	return d
}

// record counts and logs a decision.
func (e *Engine) record(d Decision, took time.Duration) {
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
		if d.WouldDeny != "" {
			m.WouldDeny.WithLabelValues(policy, d.WouldDeny).Inc()
		}
		m.DecisionDuration.WithLabelValues(result).Observe(took.Seconds())
	}
	e.logDecision(d, took)
}

// logDecision writes the decision log: every denial and error when DecisionDenials is set, a
// DecisionSample share of the allowed decisions. It names the policy, the kind of principal,
// the verdict and the latency, never a principal, key, cookie or address. A request a shadow
// policy would have denied is logged as a denial is: those lines are what a dry run is for.
func (e *Engine) logDecision(d Decision, took time.Duration) {
	switch {
	case !d.Allow || d.Err != nil || d.WouldDeny != "":
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
	fields := []zap.Field{
		zap.String("policy", d.Policy),
		zap.String("kind", d.Kind),
		zap.String("verdict", verdict),
		zap.Int("status", d.Status),
		zap.String("reason", d.Reason),
		zap.Duration("latency", took),
	}
	if d.Err != nil {
		fields = append(fields, zap.String("backend", d.ErrReason))
	}
	if d.WouldDeny != "" {
		fields = append(fields, zap.Bool("would_deny", true), zap.String("would_deny_reason", d.WouldDeny))
		if d.ErrReason != "" {
			fields = append(fields, zap.String("backend", d.ErrReason))
		}
	}
	e.log.Info("decision", fields...)
}

func (e *Engine) decide(ctx context.Context, st *policy.Set, r *Request) Decision {
	d := Decision{Kind: KindNone}
	var p *policy.Policy
	if r.Policy != "" {
		var ok bool
		if p, ok = st.ByName(r.Policy); !ok {
			// The operator named a policy that does not exist: a configuration error, never a
			// fall back to route matching, which could pick a weaker policy.
			e.log.Error("the proxy configuration names a policy that is not configured; refusing the request",
				zap.String("policy", sanitizeName(r.Policy)))
			d.Status, d.Reason, d.Message = 500, "unknown_policy", "authorization is misconfigured"
			d.RemoveHeaders = removals(st, nil, "")
			return d
		}
	} else if p = st.Match(r.Method, r.Host, r.Path); p == nil {
		d.Status, d.Reason, d.Message = 403, "no_policy", "no policy allows this request"
		d.RemoveHeaders = removals(st, nil, "")
		return d
	}
	d.Policy = p.Name

	ctx, cancel := ratelimit.Bound(ctx, e.opts.Timeout)
	defer cancel()

	id, status, reason, err := e.identify(ctx, st, p, r)
	if id.keyHeader == "" {
		// A well-formed key the route did not read (auth none or session) is still a secret
		// the app must not receive.
		id.keyHeader = e.presentedKey(st, r)
	}
	if p.Shadow {
		d.shadow = shadowState{on: true, keyHeader: id.keyHeader}
	}
	var degraded []string
	switch {
	case err != nil && p.AuthOpen:
		e.log.Warn("identity backend failed, letting the request through unauthenticated (failure.auth: open)",
			zap.String("policy", p.Name), zap.String("reason", ratelimit.CallReason(ctx, err)), zap.Error(err))
		degraded = append(degraded, "auth")
		// Anonymous, but a key the request carried is still stripped upstream.
		id = identity{kind: KindNone, keyHeader: id.keyHeader}
	case err != nil:
		d.Err, d.ErrReason, d.Reason = err, ratelimit.CallReason(ctx, err), "backend_error"
		return d
	case status != 0:
		d.Status, d.Reason = status, reason
		d.Message = denialMessage(reason)
		d.RemoveHeaders = removals(st, nil, id.keyHeader)
		return d
	}
	d.Kind, d.Principal, d.Tier = id.kind, id.principal, id.tier
	if p.Shadow {
		d.shadow.identified, d.shadow.headers, d.shadow.authDegraded = true, id.headers, len(degraded) > 0
	}

	if len(p.Roles) > 0 && !id.hasAnyRole(p.Roles) {
		d.Status, d.Reason, d.Message = 403, "forbidden_role", denialMessage("forbidden_role")
		d.RemoveHeaders = removals(st, nil, id.keyHeader)
		return d
	}
	if len(p.Scopes) > 0 && scopesApply(st, p, id) && !id.hasAllScopes(p.Scopes) {
		d.Status, d.Reason, d.Message = 403, "forbidden_scope", denialMessage("forbidden_scope")
		d.RemoveHeaders = removals(st, nil, id.keyHeader)
		return d
	}

	limits := p.Limits
	if id.kind == KindAPIKey && id.tier != "" {
		if tl, ok := p.Tiers[id.tier]; ok {
			limits = tl
		}
	}
	if len(limits) > 0 || id.credits.Enabled {
		over, hdrs, err := e.limit(ctx, st, p, limits, id, r)
		switch {
		case err != nil && p.LimitsOpen && !id.credits.Enabled:
			// Under failure.limits: open a Redis failure does not switch limits off: the
			// limiter's local per-process counts decide (ratelimit.Guard), so a flood that
			// makes Redis miss its deadlines is still limited, per replica.
			e.log.Warn("rate limit backend failed, deciding on this replica's local counts (failure.limits: open)",
				zap.String("policy", p.Name), zap.Bool("local_counts", hdrs != nil),
				zap.String("reason", ratelimit.CallReason(ctx, err)), zap.Error(err))
			degraded = append(degraded, "limits")
			d.shadow.limitsDegraded = true
		case err != nil:
			// Credits included: a balance only Redis knows cannot be spent on local counts,
			// so a key with credits fails as failure.limits: closed does (see ratelimit.Guard).
			d.Err, d.ErrReason, d.Reason = err, ratelimit.CallReason(ctx, err), "backend_error"
			return d
		}
		d.ResponseHeaders = hdrs
		if over != "" {
			d.Status, d.Reason, d.Message = 429, over, denialMessage(over)
			if over == reasonOverCredits {
				d.Status = st.CreditsStatus
			}
			d.RemoveHeaders = removals(st, nil, id.keyHeader)
			return d
		}
	}

	d.Allow, d.Status, d.Reason = true, 200, "ok"
	d.SetHeaders = id.headers
	if len(degraded) > 0 {
		d.Reason = "degraded"
		d.SetHeaders = append(d.SetHeaders, ratelimit.Header{Name: DegradedHeader, Value: strings.Join(degraded, ",")})
	}
	d.RemoveHeaders = removals(st, d.SetHeaders, id.keyHeader)
	if id.keyHeader != "" && !st.KeepKeyHeader {
		d.KeyHeader = id.keyHeader
	}
	return d
}

// sanitizeName keeps a policy name fit for a log line: names come from the proxy's
// configuration, but a log line must not carry arbitrary bytes.
func sanitizeName(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '?'
	}, s)
}

// removals lists the upstream headers to strip: every identity header this decision does not
// set (so a client cannot smuggle its own x-user-id), the degraded marker unless set, the API
// key header the key came in, and the session cookie when configured. A header that is set is
// never listed, because Envoy applies removals after the header mutations.
func removals(st *policy.Set, set []ratelimit.Header, keyHeader string) []string {
	isSet := func(name string) bool {
		for _, h := range set {
			if h.Name == name {
				return true
			}
		}
		return false
	}
	out := make([]string, 0, len(st.IdentityHeaders)+3)
	for _, h := range st.IdentityHeaders {
		if !isSet(h) {
			out = append(out, h)
		}
	}
	if !isSet(DegradedHeader) {
		out = append(out, DegradedHeader)
	}
	if keyHeader != "" && !st.KeepKeyHeader {
		out = append(out, keyHeader)
	}
	if st.StripCookie {
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
	case "over_credits":
		return "credits exhausted"
	default:
		return "forbidden"
	}
}

// limit checks the policy's limits for this request, and spends one of the API key's credits
// when it has some, in one round trip, and returns the reason of a denial ("" when allowed:
// over_credits when the credits are used up, else over_limit), with the RateLimit headers
// describing the quotas. When Redis failed but the limiter decided on local counts
// (ratelimit.ErrFallback), it returns those verdicts and headers with the error.
func (e *Engine) limit(ctx context.Context, st *policy.Set, p *policy.Policy, limits []policy.Limit, id identity, r *Request) (string, []ratelimit.Header, error) {
	n := len(limits)
	if id.credits.Enabled {
		n++
	}
	reqs := make([]ratelimit.Request, 0, n)
	names := make([]string, 0, n)
	for _, l := range limits {
		subject, raw, ok := subjectFor(l, id, r)
		if !ok {
			continue // e.g. by header:NAME and the request has no such header
		}
		key := limitKey(st.LimitPrefix, p.Name, l.Name, subject)
		if l.Shared != "" {
			// rate-limit-redis's own layout, so Express apps count on the same key.
			key = l.Shared + raw
		}
		reqs = append(reqs, ratelimit.Request{Key: key, Limit: l.Value, Cost: 1})
		names = append(names, l.Name)
	}
	if id.credits.Enabled {
		reqs = append(reqs, creditsRequest(id.credits))
		names = append(names, creditsQuotaName)
	}
	if len(reqs) == 0 {
		return "", nil, nil
	}
	t0 := time.Now()
	now, ds, err := e.opts.Limiter.Allow(ctx, reqs)
	if m := e.opts.Metrics; m != nil {
		m.RedisDuration.WithLabelValues("policy_limits").Observe(time.Since(t0).Seconds())
		if err != nil {
			m.RedisErrors.WithLabelValues("policy_limits", ratelimit.CallReason(ctx, err)).Inc()
		}
	}
	var fallback error
	switch {
	case err != nil && errors.Is(err, ratelimit.ErrFallback) && len(ds) == len(reqs):
		// Redis failed and the limiter decided on its local counts: the caller chooses
		// between those decisions (limits open) and an error (limits closed).
		fallback = err
	case err != nil:
		return "", nil, err
	case len(ds) != len(reqs):
		return "", nil, errors.New("limiter answered a different number of decisions")
	}
	over := ""
	quotas := make([]ratelimit.Quota, 0, len(ds))
	for i, dec := range ds {
		if reqs[i].Limit.Algorithm == ratelimit.AlgorithmCredits {
			if !dec.Allowed {
				over = reasonOverCredits
			}
			if q, ok := creditsQuota(reqs[i], dec, now); ok {
				quotas = append(quotas, q)
			}
			continue
		}
		if !dec.Allowed && over == "" {
			over = reasonOverLimit
		}
		reset := dec.Reset
		if !dec.Allowed && dec.RetryAfter > reset {
			reset = dec.RetryAfter
		}
		quotas = append(quotas, ratelimit.Quota{
			Name:      names[i],
			Limit:     uint64(max(dec.Limit, 0)),
			Remaining: uint64(max(dec.Remaining, 0)),
			Window:    reqs[i].Limit.Window,
			Reset:     reset,
			Key:       reqs[i].Key,
			Over:      !dec.Allowed,
		})
	}
	return over, ratelimit.AppendHeaders(nil, e.opts.Headers, quotas, now), fallback
}

// subjectFor names whom a limit counts: subject is kind-qualified for our own keys, raw is the
// bare value (what an Express app's keyGenerator would give) for shared keys. A principal
// limit falls back to the client address for anonymous requests, so open routes are still
// limited per client. A client address counts as l.ClientKey gives it (an IPv6 address masked
// to its ipv6_subnet), in both places: otherwise an anonymous caller could rotate addresses
// inside its /56 on a by: principal route where it cannot on a by: ip one.
func subjectFor(l policy.Limit, id identity, r *Request) (subject, raw string, ok bool) {
	switch l.By {
	case "principal":
		if id.kind != KindNone && id.principal != "" {
			return id.kind + ":" + id.principal, id.principal, true
		}
		if r.RemoteIP == "" {
			return "", "", false
		}
		c := l.ClientKey(r.RemoteIP)
		return "ip:" + c, c, true
	case "ip":
		if r.RemoteIP == "" {
			return "", "", false
		}
		c := l.ClientKey(r.RemoteIP)
		return "ip:" + c, c, true
	case "apikey":
		if id.kind == KindAPIKey {
			return "apikey:" + id.principal, id.principal, true
		}
		return "", "", false
	case "header":
		v, ok := r.Headers[l.Header]
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
