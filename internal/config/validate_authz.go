package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// sessions checks the sessions section; it matters only once secrets are set.
func (k *checker) sessions() {
	s := k.c.Sessions
	if !validToken(s.Cookie) {
		k.fail("sessions.cookie", s.Cookie, "%q is not a valid cookie name", s.Cookie)
	}
	if s.Prefix == "" {
		k.fail("sessions.prefix", s.Prefix, "must not be empty (connect-redis's default is \"sess:\")")
	}
	for i, sec := range s.Secrets {
		if sec == "" {
			k.fail(fmt.Sprintf("sessions.secrets[%d]", i), sec, "must not be empty")
		}
	}
	k.dottedPath("sessions.subject", s.Subject, true)
	k.dottedPath("sessions.roles", s.Roles, false)
	k.dottedPath("sessions.scopes", s.Scopes, false)
	for _, name := range sortedKeys(s.Headers) {
		path := "sessions.headers." + name
		if !validToken(name) || strings.ToLower(name) != name {
			k.fail(path, s.Headers[name], "%q is not a lower-case HTTP header name", name)
		}
		k.dottedPath(path, s.Headers[name], true)
	}
	if t := s.Touch; t != nil {
		if t.TTL <= 0 {
			k.fail("sessions.touch.ttl", t.TTL, "must be > 0, got %s", t.TTL)
		}
		if t.Every < 0 {
			k.fail("sessions.touch.every", t.Every, "must be >= 0, got %s", t.Every)
		}
	}
	k.sessionIndex()
}

func (k *checker) apiKeys() {
	a := k.c.APIKeys
	switch {
	case a.Prefix == "":
		k.fail("apikeys.prefix", a.Prefix, "must not be empty")
	case strings.ContainsAny(a.Prefix, "{} \t\r\n"):
		k.fail("apikeys.prefix", a.Prefix, "%q must not contain braces or whitespace", a.Prefix)
	}
	if a.TokenPrefix == "" || strings.IndexFunc(a.TokenPrefix, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_')
	}) >= 0 {
		k.fail("apikeys.token_prefix", a.TokenPrefix, "%q must be letters, digits and _ only, and not empty", a.TokenPrefix)
	}
	if len(a.Headers) == 0 {
		k.fail("apikeys.headers", a.Headers, "must name at least one header")
	}
	if a.CreditsStatus != 429 && a.CreditsStatus != 403 {
		k.fail("apikeys.credits_status", a.CreditsStatus, "must be 429 or 403, got %d", a.CreditsStatus)
	}
	for i, h := range a.Headers {
		k.headerName(fmt.Sprintf("apikeys.headers[%d]", i), h)
	}
	for _, name := range sortedKeys(a.IdentityHeaders) {
		path, field := "apikeys.identity_headers."+name, a.IdentityHeaders[name]
		k.headerName(path, name)
		if !slices.Contains(APIKeyFields, field) {
			k.fail(path, field, "%q is not a key record field: use one of %s", field, strings.Join(APIKeyFields, ", "))
		}
		if slices.Contains(a.Headers, name) {
			k.fail(path, field, "%q is where the key itself comes in (apikeys.headers)", name)
		}
	}
}

func (k *checker) limitsSection() {
	p := k.c.Limits.Prefix
	if p == "" || strings.ContainsAny(p, "{} \t\r\n") {
		k.fail("limits.prefix", p, "%q must be non-empty, without braces or whitespace", p)
	}
	if n := k.c.Limits.LocalCacheSize; n < 0 {
		k.fail("limits.local_cache_size", n, "must be >= 0 (0 turns the local cache off), got %d", n)
	}
}

