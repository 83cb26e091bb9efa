package server

import (
	"net"
	"net/http"
	"net/netip"
)

// peerGuard serves h only to peers on loopback or in allow, and answers everyone else 403. It
// judges the connection's own addresses (r.RemoteAddr and the local address the connection
// reached), never a header: the admin API acts on users' sessions, and a forwarded-for header
// is whatever the client wrote. A peer whose address cannot be read is refused.
func peerGuard(allow []netip.Prefix, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !peerAllowed(r.RemoteAddr, local, allow) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"error":"the admin API answers loopback peers and admin.api_allow only"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// peerAllowed reports whether a connection from remote (host:port) to local may use the admin
// API: a peer in allow, or a loopback peer that connected to a loopback address. IPv4
// addresses mapped into IPv6 are judged as IPv4.
//
// A loopback source alone is not enough. A service mesh's inbound sidecar (Istio since 1.10)
// hands connections from other pods to the pod's own address with the source rewritten to
// 127.0.0.6, so on a listener bound to every interface (the Kubernetes manifests bind the admin
// port so that the kubelet can probe it) a loopback peer may be anyone in the mesh. The app in
// the same pod connects to 127.0.0.1 (or ::1): both ends are loopback.
func peerAllowed(remote string, local net.Addr, allow []netip.Prefix) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range allow {
		if p.Contains(a) {
			return true
		}
	}
	if !a.IsLoopback() {
		return false
	}
	ta, ok := local.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
