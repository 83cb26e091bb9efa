package policy

import (
	"fmt"
	"strings"
)

// WhyNot says why p's match block does not fit a canonical request: "" when it fits,
// otherwise the first part that does not, in words (path, then host, then method), for
// `extauthz explain`. It reads the request exactly as Matches does.
func (p *Policy) WhyNot(method, host, path string) string {
	switch {
	case !p.matchesPath(path):
		return fmt.Sprintf("path %s is not %s", path, p.PathText())
	case p.Host != "" && p.Host != host:
		return fmt.Sprintf("host %s is not %s", host, p.Host)
	case !p.Matches(method, host, path):
		return fmt.Sprintf("method %s is not one of %s", method, strings.Join(p.Methods, ", "))
	}
	return ""
}

// Why says in words what p's match block asks for, for `extauthz explain`.
func (p *Policy) Why() string {
	parts := []string{p.PathText()}
	if p.Host != "" {
		parts = append(parts, "host "+p.Host)
	} else {
		parts = append(parts, "any host")
	}
	if len(p.Methods) > 0 {
		parts = append(parts, "methods "+strings.Join(p.Methods, ", "))
	} else {
		parts = append(parts, "any method")
	}
	return strings.Join(parts, ", ")
}

// PathText describes p's path_prefix as it matches: every path, or the prefix itself and
// everything below it.
func (p *Policy) PathText() string {
	if p.Prefix == "" {
		return "any path"
	}
	cs := ""
	if p.CaseSensitive {
		cs = ", case-sensitive"
	}
	return fmt.Sprintf("under %s (%s itself or %s/...%s)", p.Prefix, p.Prefix, p.Prefix, cs)
}
