package policy

import "strings"

// ByName returns the policy called name.
func (s *Set) ByName(name string) (*Policy, bool) {
	p, ok := s.byName[name]
	return p, ok
}

// Match returns the first policy whose match block fits the request, or nil. path and host
// are canonical (internal/canon): path has no query, no dot segments and no empty segments;
// host is lower-case without port or trailing dot.
func (s *Set) Match(method, host, path string) *Policy {
	for _, p := range s.Policies {
		if p.Matches(method, host, path) {
			return p
		}
	}
	return nil
}

// Matches reports whether p's match block fits a canonical request.
func (p *Policy) Matches(method, host, path string) bool {
	if !p.matchesPath(path) {
		return false
	}
	if p.Host != "" && p.Host != host {
		return false
	}
	if len(p.Methods) > 0 {
		for _, m := range p.Methods {
			if m == method {
				return true
			}
		}
		return false
	}
	return true
}

// matchesPath matches a prefix the way routers mount one: "/admin" (and "/admin/", the same
// prefix) covers "/admin" itself and everything below "/admin/", never "/administrator".
// Express serves "/admin/" and "/admin" from the same non-strict route, so both must fall
// under the policy written for either.
func (p *Policy) matchesPath(path string) bool {
	pre := p.Prefix
	if pre == "" {
		return true
	}
	if len(path) < len(pre) || !p.equal(path[:len(pre)], pre) {
		return false
	}
	return len(path) == len(pre) || path[len(pre)] == '/'
}

func (p *Policy) equal(a, b string) bool {
	if p.CaseSensitive {
		return a == b
	}
	return strings.EqualFold(a, b)
}
