package server

import (
	"net/http"
	"net/netip"
)

// peerGuard serves h only to peers on loopback or in allow, and answers everyone else 403. It
// judges the connection's own address (r.RemoteAddr), never a header: the admin API acts on
// users' sessions, and a forwarded-for header is whatever the client wrote. A peer whose
// address cannot be read is refused.
func peerGuard(allow []netip.Prefix, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !peerAllowed(r.RemoteAddr, allow) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"the admin API answers loopback peers and admin.api_allow only"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// peerAllowed reports whether the peer address (host:port) is loopback or in allow. IPv4
// addresses mapped into IPv6 are judged as IPv4.
func peerAllowed(remote string, allow []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	if a.IsLoopback() {
		return true
	}
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
