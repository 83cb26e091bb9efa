// Package policy compiles the ext_authz sections of the configuration (policies, sessions and
// API key header mappings, trusted proxies, request bounds) into one immutable Set that the
// decision engine reads. `config validate`, start-up and reload all build the Set through
// Compile, so whatever validates also runs.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/canon"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Auth modes of a policy.
const (
	AuthNone    = "none"
	AuthSession = "session"
	AuthAPIKey  = "apikey"
	AuthAny     = "any"
	// AuthOptional identifies the caller by a valid API key or session when it presents one
	// and lets it through as anonymous otherwise; identity headers are set or removed.
	AuthOptional = "optional"
)

// Set is every compiled policy with the settings decisions need. It is never changed after
// Compile: a reload compiles a new Set and swaps it whole.
type Set struct {
	// Policies are in configuration order; the first that matches decides.
	Policies []*Policy
	byName   map[string]*Policy

	// LimitPrefix starts every policy limit key.
	LimitPrefix string
	// APIKeyHeaders are the headers an API key may come in, in order.
	APIKeyHeaders []string
	// KeepKeyHeader forwards the key's header upstream.
	KeepKeyHeader bool
	// CreditsStatus is the status of a request whose key is out of credits: 429 or 403.
	CreditsStatus int
	// StripCookie removes the session cookie upstream.
	StripCookie bool
	// IdentityHeaders are every header the session and API key mappings can set, sorted.
	IdentityHeaders []string
	// KeyHeaders map API key record fields to upstream headers, sorted by header.
	KeyHeaders []KeyHeader
	// SessionScopes is true when sessions.scopes is set: a policy's scopes then apply to
	// sessions too. Otherwise sessions carry no scopes and pass scopes requirements.
	SessionScopes bool

	// TrustedProxies are the peers whose ClientIPHeader is believed.
	TrustedProxies []netip.Prefix
	// ClientIPHeader is x-forwarded-for or x-real-ip.
	ClientIPHeader string
	// Target says which request-target spellings are let through and how long one may be.
	Target canon.Options
	// MaxHeaders caps the headers of one request.
	MaxHeaders int
}

// KeyHeader is one apikeys.identity_headers entry.
type KeyHeader struct{ Name, Field string }

// Policy is one compiled route policy.
type Policy struct {
	Name string
	// Prefix is path_prefix without its trailing slash ("" matches every path): it matches
	// the path itself and everything below it, as a router mounts a prefix.
	Prefix        string
	CaseSensitive bool
	Methods       []string
	// Host is lower-case, without a trailing dot; "" matches every host.
	Host       string
	Auth       string
	Roles      []string
	Scopes     []string
	Limits     []Limit
	Tiers      map[string][]Limit
	AuthOpen   bool // failure.auth == open
	LimitsOpen bool // failure.limits == open
	// Shadow is mode: shadow: the policy decides and counts as enforced, and every request it
	// would deny is let through (internal/authz's shadow.go).
	Shadow bool
}

// Limit is one compiled limit.
type Limit struct {
	Name string
	// By is principal, ip, apikey or header.
	By string
	// Header is the header counted by `by: header:NAME`.
	Header string
	Value  ratelimit.Limit
	// Shared is rate-limit-redis's key prefix when the counter is shared with Express apps.
	Shared string
	// IPv6Subnet is the prefix length IPv6 client addresses are masked to (ClientKey), 1..128.
	IPv6Subnet int
}

// DefaultIPv6Subnet is ipv6_subnet when a limit leaves it out: 56, express-rate-limit 8's
// default. An ISP hands a customer a /56 (or a /48 or /64), and every address in it is the same
// client's to pick, so counting per address lets one client multiply its limit by 2^72.
const DefaultIPv6Subnet = 56

