package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/canon"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/sessions"
)

// Peeker reads limits without counting them; *ratelimit.Limiter is one.
type Peeker interface {
	Peek(ctx context.Context, reqs []ratelimit.Request) (time.Time, []ratelimit.State, error)
}

var (
	_ Peeker  = (*ratelimit.Limiter)(nil)
	_ Limiter = (*peekLimiter)(nil)
)

// Explanation is `extauthz explain`'s account of one request: which policy matched and why,
// each identity step, the requirements, every limit with its key and current count, an API
// key's credits balance, and the verdict. It holds no secret: never a cookie, a session id or an API key; principals are ids
// (a session subject, an API key id) as limit keys and the decision metadata name them.
type Explanation struct {
	Request ExplainedRequest `json:"request"`
	// Refused is the canon reason when the request target is refused before any policy.
	Refused string `json:"refused,omitempty"`
	// Policy is the policy that decides, nil when none does.
	Policy *ExplainedPolicy `json:"policy"`
	// Considered are the policies tried before it in order (all of them when none matched),
	// with why each did not match.
	Considered []PolicyMiss `json:"considered"`
	// Identity lists what was read to learn who the caller is, in order.
	Identity []Step `json:"identity"`
	// Principal is who the caller is for this policy.
	Principal ExplainedPrincipal `json:"principal"`
	// Requirements are the policy's roles and scopes checks.
	Requirements []Requirement `json:"requirements"`
	// Limits are the limits that apply to this caller, read without counting.
	Limits []ExplainedLimit `json:"limits"`
	// Credits is the API key's credits balance, read without spending; nil for a caller
	// without credits.
	Credits *ExplainedCredits `json:"credits,omitempty"`
	// Verdict is what the sidecar would answer now.
	Verdict Verdict `json:"verdict"`
	// Notes are what the reader should know beyond the steps (a Redis read that failed, say).
	Notes []string `json:"notes,omitempty"`
}

// ExplainedRequest is the request as the policies see it, canonical.
type ExplainedRequest struct {
	Method string `json:"method"`
	Host   string `json:"host"`
	Path   string `json:"path"`
	Client string `json:"client"`
	// Policy is the policy the proxy names (context_extensions, /nginx/NAME), if any.
	Policy string `json:"named_policy,omitempty"`
}

// ExplainedPolicy is the matched policy and why it matched.
type ExplainedPolicy struct {
	Name  string `json:"name"`
	Mode  string `json:"mode"`
	Auth  string `json:"auth"`
	Why   string `json:"why"`
	Match string `json:"match"`
}

// PolicyMiss is one policy that did not match, and why.
type PolicyMiss struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// Step is one identity step: what was looked at, and what came of it.
type Step struct {
	Step   string `json:"step"`
	Result string `json:"result"`
}

// ExplainedPrincipal is the caller as the policy sees it.
type ExplainedPrincipal struct {
	Kind      string   `json:"kind"`
	Principal string   `json:"principal,omitempty"`
	Tier      string   `json:"tier,omitempty"`
	Roles     []string `json:"roles,omitempty"`
	Scopes    []string `json:"scopes,omitempty"`
}

// Requirement is one roles or scopes check.
type Requirement struct {
	Check    string   `json:"check"`
	Required []string `json:"required"`
	Held     []string `json:"held"`
	OK       bool     `json:"ok"`
	Why      string   `json:"why"`
}

// ExplainedLimit is one limit of the policy for this caller, read without counting.
type ExplainedLimit struct {
	Name      string `json:"name"`
	By        string `json:"by"`
	Algorithm string `json:"algorithm"`
	Requests  int64  `json:"requests"`
	Window    string `json:"window"`
	Burst     int64  `json:"burst,omitempty"`
	// Key is the limit's Redis key; empty when the request gives the limit no subject.
	Key string `json:"key,omitempty"`
	// Keys are the Redis keys read (sliding reads two sub-windows).
	Keys []string `json:"keys,omitempty"`
	// Skipped says why the limit does not count this request, when it does not.
	Skipped   string `json:"skipped,omitempty"`
	Count     int64  `json:"count"`
	Previous  int64  `json:"previous,omitempty"`
	TAT       string `json:"tat,omitempty"`
	Remaining int64  `json:"remaining"`
	ResetMS   int64  `json:"reset_ms"`
	// Allowed reports whether this limit alone would let the request through now.
	Allowed bool `json:"allowed"`
}

