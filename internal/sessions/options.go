package sessions

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Defaults, the same as express-session's and connect-redis's.
const (
	DefaultCookieName = "connect.sid"
	DefaultPrefix     = "sess:"
	// DefaultTouchEvery applies when TouchTTL is set and TouchEvery is not.
	DefaultTouchEvery = time.Minute
)

// Options configures session resolution.
type Options struct {
	// CookieName is the session cookie's name, DefaultCookieName when empty. It must be an
	// HTTP token, as the cookie package requires when it sets the cookie.
	CookieName string
	// Prefix is prepended to the sid to form the Redis key, DefaultPrefix when empty. An
	// empty prefix, which connect-redis allows, cannot be configured.
	Prefix string
	// Secrets verify cookie signatures, tried in order; the first is the one express-session
	// signs with. At least one is required and none may be empty.
	Secrets []string
	// Subject is the dotted path of the principal in the session JSON, such as "userId" or
	// "passport.user". It is required.
	Subject string
	// Headers maps upstream header names to dotted paths. New lower-cases the names and
	// rejects two that differ only in case.
	Headers map[string]string
	// Roles is the dotted path of a role string or a list of role strings; "" for none.
	Roles string
	// Scopes is the dotted path of a scope string or a list of scope strings, read as Roles
	// is; "" for none (sessions then carry no scopes).
	Scopes string
	// TouchTTL enables touching when positive: it is the TTL set when the session has no
	// positive cookie.originalMaxAge (connect-redis's ttl option, 86400s by default there).
	// Redis TTLs are whole seconds, so it is rounded up and must be at least a second.
	// Leave it zero when the app runs connect-redis with disableTTL or disableTouch (its
	// keys have no TTL, or it never renews them, and an EXPIRE would change that) or with a
	// ttl function (the sidecar cannot compute the same TTLs).
	TouchTTL time.Duration
	// TouchEvery is the least time between two EXPIREs of one session by this process,
	// DefaultTouchEvery when zero. Keep it well under the sessions' lifetime.
	TouchEvery time.Duration
	// Cache, when set, reads sessions through the Redis client's cache; see CacheOptions.
	Cache *CacheOptions
	// Recorder, when set, keeps the session index: Store.Seen hands it the sessions the
	// caller used. Its Run must be running for anything to be written.
	Recorder *Recorder
}

// String describes the options with the secrets left out, so that logging them is safe.
func (o Options) String() string {
	return fmt.Sprintf("sessions.Options{CookieName:%q Prefix:%q Secrets:[%d redacted] Subject:%q Headers:%v Roles:%q Scopes:%q TouchTTL:%v TouchEvery:%v}",
		o.CookieName, o.Prefix, len(o.Secrets), o.Subject, o.Headers, o.Roles, o.Scopes, o.TouchTTL, o.TouchEvery)
}

// GoString is String, so that %#v does not print the secrets either.
func (o Options) GoString() string { return o.String() }

// headerPath is one configured upstream header, its path already split.
type headerPath struct {
	name string
	path []string
}

// config is Options validated, with defaults applied and paths parsed.
type config struct {
	cookieName string
	prefix     string
	verifiers  []*verifier // one per secret, in order
	subject    []string
	roles      []string // nil when Roles is ""
	scopes     []string // nil when Scopes is ""
	headers    []headerPath
	touchTTL   time.Duration // 0 when touching is off
	touchEvery time.Duration
}

// validate checks every field and reports all problems at once. It never quotes a secret.
func (o Options) validate() (config, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("sessions: options: %s: "+format, append([]any{field}, args...)...))
	}
	c := config{cookieName: o.CookieName, prefix: o.Prefix}
	if c.cookieName == "" {
		c.cookieName = DefaultCookieName
	}
	if !isToken(c.cookieName) {
		bad("CookieName", "%q is not an HTTP token", c.cookieName)
	}
	if c.prefix == "" {
		c.prefix = DefaultPrefix
	}
	if len(o.Secrets) == 0 {
		bad("Secrets", "at least one secret is required")
	}
	for i, s := range o.Secrets {
		if s == "" {
			bad(fmt.Sprintf("Secrets[%d]", i), "empty")
			continue
		}
		c.verifiers = append(c.verifiers, newVerifier([]byte(s)))
	}
	if o.Subject == "" {
		bad("Subject", "required")
	} else if c.subject = splitPath(o.Subject); c.subject == nil {
		bad("Subject", "%q has an empty key", o.Subject)
	}
	if o.Roles != "" {
		if c.roles = splitPath(o.Roles); c.roles == nil {
			bad("Roles", "%q has an empty key", o.Roles)
		}
	}
	if o.Scopes != "" {
		if c.scopes = splitPath(o.Scopes); c.scopes == nil {
			bad("Scopes", "%q has an empty key", o.Scopes)
		}
	}
	// Names are visited in order so that problems are reported in the same order every time.
	names := make([]string, 0, len(o.Headers))
	for name := range o.Headers {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		path := o.Headers[name]
		field := fmt.Sprintf("Headers[%q]", name)
		lower := strings.ToLower(name)
		switch {
		case !isToken(name):
			bad(field, "not an HTTP header name")
		case seen[lower]:
			bad(field, "given twice, in different cases")
		}
		seen[lower] = true
		keys := splitPath(path)
		if keys == nil {
			bad(field, "path %q has an empty key", path)
		}
		c.headers = append(c.headers, headerPath{name: lower, path: keys})
	}
	// Sorted once here so that every Session lists its headers in the same order.
	sort.Slice(c.headers, func(i, j int) bool { return c.headers[i].name < c.headers[j].name })

	switch {
	case o.TouchTTL < 0:
		bad("TouchTTL", "negative")
	case o.TouchTTL > 0 && o.TouchTTL < time.Second:
		bad("TouchTTL", "%v is under a second, the unit of Redis TTLs", o.TouchTTL)
	case o.TouchTTL > maxTouchSeconds*time.Second:
		bad("TouchTTL", "%v is over 100 years", o.TouchTTL)
	case o.TouchTTL > 0:
		c.touchTTL = (o.TouchTTL + time.Second - 1).Truncate(time.Second)
	}
	if o.Cache != nil && o.Cache.TTL <= 0 {
		bad("Cache.TTL", "%v is not positive", o.Cache.TTL)
	}
	switch {
	case o.TouchEvery < 0:
		bad("TouchEvery", "negative")
	case o.TouchEvery == 0:
		c.touchEvery = DefaultTouchEvery
	default:
		c.touchEvery = o.TouchEvery
	}
	return c, errors.Join(errs...)
}

// isToken reports whether s is an RFC 9110 token, the syntax of cookie and header names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
