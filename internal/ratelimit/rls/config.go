// Package rls implements an envoyproxy/ratelimit-compatible rate limit service: it reads the
// reference service's config directories, matches request descriptors to limits exactly as the
// reference does, and answers envoy.service.ratelimit.v3.RateLimitService with fixed windows.
package rls

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// File is one config file's name and content.
type File struct {
	// Name is what errors call the file, usually its base name in the config directory.
	Name string
	// Data is the file's YAML.
	Data []byte
}

// Error is one problem in a config file. Parse and LoadDir report every problem they find at
// once, joined with errors.Join, so that one reload shows the operator the whole list.
type Error struct {
	// File is the File.Name the problem is in.
	File string
	// Line is the 1-based line of the offending YAML node, or 0 when the YAML library gave none.
	Line int
	// Path is the field path, e.g. "descriptors[1].rate_limit.unit", or "" for the whole file.
	Path string
	// Msg says what is wrong, in lower case.
	Msg string
}

// Error formats the problem as file:line: path: msg, leaving out what is unknown.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// RateLimit is a limit found in config (or built from a request-side override). Match returns
// pointers shared by every caller, so a RateLimit must never be modified.
type RateLimit struct {
	// RequestsPerUnit is the number of hits a window allows; 0 puts every request over the limit.
	RequestsPerUnit uint32
	// Unit is the window's unit, SECOND..YEAR; UNKNOWN when Unlimited.
	Unit rlsv3.RateLimitResponse_RateLimit_Unit
	// Window is the window length in seconds, as UnitWindow gives it; 0 when Unlimited.
	Window int64
	// Unlimited limits are never counted and always allow.
	Unlimited bool
	// Name is the limit's name that other limits' Replaces refer to.
	Name string
	// Replaces lists the names of limits this one drops when both match one request.
	Replaces []string
	// ShadowMode limits are counted but never deny.
	ShadowMode bool
	// DetailedMetric is the config's detailed_metric flag, kept for the service to use.
	DetailedMetric bool
	// Rule is the config path of the rule, e.g. "mongo_cps.database_users". It is bounded by
	// the config's size and so fit for a metric label: it never holds a request value that the
	// config itself does not spell out.
	Rule string
}

// UnitWindow returns the window length in seconds of u. A month is 30 days and a year 365,
// as in the reference service. It is false for UNKNOWN and for values outside the enum.
func UnitWindow(u rlsv3.RateLimitResponse_RateLimit_Unit) (int64, bool) {
	switch u {
	case rlsv3.RateLimitResponse_RateLimit_SECOND:
		return 1, true
	case rlsv3.RateLimitResponse_RateLimit_MINUTE:
		return 60, true
	case rlsv3.RateLimitResponse_RateLimit_HOUR:
		return 3600, true
	case rlsv3.RateLimitResponse_RateLimit_DAY:
		return 86400, true
	case rlsv3.RateLimitResponse_RateLimit_WEEK:
		return 7 * 86400, true
	case rlsv3.RateLimitResponse_RateLimit_MONTH:
		return 30 * 86400, true
	case rlsv3.RateLimitResponse_RateLimit_YEAR:
		return 365 * 86400, true
	}
	return 0, false
}

// parseUnit reads a config unit the way the reference does: upper-cased and looked up in the
// protobuf enum, so exactly the spellings it accepts are accepted here.
func parseUnit(s string) (rlsv3.RateLimitResponse_RateLimit_Unit, bool) {
	v, ok := rlsv3.RateLimitResponse_RateLimit_Unit_value[strings.ToUpper(s)]
	if !ok || v == int32(rlsv3.RateLimitResponse_RateLimit_UNKNOWN) {
		return rlsv3.RateLimitResponse_RateLimit_UNKNOWN, false
	}
	return rlsv3.RateLimitResponse_RateLimit_Unit(v), true
}

// Config is an immutable snapshot of all domains; it is safe for concurrent Match calls. A nil
// *Config has no domains.
type Config struct {
	// domains maps each domain to its top-level descriptors; the value is nil for a domain
	// whose file has no descriptors, which is known but limits nothing.
	domains map[string]*level
	names   []string
	rules   int
}

// Parse validates files and builds a Config from them, one domain per file. It reports every
// problem it finds, as *Error values joined with errors.Join, and then returns no Config: a
// half-valid config is never served. No files give a valid, empty Config.
func Parse(files []File) (*Config, error) {
	c := &Config{domains: make(map[string]*level)}
	var errs []error
	firstFile := make(map[string]string)
	for _, f := range files {
		p := fileParser{file: f.Name}
		domain, domainLine, root := p.parse(f.Data)
		errs = append(errs, p.errs...)
		if domain == "" {
			continue
		}
		// The reference rejects a domain found in two files unless told to merge them; we
		// never merge, because merged files would make one file's meaning depend on another.
		if prev, ok := firstFile[domain]; ok {
			errs = append(errs, &Error{
				File: f.Name, Line: domainLine, Path: "domain",
				Msg: fmt.Sprintf("duplicate domain %q (already in %s)", domain, prev),
			})
			continue
		}
		firstFile[domain] = f.Name
		c.domains[domain] = root
		c.rules += p.rules
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c.names = make([]string, 0, len(c.domains))
	for d := range c.domains {
		c.names = append(c.names, d)
	}
	sort.Strings(c.names)
	return c, nil
}

// HasDomain reports whether a config file declares domain.
func (c *Config) HasDomain(domain string) bool {
	if c == nil {
		return false
	}
	_, ok := c.domains[domain]
	return ok
}

// Domains returns the declared domains, sorted. The slice is the caller's to keep.
func (c *Config) Domains() []string {
	if c == nil {
		return nil
	}
	return slices.Clone(c.names)
}

// NumRules returns the number of descriptors that carry a rate_limit, unlimited ones included.
func (c *Config) NumRules() int {
	if c == nil {
		return 0
	}
	return c.rules
}