// Verdict is the decision the sidecar would make now, from the same code as a real one, with
// its limits read and not counted.
type Verdict struct {
	Allow  bool   `json:"allow"`
	Status int    `json:"status"`
	Reason string `json:"reason"`
	// WouldDeny is the reason a shadow policy would deny when enforced.
	WouldDeny string `json:"would_deny,omitempty"`
	// Error is the backend failure reason (timeout, unavailable, ...) of a failed decision.
	Error    string `json:"error,omitempty"`
	Degraded string `json:"degraded,omitempty"`
	Message  string `json:"message,omitempty"`
}

// Explain reads raw as the transports do and explains its decision on the current policies
// without changing anything in Redis: limits are read with peek, never counted. Identity is
// resolved through the Engine's own stores, so the caller builds an Engine whose session
// store does not touch (sessions.touch off) for a read-only run.
func (e *Engine) Explain(ctx context.Context, raw Raw, peek Peeker) Explanation {
	st := e.state.Load()
	// Empty lists rather than nil, so that the JSON form has the same shape every time.
	x := Explanation{Considered: []PolicyMiss{}, Identity: []Step{}, Requirements: []Requirement{}, Limits: []ExplainedLimit{}}
	r, err := read(st, raw)
	if err != nil {
		reason := "bad_request"
		var ce *canon.Error
		if errors.As(err, &ce) {
			reason = ce.Reason
		}
		x.Request = ExplainedRequest{Method: raw.Method, Client: clientIP(st, raw.Peer, raw.Headers), Policy: raw.Policy}
		x.Refused = reason
		x.Verdict = Verdict{Status: 400, Reason: "bad_request", Message: "request refused: " + reason}
		return x
	}
	x.Request = ExplainedRequest{Method: r.Method, Host: r.Host, Path: r.Path, Client: r.RemoteIP, Policy: r.Policy}

	// The verdict comes from decideOn itself, on an engine whose limiter peeks: the same
	// code as a real decision, shadow included, with nothing counted or logged.
	pl := &peekLimiter{peek: peek, states: map[string]ratelimit.State{}}
	ex := &Engine{opts: e.opts, log: zap.NewNop()}
	ex.opts.Limiter, ex.opts.Metrics, ex.opts.Logger = pl, nil, ex.log
	ex.state.Store(st)
	d := ex.decideOn(ctx, st, r)
	// ErrReason is set on a failed decision, and on a shadow policy's would-be failure.
	x.Verdict = Verdict{Allow: d.Allow && d.Err == nil, Status: d.Status, Reason: d.Reason, WouldDeny: d.WouldDeny,
		Error: d.ErrReason, Message: d.Message}
	for _, h := range d.SetHeaders {
		if h.Name == DegradedHeader {
			x.Verdict.Degraded = h.Value
		}
	}

	p := e.explainMatch(st, r, &x)
	if p == nil {
		return x
	}
	ctx, cancel := ratelimit.Bound(ctx, e.opts.Timeout)
	defer cancel()
	id := e.explainIdentity(ctx, st, p, r, &x)
	explainRequirements(st, p, id, &x)
	e.explainLimits(ctx, st, p, id, r, pl, &x)
	return x
}

// explainMatch fills in the policy that decides r and the ones tried before it.
func (e *Engine) explainMatch(st *policy.Set, r *Request, x *Explanation) *policy.Policy {
	if r.Policy != "" {
		p, ok := st.ByName(r.Policy)
		if !ok {
			x.Notes = append(x.Notes, fmt.Sprintf("the proxy names policy %q, which is not configured: the request is refused (500), never matched by route", sanitizeName(r.Policy)))
			return nil
		}
		x.Policy = explainedPolicy(p, "named by the proxy's configuration (context_extensions, /nginx/NAME or /forward/NAME); route matching is not used")
		return p
	}
	for _, p := range st.Policies {
		why := p.WhyNot(r.Method, r.Host, r.Path)
		if why == "" {
			x.Policy = explainedPolicy(p, "first policy whose match block fits: "+p.Why())
			return p
		}
		x.Considered = append(x.Considered, PolicyMiss{Name: p.Name, Why: why})
	}
	x.Notes = append(x.Notes, "no policy matches: the request is denied (403 no_policy)")
	return nil
}

