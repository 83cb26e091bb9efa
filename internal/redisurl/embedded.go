package redisurl

import (
	"fmt"
	"net"
	"net/netip"
)

// DefaultEmbeddedAddr is where the embedded in-memory store listens when redis.embedded_addr is
// not set: a free loopback port picked by each process, so that two sidecars (or a sidecar and
// a test) never fight over one. Nothing outside the process can know that port.
const DefaultEmbeddedAddr = "127.0.0.1:0"

// ParseEmbeddedAddr checks redis.embedded_addr: an IP literal on the loopback interface
// (127.0.0.0/8 or ::1, IPv6 in brackets) and a port, 0 meaning a free one. The embedded store
// has no password, so anything that can connect to it can read every session and key record
// and change every counter: it must never listen where another host can reach it. A host name
// is refused too, even "localhost", because what it resolves to is not up to this check.
// Config validation and the store itself both call it.
func ParseEmbeddedAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		if host, _, splitErr := net.SplitHostPort(s); splitErr == nil && host != "" {
			if _, ipErr := netip.ParseAddr(host); ipErr != nil {
				return netip.AddrPort{}, fmt.Errorf("%q: the host must be a loopback IP address such as 127.0.0.1 or [::1], not a name", s)
			}
		}
		return netip.AddrPort{}, fmt.Errorf("%q is not a loopback IP:port such as 127.0.0.1:9004 ([::1]:9004 for IPv6; port 0 picks a free one)", s)
	}
	if ap.Addr().Zone() != "" || !ap.Addr().Unmap().IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("%q is not a loopback address (127.0.0.0/8 or [::1]): the embedded store has no password, so it must not be reachable from other hosts", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}
