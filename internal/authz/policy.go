// Package authz is the decision core of ext_authz: it matches a request to a route policy,
// resolves who the caller is (an express-session cookie or an API key), checks roles and
// scopes, applies the policy's rate limits, and answers allow or deny with the headers each
// proxy needs. The gRPC Check server and the HTTP authorization handlers are thin transports
// over the same Engine.
package authz

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Auth modes of a policy.
const (
	AuthNone    = "none"
	AuthSession = "session"
	AuthAPIKey  = "apikey"
	AuthAny     = "any"
)

// policy is a config.Policy compiled for matching and limiting.
type policy struct {
	name          string
	pathPrefix    string
	caseSensitive bool
	methods       []string
	host          string
	auth          string
	roles         []string
	scopes        []string
	limits        []limit
	tiers         map[string][]limit
	authOpen      bool // failure.auth == open
	limitsOpen    bool // failure.limits == open
}

// limit is one compiled limit.
type limit struct {
	name   string
	by     string // principal, ip, apikey, header
	header string // for by header:NAME
	value  ratelimit.Limit
	// shared is rate-limit-redis's key prefix when the counter is shared with Express apps.
	shared string
}

func compilePolicies(ps []config.Policy) ([]*policy, map[string]*policy, error) {
	list := make([]*policy, 0, len(ps))
	byName := make(map[string]*policy, len(ps))
	for _, p := range ps {
		cp := &policy{
			name:          p.Name,
			pathPrefix:    p.Match.PathPrefix,
			caseSensitive: p.Match.CaseSensitive,
			methods:       withHead(p.Match.Methods),
			host:          strings.ToLower(p.Match.Host),
			auth:          p.Auth,
			roles:         p.Roles,
			scopes:        p.Scopes,
			authOpen:      p.Failure.Auth == "open",
			limitsOpen:    p.Failure.Limits == "open",
		}
		var err error
		if cp.limits, err = compileLimits(p.Name, "", p.Limits); err != nil {
			return nil, nil, err
		}
		if len(p.Tiers) > 0 {
			cp.tiers = make(map[string][]limit, len(p.Tiers))
			for tier, ls := range p.Tiers {
				if cp.tiers[tier], err = compileLimits(p.Name, tier, ls); err != nil {
					return nil, nil, err
				}
			}
		}
		list = append(list, cp)
		byName[cp.name] = cp
	}
	return list, byName, nil
}

func compileLimits(policyName, tier string, ls []config.Limit) ([]limit, error) {
	out := make([]limit, 0, len(ls))
	for i, l := range ls {
		algo, err := ratelimit.ParseAlgorithm(l.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("policy %s limit %d: %w", policyName, i, err)
		}
		name := l.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", policyName, i)
			if tier != "" {
				name = fmt.Sprintf("%s-%s-%d", policyName, tier, i)
			}
		}
		cl := limit{
			name:   name,
			by:     l.By,
			value:  ratelimit.Limit{Requests: l.Requests, Window: time.Duration(l.Window), Algorithm: algo, Burst: l.Burst},
			shared: l.SharedPrefix,
		}
		if h, ok := strings.CutPrefix(l.By, "header:"); ok {
			cl.by, cl.header = "header", h
		}
		out = append(out, cl)
	}
	return out, nil
}

// matches reports whether p's match block fits the request. path is already normalized.
func (p *policy) matches(method, host, path string) bool {
	if p.pathPrefix != "" {
		if len(path) < len(p.pathPrefix) {
			return false
		}
		head := path[:len(p.pathPrefix)]
		if p.caseSensitive {
			if head != p.pathPrefix {
				return false
			}
		} else if !strings.EqualFold(head, p.pathPrefix) {
			return false
		}
	}
	if p.host != "" && !hostEqual(p.host, host) {
		return false
	}
	if len(p.methods) > 0 {
		ok := false
		for _, m := range p.methods {
			if m == method {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// withHead adds HEAD to methods that list GET, as Express routes a HEAD request to app.get
// handlers: otherwise a HEAD request would slip past a GET-only policy into a later one.
func withHead(methods []string) []string {
	if !slices.Contains(methods, "GET") || slices.Contains(methods, "HEAD") {
		return methods
	}
	return append(slices.Clip(methods), "HEAD")
}

// hostEqual compares a configured host with a request's :authority, ignoring case and a port.
func hostEqual(want, got string) bool {
	if i := strings.LastIndexByte(got, ':'); i >= 0 && !strings.Contains(got[i:], "]") {
		got = got[:i]
	}
	return strings.EqualFold(want, got)
}

// normalizePath makes equivalent spellings of a path match the same policy: percent-encoded
// unreserved characters are decoded, empty segments ("//") are merged and "." and ".."
// segments are resolved, as RFC 3986 and Envoy's normalize_path and merge_slashes do. Without
// it "/%61pi/x", "//api/x" or "/public/../api/x" could escape an /api/ policy while a server
// behind the proxy still resolves them to /api/x. The common path needs no work and no
// allocation.
func normalizePath(p string) string {
	if p == "" {
		return "/"
	}
	if !strings.Contains(p, "%") && !strings.Contains(p, "//") && !strings.Contains(p, "/.") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' && i+2 < len(p) {
			if d, ok := unhex2(p[i+1], p[i+2]); ok && unreserved(d) {
				b.WriteByte(d)
				i += 2
				continue
			}
		}
		b.WriteByte(c)
	}
	segs := strings.Split(b.String(), "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	res := "/" + strings.Join(out, "/")
	if last := segs[len(segs)-1]; (last == "" || last == "." || last == "..") && res != "/" {
		res += "/"
	}
	return res
}

func unhex2(a, b byte) (byte, bool) {
	h, ok1 := unhex(a)
	l, ok2 := unhex(b)
	return h<<4 | l, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
