package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The defaults of how requests are read.
const (
	// DefaultClientIPHeader is read from trusted proxies only.
	DefaultClientIPHeader = "x-forwarded-for"
	// DefaultMaxHeaders caps the headers of one request: Envoy's own default
	// (max_headers_count) is 100, so a request with more never came through a default Envoy.
	DefaultMaxHeaders = 256
	// DefaultMaxTargetLength caps the request target, as nginx's 8 KiB header buffers do.
	DefaultMaxTargetLength = 8192
)

var (
	clientIPHeaders = []string{"x-forwarded-for", "x-real-ip"}
	// TargetClasses are the request-target spellings denied by default that request.allow may
	// let through; internal/canon defines what each means.
	TargetClasses = []string{"encoded_slash", "encoded_dot", "encoded_percent", "semicolon", "empty_segments", "non_ascii", "method_override"}
)

// Request says how strictly requests are read, on every transport alike.
type Request struct {
	// Allow lists request-target spellings that are refused (400) by default and that this
	// deployment's apps need, such as encoded_slash for an app with %2F in its ids.
	Allow []string `yaml:"allow"`
	// MaxHeaders caps the headers of one request (repeats count); past it the answer is 400.
	MaxHeaders int `yaml:"max_headers"`
	// MaxTargetLength caps the request target in bytes; past it the answer is 400.
	MaxTargetLength int `yaml:"max_target_length"`
}

// ParsedTrustedProxies returns trusted_proxies as prefixes; a bare address is a /32 or /128.
// Validate has checked them, so errors only come from an unvalidated Config.
func (c *Config) ParsedTrustedProxies() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		p, err := parseCIDR(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or a CIDR such as 10.0.0.0/8", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (k *checker) request() {
	for i, s := range k.c.TrustedProxies {
		if _, err := parseCIDR(s); err != nil {
			k.fail(fmt.Sprintf("trusted_proxies[%d]", i), s, "%v", err)
		}
	}
	k.oneOf("client_ip_header", k.c.ClientIPHeader, clientIPHeaders)
	r := k.c.Request
	for i, a := range r.Allow {
		if !slices.Contains(TargetClasses, a) {
			k.fail(fmt.Sprintf("request.allow[%d]", i), a, "%q is not one of %s", a, strings.Join(TargetClasses, ", "))
		}
	}
	if r.MaxHeaders < 1 || r.MaxHeaders > 100000 {
		k.fail("request.max_headers", r.MaxHeaders, "must be from 1 to 100000, got %d", r.MaxHeaders)
	}
	if r.MaxTargetLength < 64 || r.MaxTargetLength > 1<<20 {
		k.fail("request.max_target_length", r.MaxTargetLength, "must be from 64 to 1048576, got %d", r.MaxTargetLength)
	}
}