func (k *checker) policies() {
	seen := map[string]bool{}
	for i, p := range k.c.Policies {
		base := fmt.Sprintf("policies[%d]", i)
		switch {
		case p.Name == "":
			k.fail(base+".name", p.Name, "must be set")
		case !validName(p.Name):
			k.fail(base+".name", p.Name, "%q: use letters, digits, '-' and '_'", p.Name)
		case seen[p.Name]:
			k.fail(base+".name", p.Name, "%q is used by an earlier policy", p.Name)
		}
		seen[p.Name] = true
		if pp := p.Match.PathPrefix; pp != "" && !strings.HasPrefix(pp, "/") {
			k.fail(base+".match.path_prefix", pp, "%q must start with /", pp)
		}
		for j, m := range p.Match.Methods {
			if !validToken(m) || strings.ToUpper(m) != m {
				k.fail(fmt.Sprintf("%s.match.methods[%d]", base, j), m, "%q is not an upper-case HTTP method", m)
			}
		}
		k.oneOf(base+".auth", p.Auth, authModes)
		switch p.Auth {
		case "session", "any":
			if !k.c.Sessions.Enabled() && p.Auth == "session" {
				k.fail(base+".auth", p.Auth, "needs sessions.secrets (or the %s environment variable)", EnvSessionSecret)
			}
		}
		for j, r := range p.Roles {
			if r == "" {
				k.fail(fmt.Sprintf("%s.roles[%d]", base, j), r, "must not be empty")
			}
		}
		for j, sc := range p.Scopes {
			if sc == "" {
				k.fail(fmt.Sprintf("%s.scopes[%d]", base, j), sc, "must not be empty")
			}
		}
		switch {
		case len(p.Scopes) == 0, p.Auth == "apikey", p.Auth == "any", p.Auth == "optional":
		case p.Auth == "session" && k.c.Sessions.Scopes != "":
		case p.Auth == "session":
			k.fail(base+".scopes", p.Scopes, "sessions carry no scopes unless sessions.scopes names the session field holding them")
		default:
			k.fail(base+".scopes", p.Scopes, "scopes need an identity: auth must be apikey, any, optional, or session with sessions.scopes set")
		}
		k.limits(base+".limits", p.Auth, p.Limits)
		for _, tier := range sortedKeys(p.Tiers) {
			if p.Auth != "apikey" && p.Auth != "any" && p.Auth != "optional" {
				k.fail(base+".tiers."+tier, p.Tiers[tier], "tiers belong to API keys: auth must be apikey, any or optional")
			}
			k.limits(base+".tiers."+tier, p.Auth, p.Tiers[tier])
		}
		k.oneOf(base+".failure.auth", p.Failure.Auth, failureModes)
		k.oneOf(base+".failure.limits", p.Failure.Limits, failureModes)
		k.oneOf(base+".mode", p.Mode, policyModes)
	}
}

func (k *checker) limits(base, auth string, ls []Limit) {
	names := map[string]bool{}
	for i, l := range ls {
		p := fmt.Sprintf("%s[%d]", base, i)
		if l.Name != "" {
			if !validName(l.Name) {
				k.fail(p+".name", l.Name, "%q: use letters, digits, '-' and '_'", l.Name)
			} else if names[l.Name] {
				k.fail(p+".name", l.Name, "%q is used twice in this list", l.Name)
			}
			names[l.Name] = true
		}
		switch {
		case l.By == "principal", l.By == "ip":
		case l.By == "apikey":
			if auth == "none" || auth == "session" {
				k.fail(p+".by", l.By, "by apikey needs auth apikey, any or optional")
			}
		case strings.HasPrefix(l.By, "header:"):
			if h := strings.TrimPrefix(l.By, "header:"); !validToken(h) || strings.ToLower(h) != h {
				k.fail(p+".by", l.By, "%q is not a lower-case HTTP header name", h)
			}
		default:
			k.fail(p+".by", l.By, "%q is not one of %s", l.By, strings.Join(limitSubjects, ", "))
		}
		if l.Requests <= 0 {
			k.fail(p+".requests", l.Requests, "must be > 0, got %d", l.Requests)
		}
		if l.Window.D() < 1e9 {
			k.fail(p+".window", l.Window, "must be at least 1s, got %s", l.Window)
		} else if l.Window.D()%1e6 != 0 {
			k.fail(p+".window", l.Window, "must be a whole number of milliseconds, got %s", l.Window)
		}
		k.oneOf(p+".algorithm", l.Algorithm, limitAlgos)
		if l.SharedPrefix != "" && l.Algorithm != "fixed" {
			k.fail(p+".shared_prefix", l.SharedPrefix, "shared_prefix shares rate-limit-redis's fixed window: algorithm must be fixed")
		}
		switch n := l.IPv6Subnet; {
		case n < 0 || n > 128:
			k.fail(p+".ipv6_subnet", n, "must be a prefix length from 1 to 128 (unset means 56; 128 keys on the exact IPv6 address), got %d", n)
		case n != 0 && l.By != "ip" && l.By != "principal":
			k.fail(p+".ipv6_subnet", n, "ipv6_subnet masks client addresses: it applies to by: ip and by: principal only, not by: %s", l.By)
		}
		if l.Burst < 0 || (l.Burst > 0 && l.Algorithm != "gcra") {
			k.fail(p+".burst", l.Burst, "burst is a gcra setting and must be >= 0")
		}
	}
}

// dottedPath checks a path into the session JSON such as passport.user.
func (k *checker) dottedPath(path, val string, required bool) {
	if val == "" {
		if required {
			k.fail(path, val, "must be set, as a dotted path into the session (e.g. passport.user)")
		}
		return
	}
	for _, seg := range strings.Split(val, ".") {
		if seg == "" {
			k.fail(path, val, "%q has an empty segment", val)
			return
		}
	}
}

// headerName checks an HTTP header name as Envoy will see it: a lower-case token, not a
// pseudo-header.
func (k *checker) headerName(path, name string) {
	if !validToken(name) || strings.ToLower(name) != name {
		k.fail(path, name, "%q is not a lower-case HTTP header name", name)
	}
}

// validToken reports whether s is an RFC 9110 token.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