func explainedPolicy(p *policy.Policy, why string) *ExplainedPolicy {
	mode := "enforce"
	if p.Shadow {
		mode = "shadow"
	}
	return &ExplainedPolicy{Name: p.Name, Mode: mode, Auth: p.Auth, Why: why, Match: p.Why()}
}

// explainIdentity lists what the request carries and what each credential resolves to, then
// the identity identify itself settles on, which is returned.
func (e *Engine) explainIdentity(ctx context.Context, st *policy.Set, p *policy.Policy, r *Request, x *Explanation) identity {
	step := func(name, format string, a ...any) {
		x.Identity = append(x.Identity, Step{Step: name, Result: fmt.Sprintf(format, a...)})
	}
	step("auth", "%s", authText(p.Auth))
	keyDecides := false
	if p.Auth != AuthNone && p.Auth != AuthSession {
		keyDecides = e.explainKey(ctx, st, p, r, step)
	}
	if p.Auth == AuthSession || (p.Auth == AuthAny || p.Auth == AuthOptional) && !keyDecides {
		e.explainSession(ctx, r, step)
	}
	id, status, reason, err := e.identify(ctx, st, p, r)
	switch {
	case err != nil && p.AuthOpen:
		step("identity", "the identity backend failed (%s); failure.auth: open lets the request on as anonymous, marked degraded", ratelimit.CallReason(ctx, err))
		id = identity{kind: KindNone}
	case err != nil:
		step("identity", "the identity backend failed (%s); failure.auth: closed makes the decision an error", ratelimit.CallReason(ctx, err))
	case status != 0:
		step("identity", "none: %d %s", status, reason)
	case id.kind == KindNone:
		step("identity", "anonymous")
	default:
		step("identity", "%s %s", id.kind, principalText(id))
	}
	x.Principal = ExplainedPrincipal{Kind: id.kind, Principal: id.principal, Tier: id.tier, Roles: id.roles, Scopes: id.scopes}
	return id
}

func authText(auth string) string {
	switch auth {
	case AuthNone:
		return "none: no identity is read (an API key the request carries is still stripped upstream)"
	case AuthSession:
		return "session: an express-session cookie is required"
	case AuthAPIKey:
		return "apikey: an API key is required"
	case AuthAny:
		return "any: a well-formed API key decides when present, else the session cookie; one of them is required"
	case AuthOptional:
		return "optional: as any, but a request without a valid key or session goes on as anonymous"
	}
	return auth
}

func principalText(id identity) string {
	s := id.principal
	if id.tier != "" {
		s += " (tier " + id.tier + ")"
	}
	return s
}

// explainKey reports the API key steps and whether a well-formed key decides the identity.
func (e *Engine) explainKey(ctx context.Context, st *policy.Set, p *policy.Policy, r *Request, step func(string, string, ...any)) bool {
	if e.opts.Keys == nil {
		step("apikey", "API keys are not configured")
		return false
	}
	key, h, ok := apikeys.FromHeaders(r.Headers, st.APIKeyHeaders)
	if !ok {
		step("apikey.header", "no key in %s", strings.Join(st.APIKeyHeaders, ", "))
		return false
	}
	step("apikey.header", "a candidate in %s", h)
	if !e.wellFormed(key) {
		if p.Auth == AuthAPIKey {
			step("apikey.format", "not well-formed (wrong prefix, length or checksum): rejected without a Redis call")
		} else {
			step("apikey.format", "not one of our keys (an app's own token, say): ignored, the header stays")
		}
		return false
	}
	step("apikey.format", "well-formed")
	rec, err := e.opts.Keys.Lookup(ctx, key)
	switch {
	case err == nil:
		step("apikey.record", "%s: valid (%s)", rec.ID, recordText(rec))
	case errors.Is(err, apikeys.ErrNotFound):
		step("apikey.record", "not found: never issued, or deleted")
	case errors.Is(err, apikeys.ErrRevoked):
		step("apikey.record", "%s: revoked (%s)", rec.ID, recordText(rec))
	case errors.Is(err, apikeys.ErrExpired):
		step("apikey.record", "%s: expired %s (%s)", rec.ID, rec.Expires.UTC().Format(time.RFC3339), recordText(rec))
	case errors.Is(err, apikeys.ErrMalformed):
		step("apikey.record", "malformed")
	default:
		step("apikey.record", "lookup failed: %s", ratelimit.CallReason(ctx, err))
	}
	return true
}

