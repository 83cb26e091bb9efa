package authz

import (
	"context"
	"errors"
	"strings"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/sessions"
)

// identity is who the caller is, as far as this decision goes.
type identity struct {
	kind      string
	principal string
	tier      string
	roles     []string
	scopes    []string
	headers   []ratelimit.Header
	// keyHeader is the header an API key came in, to strip upstream.
	keyHeader string
	// credits is the API key's credit quota (Enabled false for every other identity).
	credits apikeys.Credits
}

func (id identity) hasAnyRole(want []string) bool {
	// An API key's scopes stand in for roles, so a key scoped "admin" may use an admin route.
	have := id.roles
	if id.kind == KindAPIKey {
		have = id.scopes
	}
	for _, w := range want {
		for _, h := range have {
			if w == h {
				return true
			}
		}
	}
	return false
}

func (id identity) hasAllScopes(want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range id.scopes {
			if w == h {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// identify resolves the caller as the policy's auth mode asks. It returns a denial status
// (401) with its reason, or a backend error, or the identity.
func (e *Engine) identify(ctx context.Context, st *policy.Set, p *policy.Policy, r *Request) (identity, int, string, error) {
	anon := identity{kind: KindNone}
	switch p.Auth {
	case AuthNone:
		return anon, 0, "", nil
	case AuthAPIKey:
		if e.opts.Keys == nil {
			return anon, 401, "unauthenticated", nil
		}
		key, h, ok := apikeys.FromHeaders(r.Headers, st.APIKeyHeaders)
		if !ok {
			return anon, 401, "unauthenticated", nil
		}
		return e.byKey(ctx, st, key, h)
	case AuthSession:
		return e.bySession(ctx, r)
	case AuthAny:
		// A request that carries an API key is judged by it; otherwise by its session. A
		// bearer token that is not one of our keys (an app's own JWT, say) is not a key: the
		// session decides.
		if e.opts.Keys != nil {
			if key, h, ok := apikeys.FromHeaders(r.Headers, st.APIKeyHeaders); ok && e.wellFormed(key) {
				return e.byKey(ctx, st, key, h)
			}
		}
		if e.opts.Sessions != nil {
			return e.bySession(ctx, r)
		}
		return anon, 401, "unauthenticated", nil
	case AuthOptional:
		return e.optional(ctx, st, r)
	}
	return anon, 401, "unauthenticated", nil
}

// optional identifies the caller of an auth: optional policy: by its API key when it carries a
// well-formed one (as under auth: any, the key alone decides, so one request never gets a
// different principal under any and optional), otherwise by its session cookie. A key or
// session that does not resolve (unknown, revoked, expired, bad signature, logged out) makes
// the caller anonymous, never a 401, as express-session makes a bad cookie "no session"; the
// key's header is still stripped upstream. Only a backend failure is an error, for the policy's
// failure.auth to judge.
func (e *Engine) optional(ctx context.Context, st *policy.Set, r *Request) (identity, int, string, error) {
	if e.opts.Keys != nil {
		if key, h, ok := apikeys.FromHeaders(r.Headers, st.APIKeyHeaders); ok && e.wellFormed(key) {
			id, status, _, err := e.byKey(ctx, st, key, h)
			if status != 0 {
				return identity{kind: KindNone, keyHeader: h}, 0, "", nil
			}
			return id, 0, "", err
		}
	}
	if e.opts.Sessions != nil && r.Headers["cookie"] != "" {
		id, status, _, err := e.bySession(ctx, r)
		if status != 0 {
			return identity{kind: KindNone}, 0, "", nil
		}
		return id, 0, "", err
	}
	return identity{kind: KindNone}, 0, "", nil
}

// scopesApply reports whether a policy's scopes requirement judges id: an API key always; a
// session when sessions.scopes is set (otherwise sessions carry no scopes and pass, as before
// sessions had scopes); an anonymous caller under auth: optional, which holds no scope and is
// refused. Other anonymous identities are those of a failure.auth: open outage under auth any
// or apikey, let through marked degraded as before.
func scopesApply(st *policy.Set, p *policy.Policy, id identity) bool {
	switch id.kind {
	case KindAPIKey:
		return true
	case KindSession:
		return st.SessionScopes
	}
	return p.Auth == AuthOptional
}

// presentedKey returns the header a well-formed API key came in, or "" when the request
// carries none (or API keys are not configured). A bearer token that is not one of our keys,
// such as an app's own JWT, is not a key and stays.
func (e *Engine) presentedKey(st *policy.Set, r *Request) string {
	if e.opts.Keys == nil {
		return ""
	}
	key, h, ok := apikeys.FromHeaders(r.Headers, st.APIKeyHeaders)
	if !ok || !e.wellFormed(key) {
		return ""
	}
	return h
}

// wellFormed reports whether key has the API key format, when the resolver can tell without
// I/O (*apikeys.Store can); otherwise every candidate counts.
func (e *Engine) wellFormed(key string) bool {
	if v, ok := e.opts.Keys.(interface{ Valid(string) bool }); ok {
		return v.Valid(key)
	}
	return true
}

// byKey resolves key, found in header (which is stripped upstream whatever the outcome).
func (e *Engine) byKey(ctx context.Context, st *policy.Set, key, header string) (identity, int, string, error) {
	anon := identity{kind: KindNone, keyHeader: header}
	rec, err := e.opts.Keys.Lookup(ctx, key)
	switch {
	case err == nil:
	case errors.Is(err, apikeys.ErrMalformed), errors.Is(err, apikeys.ErrNotFound),
		errors.Is(err, apikeys.ErrRevoked), errors.Is(err, apikeys.ErrExpired):
		return anon, 401, "unauthenticated", nil
	default:
		e.countBackendError(ctx, "apikey_lookup", err)
		return anon, 0, "", err
	}
	return identity{
		kind:      KindAPIKey,
		principal: rec.ID,
		tier:      rec.Tier,
		scopes:    rec.Scopes,
		headers:   keyIdentity(st, rec),
		keyHeader: header,
		credits:   rec.Credits,
	}, 0, "", nil
}

// keyIdentity returns the upstream headers apikeys.identity_headers asks for, from rec. Empty
// values, and values unfit for a header (CR, LF or NUL), are left out: the header is then
// removed like any identity header the decision does not set.
func keyIdentity(st *policy.Set, rec apikeys.Record) []ratelimit.Header {
	if len(st.KeyHeaders) == 0 {
		return nil
	}
	hs := make([]ratelimit.Header, 0, len(st.KeyHeaders))
	for _, kh := range st.KeyHeaders {
		var v string
		switch kh.Field {
		case "id":
			v = rec.ID
		case "owner":
			v = rec.Owner
		case "name":
			v = rec.Name
		case "tier":
			v = rec.Tier
		case "scopes":
			v = strings.Join(rec.Scopes, ",")
		}
		if v != "" && !strings.ContainsAny(v, "\r\n\x00") {
			hs = append(hs, ratelimit.Header{Name: kh.Name, Value: v})
		}
	}
	return hs
}

func (e *Engine) bySession(ctx context.Context, r *Request) (identity, int, string, error) {
	anon := identity{kind: KindNone}
	if e.opts.Sessions == nil {
		return anon, 401, "unauthenticated", nil
	}
	cookie := r.Headers["cookie"]
	if cookie == "" {
		return anon, 401, "unauthenticated", nil
	}
	s, err := e.opts.Sessions.Resolve(ctx, cookie)
	switch {
	case err == nil:
	case errors.Is(err, sessions.ErrNoSession):
		return anon, 401, "unauthenticated", nil
	default:
		e.countBackendError(ctx, "session_lookup", err)
		return anon, 0, "", err
	}
	if s.Subject == "" {
		// A session without the configured subject (not logged in yet) is no identity.
		return anon, 401, "unauthenticated", nil
	}
	if sn, ok := e.opts.Sessions.(sessionSeer); ok {
		sn.Seen(s, r.RemoteIP, r.Headers["user-agent"])
	}
	hs := make([]ratelimit.Header, len(s.Headers))
	for i, h := range s.Headers {
		hs[i] = ratelimit.Header{Name: h.Name, Value: h.Value}
	}
	return identity{kind: KindSession, principal: s.Subject, roles: s.Roles, scopes: s.Scopes, headers: hs}, 0, "", nil
}

// sessionSeer is the optional part of a SessionResolver that keeps the session index (sign out
// everywhere); *sessions.Store is one. Seen must not block or touch Redis: it is called on the
// decision's path, with every session that identifies a caller.
type sessionSeer interface {
	Seen(s *sessions.Session, ip, ua string)
}

var _ sessionSeer = (*sessions.Store)(nil)

// countBackendError counts a failed identity lookup made under ctx; see ratelimit.CallReason.
func (e *Engine) countBackendError(ctx context.Context, op string, err error) {
	if m := e.opts.Metrics; m != nil {
		m.RedisErrors.WithLabelValues(op, ratelimit.CallReason(ctx, err)).Inc()
	}
}
