package authz

import (
	"net"
	"net/http"
	"strconv"
	"strings"
)

// HTTP authorization endpoints, one per kind of proxy. They share the Engine with Check.
const (
	// PathEnvoy serves Envoy's ext_authz http_service: Envoy calls path_prefix + the original
	// path with the original method; only 200 allows, 5xx is an error, anything else a denial.
	PathEnvoy = "/envoy"
	// PathNginx serves nginx auth_request: the original request comes in X-Original-Method and
	// X-Original-URI. nginx only understands 2xx, 401 and 403, so a 429 is answered as 403 with
	// X-Extauthz-Status: 429 for the nginx config to map (see examples/nginx).
	PathNginx = "/nginx"
	// PathForward serves Caddy and Traefik forward_auth: X-Forwarded-Method, -Uri and -Host; a
	// denial goes to the client verbatim.
	PathForward = "/forward"

	// StatusHeader carries the real decision status on every answer.
	StatusHeader = "X-Extauthz-Status"
	// envoyRemoveHeader tells Envoy's http_service which upstream request headers to strip:
	// identity headers this decision does not set and the API key's header.
	envoyRemoveHeader = "X-Envoy-Auth-Headers-To-Remove"
)

// HTTPHandler serves the three endpoints.
type HTTPHandler struct {
	engine *Engine
}

// NewHTTPHandler returns the HTTP authorization handler of e.
func NewHTTPHandler(e *Engine) *HTTPHandler { return &HTTPHandler{engine: e} }

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req *Request
	mode := ""
	switch {
	case r.URL.Path == PathEnvoy || strings.HasPrefix(r.URL.Path, PathEnvoy+"/"):
		mode = "envoy"
		path := strings.TrimPrefix(r.URL.Path, PathEnvoy)
		if path == "" {
			path = "/"
		}
		req = &Request{Method: r.Method, Host: r.Host, Path: path}
	case r.URL.Path == PathNginx:
		mode = "nginx"
		req = &Request{
			Method: headerOr(r, "X-Original-Method", r.Method),
			Host:   headerOr(r, "X-Original-Host", r.Host),
			Path:   stripQuery(headerOr(r, "X-Original-Uri", "/")),
			Policy: r.URL.Query().Get("policy"),
		}
	case r.URL.Path == PathForward:
		mode = "forward"
		req = &Request{
			Method: headerOr(r, "X-Forwarded-Method", r.Method),
			Host:   headerOr(r, "X-Forwarded-Host", r.Host),
			Path:   stripQuery(headerOr(r, "X-Forwarded-Uri", "/")),
			Policy: r.URL.Query().Get("policy"),
		}
	default:
		writeJSON(w, http.StatusNotFound, "unknown authorization endpoint: use "+PathEnvoy+", "+PathNginx+" or "+PathForward)
		return
	}
	req.Headers = flatHeaders(r.Header)
	req.RemoteIP = clientIP(r)
	d := h.engine.Decide(r.Context(), req)

	out := w.Header()
	switch {
	case d.Err != nil:
		out.Set(StatusHeader, "503")
		writeJSON(w, http.StatusServiceUnavailable, "authorization backend unavailable")
	case d.Allow:
		for _, hd := range d.SetHeaders {
			out.Set(hd.Name, hd.Value)
		}
		for _, hd := range d.ResponseHeaders {
			out.Set(hd.Name, hd.Value)
		}
		if mode == "envoy" && len(d.RemoveHeaders) > 0 {
			out.Set(envoyRemoveHeader, strings.Join(d.RemoveHeaders, ","))
		}
		out.Set(StatusHeader, "200")
		w.WriteHeader(http.StatusOK)
	default:
		for _, hd := range d.ResponseHeaders {
			out.Set(hd.Name, hd.Value)
		}
		if d.Status == http.StatusUnauthorized {
			out.Set("WWW-Authenticate", `Bearer realm="extauthz"`)
		}
		out.Set(StatusHeader, strconv.Itoa(d.Status))
		code := d.Status
		if mode == "nginx" && code != http.StatusUnauthorized && code != http.StatusForbidden {
			code = http.StatusForbidden
		}
		writeJSON(w, code, d.Message)
	}
}

func writeJSON(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(errorBody(msg) + "\n"))
}

func headerOr(r *http.Request, name, def string) string {
	if v := r.Header.Get(name); v != "" {
		return v
	}
	return def
}

// flatHeaders lower-cases names and joins repeats the way Envoy does (cookies with "; ").
func flatHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		name := strings.ToLower(k)
		sep := ", "
		if name == "cookie" {
			sep = "; "
		}
		out[name] = strings.Join(vs, sep)
	}
	return out
}

// clientIP is the proxy-reported client address: X-Real-IP, else the last X-Forwarded-For
// entry (the one the proxy in front of us appended), else the peer. Only proxies talk to this
// listener, so their headers are trusted; it must not be exposed to clients directly.
func clientIP(r *http.Request) string {
	if v := strings.TrimSpace(r.Header.Get("X-Real-Ip")); v != "" {
		return v
	}
	if v := r.Header.Values("X-Forwarded-For"); len(v) > 0 {
		last := v[len(v)-1]
		if i := strings.LastIndexByte(last, ','); i >= 0 {
			last = last[i+1:]
		}
		if last = strings.TrimSpace(last); last != "" {
			return last
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
