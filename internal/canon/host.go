package canon

import (
	"net/netip"
	"strings"
)

// Host returns the host case-folded, without port, brackets of an IPv6 literal kept off, and one
// trailing dot removed. An empty host is returned as is. It refuses (bad_host) a byte outside
// A-Z a-z 0-9 . - _ : [ ], a port that is not digits, an empty label ("a..b", ".a", "a.."), and
// brackets or colons that do not hold an IPv6 address.
func Host(host string) (string, error) {
	if host == "" {
		return "", nil
	}
	for i := 0; i < len(host); i++ {
		if !hostByte(host[i]) {
			return "", refuse(ReasonBadHost, "a byte outside [A-Za-z0-9._:-[]] in the host")
		}
	}
	if host[0] == '[' {
		end := strings.IndexByte(host, ']')
		if end < 0 || !port(host[end+1:]) {
			return "", refuse(ReasonBadHost, "an IPv6 literal without its closing ] or with a bad port")
		}
		return ipv6(host[1:end])
	}
	if strings.ContainsAny(host, "[]") {
		return "", refuse(ReasonBadHost, "a bracket outside an IPv6 literal")
	}
	switch strings.Count(host, ":") {
	case 0:
	case 1:
		c := strings.IndexByte(host, ':')
		if !port(host[c:]) {
			return "", refuse(ReasonBadHost, "a port that is not digits")
		}
		host = host[:c]
	default:
		// Several colons and no brackets: an IPv6 address or nothing, never a port to strip.
		return ipv6(host)
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || host[0] == '.' || strings.HasSuffix(host, ".") || strings.Contains(host, "..") {
		return "", refuse(ReasonBadHost, "an empty label in the host")
	}
	return strings.ToLower(host), nil
}

// port reports whether s is empty or ":" followed by digits only (an empty port is allowed by RFC 3986).
func port(s string) bool {
	if s == "" {
		return true
	}
	if s[0] != ':' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ipv6 returns the canonical text of an IPv6 address, so that "::0001" and "::1" are one host.
func ipv6(s string) (string, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Zone() != "" {
		return "", refuse(ReasonBadHost, "not an IPv6 address")
	}
	return a.String(), nil
}

func hostByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']'
}
