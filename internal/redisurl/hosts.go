package redisurl

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// parseHosts reads a comma-separated host list ("h1:6379,[::1],h3") into host:port pairs,
// giving defaultPort to a host without one. Messages point at a host by its position, never
// by its text: in a URL mangled enough to reach here without its '@', the text may be a
// password.
func parseHosts(s string, defaultPort int) ([]string, error) {
	if s == "" {
		return nil, fail("host", "has no host")
	}
	list := strings.Split(s, ",")
	addrs := make([]string, 0, len(list))
	for i, h := range list {
		// at names the host in messages when there are several.
		at := ""
		if len(list) > 1 {
			at = fmt.Sprintf(" (host %d of %d)", i+1, len(list))
		}
		if h == "" {
			return nil, fail("host", "has an empty entry in its host list"+at+": separate hosts with one comma")
		}
		addr, err := parseHost(h, defaultPort, at)
		if err != nil {
			return nil, err
		}
		for j, prev := range addrs {
			if strings.EqualFold(prev, addr) {
				return nil, fail("host", fmt.Sprintf("names the same address twice (hosts %d and %d of %d)", j+1, i+1, len(list)))
			}
		}
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

// parseHost reads one "host", "host:port", "[ipv6]" or "[ipv6]:port"; at says which host it
// is for messages.
func parseHost(h string, defaultPort int, at string) (string, error) {
	var host, port string
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fail("host", "has an IPv6 address without its closing ']'"+at)
		}
		rest := h[end+1:]
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return "", fail("host", "has text after an IPv6 address's ']' that is not a :port"+at)
		}
		var err error
		if host, err = parseIPv6(h[1:end], at); err != nil {
			return "", err
		}
		port = strings.TrimPrefix(rest, ":")
	} else {
		if strings.Count(h, ":") > 1 {
			return "", fail("host", "has an IPv6 address without brackets"+at+": write [::1]:6379")
		}
		host, port, _ = strings.Cut(h, ":")
		if host == "" {
			return "", fail("host", "has no host"+at+", only a port")
		}
		for _, c := range []byte(host) {
			if !isAlnum(c) && c != '-' && c != '.' && c != '_' {
				return "", fail("host", "has a host name with a character other than letters, digits, '-', '.' and '_'"+at)
			}
		}
	}
	// An empty port ("host:") means the default, as in net/url.
	n := defaultPort
	if port != "" {
		for _, c := range []byte(port) {
			if c < '0' || c > '9' {
				return "", fail("port", "has an invalid port"+at+": not a number")
			}
		}
		var err error
		if n, err = strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", fail("port", "port"+at+" is not in 1-65535")
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

// parseIPv6 reads what sits between the brackets: an IPv6 address, with a zone written as
// %25zone (RFC 6874), which becomes "addr%zone" as net.Dial reads it.
func parseIPv6(s, at string) (string, error) {
	addr, zone, hasZone := strings.Cut(s, "%25")
	if ip := net.ParseIP(addr); ip == nil || !strings.Contains(addr, ":") {
		return "", fail("host", "has brackets around something that is not an IPv6 address"+at)
	}
	if !hasZone {
		return addr, nil
	}
	if zone == "" {
		return "", fail("host", "has an empty IPv6 zone"+at)
	}
	for _, c := range []byte(zone) {
		if !isAlnum(c) && c != '-' && c != '.' && c != '_' {
			return "", fail("host", "has an IPv6 zone with a character other than letters, digits, '-', '.' and '_'"+at)
		}
	}
	return addr + "%" + zone, nil
}