func recordText(rec apikeys.Record) string {
	parts := []string{"owner " + rec.Owner}
	if rec.Tier != "" {
		parts = append(parts, "tier "+rec.Tier)
	}
	if len(rec.Scopes) > 0 {
		parts = append(parts, "scopes "+strings.Join(rec.Scopes, ","))
	}
	return strings.Join(parts, ", ")
}

// explainSession reports the session steps. The reasons a session does not resolve are the
// session store's fixed texts, which carry nothing from the request.
func (e *Engine) explainSession(ctx context.Context, r *Request, step func(string, string, ...any)) {
	if e.opts.Sessions == nil {
		step("session", "sessions are not configured (sessions.secrets)")
		return
	}
	name := e.opts.Sessions.CookieName()
	if _, ok := sessions.CookieValue(r.Headers["cookie"], name); !ok {
		step("session.cookie", "no %s cookie", name)
		return
	}
	step("session.cookie", "%s present", name)
	s, err := e.opts.Sessions.Resolve(ctx, r.Headers["cookie"])
	switch {
	case err == nil && s.Subject == "":
		step("session.lookup", "found, without the subject field: not logged in, no identity")
	case err == nil:
		roles := "none"
		if len(s.Roles) > 0 {
			roles = strings.Join(s.Roles, ",")
		}
		step("session.lookup", "valid: subject %s, roles %s", s.Subject, roles)
	case errors.Is(err, sessions.ErrNoSession):
		step("session.lookup", "%s", err.Error())
	default:
		step("session.lookup", "lookup failed: %s", ratelimit.CallReason(ctx, err))
	}
}

// explainRequirements lists the policy's roles and scopes checks with decide's own tests.
func explainRequirements(st *policy.Set, p *policy.Policy, id identity, x *Explanation) {
	if len(p.Roles) > 0 {
		held := id.roles
		why := "the principal needs one of the roles"
		if id.kind == KindAPIKey {
			held, why = id.scopes, "an API key's scopes stand in for roles"
		}
		x.Requirements = append(x.Requirements, Requirement{Check: "roles", Required: p.Roles, Held: held, OK: id.hasAnyRole(p.Roles), Why: why})
	}
	if len(p.Scopes) > 0 {
		apply := scopesApply(st, p, id)
		why := "all of the scopes are needed"
		if !apply {
			why = "not applied to this caller (sessions carry no scopes unless sessions.scopes is set; an identity skipped by failure.auth: open passes)"
		}
		x.Requirements = append(x.Requirements, Requirement{Check: "scopes", Required: p.Scopes, Held: id.scopes, OK: !apply || id.hasAllScopes(p.Scopes), Why: why})
	}
}

