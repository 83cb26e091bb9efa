package authz

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/extauthz/extauthz/internal/canon"
)

// HTTP authorization endpoints, one per kind of proxy. They share the Engine with Check.
const (
	// PathEnvoy serves Envoy's ext_authz http_service: Envoy calls path_prefix + the original
	// path with the original method; only 200 allows, 5xx is an error, anything else a denial.
	PathEnvoy = "/envoy"
	// PathNginx serves nginx auth_request: the original request comes in X-Original-Method,
	// X-Original-URI ($request_uri) and X-Original-Host. nginx only understands 2xx, 401 and
	// 403, so other denials are answered as 403 with X-Extauthz-Status carrying the real code
	// for the nginx config to map (see `extauthz config nginx`). /nginx/<policy> names the
	// policy instead of matching the route.
	PathNginx = "/nginx"
	// PathForward serves Caddy and Traefik forward_auth: X-Forwarded-Method, -Uri and -Host; a
	// denial goes to the client verbatim. /forward/<policy> names the policy.
	PathForward = "/forward"

	// StatusHeader carries the real decision status on every answer.
	StatusHeader = "X-Extauthz-Status"
	// KeyHeaderHeader names, on an allowed answer, the header an API key came in when the key
	// must not reach the upstream (apikeys.keep_header false): nginx and Caddy strip it.
	KeyHeaderHeader = "X-Extauthz-Key-Header"
	// WouldDenyHeader carries, on an answer a shadow policy allowed, the reason enforcing it
	// would have denied the request, for the proxy's access log (nginx:
	// $upstream_http_x_extauthz_would_deny via auth_request_set).
	WouldDenyHeader = "X-Extauthz-Would-Deny"
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

// endpoint splits the raw request URI of an authorization call into its endpoint ("envoy",
// "nginx" or "forward"), the policy named in the path and, for /envoy, the original target.
// It reads the raw bytes, never the decoded URL, and ignores the call's own query string:
// Caddy's forward_auth passes the client's query through, so nothing in it may choose.
func endpoint(requestURI string) (mode, policy, target string, ok bool) {
	if rest, found := strings.CutPrefix(requestURI, PathEnvoy); found && (rest == "" || rest[0] == '/' || rest[0] == '?') {
		if rest == "" || rest[0] == '?' {
			rest = "/" + rest
		}
		return "envoy", "", rest, true
	}
	path, _, _ := strings.Cut(requestURI, "?")
	for _, m := range [...]struct{ prefix, mode string }{{PathNginx, "nginx"}, {PathForward, "forward"}} {
		rest, found := strings.CutPrefix(path, m.prefix)
		switch {
		case !found:
		case rest == "":
			return m.mode, "", "", true
		case rest[0] == '/' && len(rest) > 1:
			return m.mode, rest[1:], "", true
		}
	}
	return "", "", "", false
}

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode, policyName, target, ok := endpoint(r.RequestURI)
	if !ok {
		writeJSON(w, http.StatusNotFound, "unknown authorization endpoint: use "+PathEnvoy+"/..., "+PathNginx+"[/<policy>] or "+PathForward+"[/<policy>]")
		return
	}
	raw := Raw{Method: r.Method, Target: target, Host: r.Host, Peer: PeerAddr(r.RemoteAddr), Policy: policyName}
	var missing string
	switch mode {
	case "nginx":
		raw.Method = headerOr(r, "X-Original-Method", r.Method)
		raw.Host = headerOr(r, "X-Original-Host", r.Host)
		raw.Target = r.Header.Get("X-Original-Uri")
		missing = "X-Original-URI"
	case "forward":
		raw.Method = headerOr(r, "X-Forwarded-Method", r.Method)
		raw.Host = headerOr(r, "X-Forwarded-Host", r.Host)
		raw.Target = r.Header.Get("X-Forwarded-Uri")
		missing = "X-Forwarded-Uri"
	}
	raw.Headers, raw.HeaderCount = flatHeaders(r.Header)

	var d Decision
	if raw.Target == "" {
		d = h.engine.Refuse(&canon.Error{Reason: "no_target", Detail: "the proxy sent no " + missing + " header"})
	} else {
		d = h.engine.DecideRaw(r.Context(), raw)
	}

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
		if d.KeyHeader != "" && mode != "envoy" {
			out.Set(KeyHeaderHeader, d.KeyHeader)
		}
		if d.WouldDeny != "" {
			out.Set(WouldDenyHeader, d.WouldDeny)
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

// flatHeaders lower-cases names and joins repeats the way Envoy does (cookies with "; "), and
// counts the header lines.
func flatHeaders(h http.Header) (map[string]string, int) {
	out := make(map[string]string, len(h))
	n := 0
	for k, vs := range h {
		n += len(vs)
		name := strings.ToLower(k)
		if len(vs) == 1 {
			out[name] = vs[0]
			continue
		}
		out[name] = strings.Join(vs, headerSep(name))
	}
	return out, n
}
