package server

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestPeerGuard(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/64")}
	h := peerGuard(allow, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	for _, tt := range []struct {
		name, remote string
		forwarded    string
		want         int
		// local is the address the connection reached; "" means the loopback 127.0.0.1:9003.
		local string
	}{
		{"loopback v4", "127.0.0.1:5000", "", 200, ""},
		{"loopback v6 to ::1", "[::1]:5000", "", 200, "[::1]:9003"},
		// A mesh's inbound sidecar (Istio) hands another pod's connection to the pod address
		// from 127.0.0.6: a loopback source that is not the app in this pod.
		{"mesh passthrough: loopback source to the pod address", "127.0.0.6:5000", "", 403, "10.2.0.5:9003"},
		{"loopback source to the pod address", "127.0.0.1:5000", "", 403, "10.2.0.5:9003"},
		{"allowed cidr to the pod address", "10.1.200.3:5000", "", 200, "10.2.0.5:9003"},
		{"no local address", "127.0.0.1:5000", "", 403, "none"},
		{"loopback elsewhere in 127/8", "127.3.2.1:5000", "", 200, ""},
		{"loopback v6", "[::1]:5000", "", 200, ""},
		{"v4-mapped loopback", "[::ffff:127.0.0.1]:5000", "", 200, ""},
		{"allowed cidr", "10.1.200.3:5000", "", 200, ""},
		{"allowed v6 cidr", "[fd00::42]:5000", "", 200, ""},
		{"v4-mapped allowed", "[::ffff:10.1.0.9]:5000", "", 200, ""},
		{"pod network", "10.2.0.1:5000", "", 403, ""},
		{"public", "203.0.113.9:5000", "", 403, ""},
		{"headers do not count", "203.0.113.9:5000", "127.0.0.1", 403, ""},
		{"unreadable peer", "@", "", 403, ""},
		{"no port", "127.0.0.1", "", 403, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/sessions?user=a", nil)
			r.RemoteAddr = tt.remote
			switch tt.local {
			case "":
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:9003"))))
			case "none":
			default:
				r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tt.local))))
			}
			if tt.forwarded != "" {
				r.Header.Set("X-Forwarded-For", tt.forwarded)
				r.Header.Set("X-Real-IP", tt.forwarded)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("%s: %d %s, want %d", tt.remote, w.Code, w.Body, tt.want)
			}
			if tt.want == 403 && (!strings.Contains(w.Body.String(), `"error"`) || w.Header().Get("Content-Type") != "application/json") {
				t.Errorf("403 body %q, type %q: want a JSON error", w.Body, w.Header().Get("Content-Type"))
			}
		})
	}
}

// TestAdminAPIMounted: the admin listener serves Options.AdminAPI under /v1/ to a loopback
// peer, and has no /v1/ without it.
func TestAdminAPIMounted(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "api "+r.URL.Path)
	})
	s := start(t, Options{AdminAPI: api})
	if code, body := get(t, "http://"+s.AdminAddr().String()+"/v1/sessions"); code != 200 || body != "api /v1/sessions" {
		t.Errorf("/v1/sessions = %d %q", code, body)
	}
	if code, _ := get(t, "http://"+s.AdminAddr().String()+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	bare := start(t, Options{})
	if code, _ := get(t, "http://"+bare.AdminAddr().String()+"/v1/sessions"); code != 404 {
		t.Errorf("/v1/sessions without an AdminAPI = %d, want 404", code)
	}
}