// ClientKey is what l counts a client address as: an IPv4 address (also written IPv4-mapped,
// ::ffff:a.b.c.d, as a dual-stack socket reports it) unchanged, an IPv6 address masked to its
// /IPv6Subnet network in CIDR form ("2001:db8:1200::/56", what express-rate-limit 8's
// ipKeyGenerator gives, so a shared_prefix key still meets the Express app's), or the exact
// address at /128. A string that is not an address is returned as it is: it is still a
// distinct client, and the limit must not stop counting it.
func (l Limit) ClientKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	a = a.Unmap().WithZone("")
	bits := l.IPv6Subnet
	if bits == 0 {
		bits = DefaultIPv6Subnet
	}
	if a.Is4() || bits >= 128 {
		return a.String()
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// Compile validates cfg's authorization sections beyond what config.Validate can know (every
// limit's own bounds, the request-target classes) and builds the Set. cfg must have passed
// config.Validate; every problem found is returned, joined.
func Compile(cfg *config.Config) (*Set, error) {
	var errs []error
	s := &Set{
		byName:         make(map[string]*Policy, len(cfg.Policies)),
		LimitPrefix:    cfg.Limits.Prefix,
		APIKeyHeaders:  cfg.APIKeys.Headers,
		KeepKeyHeader:  cfg.APIKeys.KeepHeader,
		CreditsStatus:  cfg.APIKeys.CreditsStatus,
		StripCookie:    cfg.Sessions.StripCookie,
		SessionScopes:  cfg.Sessions.Scopes != "",
		ClientIPHeader: cfg.ClientIPHeader,
		MaxHeaders:     cfg.Request.MaxHeaders,
	}
	var err error
	if s.TrustedProxies, err = cfg.ParsedTrustedProxies(); err != nil {
		errs = append(errs, fmt.Errorf("trusted_proxies: %w", err))
	}
	allow, err := canon.ParseClasses(cfg.Request.Allow)
	if err != nil {
		errs = append(errs, fmt.Errorf("request.allow: %w", err))
	}
	s.Target = canon.Options{Allow: allow, MaxTargetLength: cfg.Request.MaxTargetLength}

	for i, p := range cfg.Policies {
		cp, perrs := compilePolicy(i, p)
		errs = append(errs, perrs...)
		s.Policies = append(s.Policies, cp)
		s.byName[cp.Name] = cp
	}
	for _, h := range sortedKeys(cfg.APIKeys.IdentityHeaders) {
		s.KeyHeaders = append(s.KeyHeaders, KeyHeader{Name: h, Field: cfg.APIKeys.IdentityHeaders[h]})
	}
	seen := map[string]bool{}
	for _, h := range append(sortedKeys(cfg.Sessions.Headers), sortedKeys(cfg.APIKeys.IdentityHeaders)...) {
		if !seen[h] {
			seen[h] = true
			s.IdentityHeaders = append(s.IdentityHeaders, h)
		}
	}
	sort.Strings(s.IdentityHeaders)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func compilePolicy(i int, p config.Policy) (*Policy, []error) {
	cp := &Policy{
		Name:          p.Name,
		Prefix:        strings.TrimSuffix(p.Match.PathPrefix, "/"),
		CaseSensitive: p.Match.CaseSensitive,
		Methods:       withHead(p.Match.Methods),
		Auth:          p.Auth,
		Roles:         p.Roles,
		Scopes:        p.Scopes,
		AuthOpen:      p.Failure.Auth == "open",
		LimitsOpen:    p.Failure.Limits == "open",
		Shadow:        p.Mode == "shadow",
	}
	var errs []error
	if p.Match.Host != "" {
		h, err := canon.Host(p.Match.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("policies[%d].match.host: %w", i, err))
		}
		cp.Host = h
	}
	base := fmt.Sprintf("policies[%d]", i)
	var lerrs []error
	cp.Limits, lerrs = compileLimits(base+".limits", p.Name, "", p.Limits)
	errs = append(errs, lerrs...)
	if len(p.Tiers) > 0 {
		cp.Tiers = make(map[string][]Limit, len(p.Tiers))
		for _, tier := range sortedKeys(p.Tiers) {
			cp.Tiers[tier], lerrs = compileLimits(base+".tiers."+tier, p.Name, tier, p.Tiers[tier])
			errs = append(errs, lerrs...)
		}
	}
	return cp, errs
}

func compileLimits(base, policyName, tier string, ls []config.Limit) ([]Limit, []error) {
	out := make([]Limit, 0, len(ls))
	var errs []error
	for i, l := range ls {
		path := fmt.Sprintf("%s[%d]", base, i)
		algo, err := ratelimit.ParseAlgorithm(l.Algorithm)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.algorithm: %w", path, err))
			continue
		}
		name := l.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", policyName, i)
			if tier != "" {
				name = fmt.Sprintf("%s-%s-%d", policyName, tier, i)
			}
		}
		cl := Limit{
			Name:       name,
			By:         l.By,
			Value:      ratelimit.Limit{Requests: l.Requests, Window: time.Duration(l.Window), Algorithm: algo, Burst: l.Burst},
			Shared:     l.SharedPrefix,
			IPv6Subnet: l.IPv6Subnet,
		}
		if cl.IPv6Subnet == 0 {
			cl.IPv6Subnet = DefaultIPv6Subnet
		}
		// The limiter's own check: a limit that passes here never fails at request time.
		if err := cl.Value.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
		if h, ok := strings.CutPrefix(l.By, "header:"); ok {
			cl.By, cl.Header = "header", h
		}
		out = append(out, cl)
	}
	return out, errs
}

// withHead adds HEAD to methods that list GET, as Express routes a HEAD request to app.get
// handlers: otherwise a HEAD request would slip past a GET-only policy into a later one.
func withHead(methods []string) []string {
	if !slices.Contains(methods, "GET") || slices.Contains(methods, "HEAD") {
		return methods
	}
	return append(slices.Clip(methods), "HEAD")
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