// explainLimits lists the limits that apply to id, keyed as limit() keys them, with their
// counters, and the API key's credits balance with creditsRequest, the request limit()
// spends: what the verdict read, or a peek of its own when the decision stopped before its
// limits.
func (e *Engine) explainLimits(ctx context.Context, st *policy.Set, p *policy.Policy, id identity, r *Request, pl *peekLimiter, x *Explanation) {
	limits := p.Limits
	if id.kind == KindAPIKey && id.tier != "" {
		if tl, ok := p.Tiers[id.tier]; ok {
			limits = tl
			x.Notes = append(x.Notes, fmt.Sprintf("tier %s: its limits replace the policy's", id.tier))
		}
	}
	if (len(limits) > 0 || id.credits.Enabled) && !pl.called {
		x.Notes = append(x.Notes, "the decision ends before the limits are checked: they are shown as they would count this caller, and count nothing")
	}
	var reqs []ratelimit.Request
	var at []int
	for _, l := range limits {
		el := ExplainedLimit{Name: l.Name, By: l.By, Algorithm: l.Value.Algorithm.String(), Requests: l.Value.Requests,
			Window: l.Value.Window.String(), Allowed: true, Remaining: l.Value.Requests}
		if l.By == "header" {
			el.By = "header:" + l.Header
		}
		if l.Value.Algorithm == ratelimit.AlgorithmGCRA {
			el.Burst = l.Value.Burst
			if el.Burst == 0 {
				el.Burst = l.Value.Requests
			}
			el.Remaining = el.Burst
		}
		subject, raw, ok := subjectFor(l, id, r)
		if !ok {
			el.Skipped = skippedText(l)
		} else {
			el.Key = limitKey(st.LimitPrefix, p.Name, l.Name, subject)
			if l.Shared != "" {
				el.Key = l.Shared + raw
			}
			if _, read := pl.states[el.Key]; !read {
				reqs = append(reqs, ratelimit.Request{Key: el.Key, Limit: l.Value})
			}
			at = append(at, len(x.Limits))
		}
		x.Limits = append(x.Limits, el)
	}
	var credits ratelimit.Request
	if id.credits.Enabled {
		credits = creditsRequest(id.credits)
		if _, read := pl.states[credits.Key]; !read {
			reqs = append(reqs, credits)
		}
	}
	if len(reqs) > 0 {
		if now, sts, err := peek(ctx, pl.peek, reqs); err != nil {
			x.Notes = append(x.Notes, "the limits could not be read: "+ratelimit.CallReason(ctx, err))
		} else {
			pl.now = now
			for i, s := range sts {
				pl.states[reqs[i].Key] = s
			}
		}
	}
	if id.credits.Enabled {
		s, read := pl.states[credits.Key]
		x.Credits = explainedCredits(credits, s, read, pl.now)
	}
	for _, i := range at {
		el := &x.Limits[i]
		s, ok := pl.states[el.Key]
		if !ok {
			continue
		}
		el.Keys, el.Count, el.Previous, el.Remaining, el.Allowed = s.Keys, s.Count, s.Previous, s.Remaining, s.Allowed
		el.ResetMS = s.Reset.Milliseconds()
		if !s.TAT.IsZero() {
			el.TAT = s.TAT.UTC().Format(time.RFC3339Nano)
		}
	}
}

func peek(ctx context.Context, p Peeker, reqs []ratelimit.Request) (time.Time, []ratelimit.State, error) {
	if p == nil {
		return time.Time{}, nil, errors.New("no limiter to read the limits with")
	}
	return p.Peek(ctx, reqs)
}

func skippedText(l policy.Limit) string {
	switch l.By {
	case "header":
		return "the request has no " + l.Header + " header: this limit does not count it"
	case "apikey":
		return "the caller has no API key: this limit does not count it"
	}
	return "the request has no client address: this limit does not count it"
}

// peekLimiter is the Limiter of Explain's verdict: it reads every limit with Peek and answers
// what a request of cost 1 would get, counting nothing, and keeps what it read.
type peekLimiter struct {
	peek   Peeker
	states map[string]ratelimit.State
	// called is set once the decision reached its limits.
	called bool
	// now is Redis's clock at the last peek.
	now time.Time
}

func (pl *peekLimiter) Allow(ctx context.Context, reqs []ratelimit.Request) (time.Time, []ratelimit.Decision, error) {
	pl.called = true
	now, sts, err := peek(ctx, pl.peek, reqs)
	if err != nil {
		return time.Time{}, nil, err
	}
	pl.now = now
	ds := make([]ratelimit.Decision, len(sts))
	for i, s := range sts {
		pl.states[reqs[i].Key] = s
		lim := reqs[i].Limit
		capacity := lim.Requests
		if lim.Algorithm == ratelimit.AlgorithmGCRA && lim.Burst > 0 {
			capacity = lim.Burst
		}
		ds[i] = ratelimit.Decision{Allowed: s.Allowed, Limit: capacity, Remaining: s.Remaining, Reset: s.Reset}
		switch {
		case s.Allowed:
		case lim.Algorithm == ratelimit.AlgorithmCredits && lim.Refill == ratelimit.RefillNone:
			// As the limiter answers: only an operator brings such a balance back.
			ds[i].RetryAfter = ratelimit.MaxWindow
		default:
			ds[i].RetryAfter = max(s.Reset, time.Millisecond)
		}
		if lim.Algorithm == ratelimit.AlgorithmCredits {
			// A balance above its quota is its own limit, as Decision documents.
			ds[i].Limit = max(capacity, s.Remaining)
		}
	}
	return now, ds, nil
}
