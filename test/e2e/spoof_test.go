package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/extauthz/extauthz/internal/redistest"
)

// spoofIdentity are the headers a client must never get to the app: the session and API key
// identity headers of spoofConfig and the degraded marker.
var spoofIdentity = []string{"x-user-id", "x-user-role", "x-api-key-id", "x-api-key-owner", "x-extauthz-degraded"}

// spoofConfig has an open route, a session route, an API key route and an either-way route,
// with identities from sessions and from keys; the proxies run on loopback, which it trusts.
func spoofConfig(redisURL string) string {
	return fmt.Sprintf(`redis: {url: %s, timeout: 2s}
log: {level: warn}
trusted_proxies: [127.0.0.1/32, "::1/128"]
sessions:
  secrets: [%s]
  subject: userId
  roles: role
  headers: {x-user-id: userId, x-user-role: role}
apikeys:
  identity_headers: {x-api-key-id: id, x-api-key-owner: owner}
policies:
  - {name: open, match: {path_prefix: /open}, auth: none}
  - {name: session, match: {path_prefix: /session}, auth: session}
  - {name: key, match: {path_prefix: /key}, auth: apikey}
  - {name: any, match: {path_prefix: /any}, auth: any}
`, redisURL, proxySecret)
}

// spoofStyles are the ways a client spells its own copy of a header: once, repeated in
// different cases, and with '_' for '-' (which some frameworks read as the same header).
var spoofStyles = []struct {
	name  string
	lines func(header string) []string
	// refusedBy names the proxies that answer 400 instead (Caddy would drop a header named in
	// Connection after extauthz set it).
	refusedBy string
}{
	{name: "one copy", lines: func(h string) []string { return []string{http.CanonicalHeaderKey(h) + ": spoof-1"} }},
	{name: "repeated in three cases", lines: func(h string) []string {
		return []string{h + ": spoof-2", strings.ToUpper(h) + ": spoof-3", http.CanonicalHeaderKey(h) + ": spoof-4"}
	}},
	{name: "named in Connection", lines: func(h string) []string {
		return []string{http.CanonicalHeaderKey(h) + ": spoof-7", "Connection: keep-alive, " + h}
	}, refusedBy: "caddy"},
	{name: "underscore spellings", lines: func(h string) []string {
		return []string{strings.ReplaceAll(h, "-", "_") + ": spoof-5", strings.Replace(strings.ToUpper(h), "-", "_", 1) + ": spoof-6"}
	}},
}

// spoofRoute is one kind of route and the credentials that pass it.
type spoofRoute struct {
	name, path string
	creds      []string
	// want are identity headers the app must see, with their values (from the sidecar).
	want map[string]string
}

// TestSpoofedHeadersNeverReachTheApp sends a client's own copies of every identity header,
// and API keys, through real nginx and Caddy running the configurations `extauthz config`
// generates for spoofConfig, to an app that echoes what it received; and asks gRPC Check and
// /envoy (no Envoy binary here) what Envoy would be told to remove.
func TestSpoofedHeadersNeverReachTheApp(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", spoofConfig(r.URL()))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	upstream := echoUpstream(t)

	cookie := writeSession(t, r, "sid-alice-0123456789abcdef", proxySecret, map[string]any{"userId": "alice", "role": "user"})
	key := createAPIKey(t, r.URL(), "acme")
	routes := []spoofRoute{
		{name: "open", path: "/open/page"},
		{name: "session", path: "/session/page", creds: []string{"Cookie: connect.sid=" + cookie},
			want: map[string]string{"x-user-id": "alice", "x-user-role": "user"}},
		{name: "key in X-Api-Key", path: "/key/page", creds: []string{"X-Api-Key: " + key},
			want: map[string]string{"x-api-key-owner": "acme"}},
		{name: "key in x-API-key", path: "/key/page", creds: []string{"x-API-key: " + key},
			want: map[string]string{"x-api-key-owner": "acme"}},
		{name: "key as a bearer token", path: "/any/page", creds: []string{"Authorization: Bearer " + key},
			want: map[string]string{"x-api-key-owner": "acme"}},
	}

	starts := []struct {
		name, install string
		start         func(t *testing.T, bin, cfg string, s *sidecar, upstream string) string
	}{
		{"nginx", "apt-get install -y nginx", startGeneratedNginx},
		{"caddy", "apt-get install -y caddy", startGeneratedCaddy},
	}
	for _, p := range starts {
		t.Run(p.name, func(t *testing.T) {
			base := p.start(t, requireBinary(t, p.name, p.install), cfg, s, upstream.URL)
			// The headers that carry the original request to extauthz are the proxy's to write:
			// a client's copies naming an open route must not open a session route.
			rep := rawGet(t, base, "/session/page", []string{
				"X-Original-URI: /open/page", "X-Original-Method: GET", "X-Original-Host: open.example",
				"X-Forwarded-Uri: /open/page", "X-Forwarded-Method: GET", "X-Forwarded-Host: open.example",
			})
			if rep.status != http.StatusUnauthorized {
				t.Errorf("%s: /session/page with forged X-Original-URI / X-Forwarded-Uri: status %d, want 401: %s", p.name, rep.status, rep.body)
			}
			// A target the app could read differently from extauthz is refused with 400, also
			// through nginx, which can only pass 401 and 403 from auth_request.
			if rep := rawGet(t, base, "/open/%2e%2e/session/page", nil); rep.status != http.StatusBadRequest {
				t.Errorf("%s: /open/%%2e%%2e/session/page: status %d, want 400: %s", p.name, rep.status, rep.body)
			}
			for _, rt := range routes {
				for _, h := range spoofIdentity {
					for _, st := range spoofStyles {
						lines := append(append([]string{}, rt.creds...), st.lines(h)...)
						rep := rawGet(t, base, rt.path, lines)
						what := fmt.Sprintf("%s %s (%s), %s %s", p.name, rt.path, rt.name, h, st.name)
						if st.refusedBy == p.name {
							if rep.status != http.StatusBadRequest {
								t.Errorf("%s: status %d, want 400: %s", what, rep.status, rep.body)
							}
							continue
						}
						if rep.status != http.StatusOK {
							t.Errorf("%s: status %d, want 200: %s", what, rep.status, rep.body)
							continue
						}
						rep.assertNoSpoof(t, what, rt, key)
					}
				}
			}
		})
	}

	t.Run("grpc Check", func(t *testing.T) {
		c := dialCheck(t, s)
		for _, rt := range routes {
			hs := spoofedEnvoyHeaders(rt.creds)
			resp := check(t, c, checkRequest("GET", rt.path, hs, ""))
			ok := resp.GetOkResponse()
			if ok == nil {
				t.Errorf("%s: not allowed: %v", rt.name, resp.GetStatus())
				continue
			}
			for _, h := range append(spoofIdentity, usedKeyHeader(rt.creds)...) {
				if opt, set := headerValue(ok.GetHeaders(), h); set {
					if opt.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || strings.Contains(opt.GetHeader().GetValue(), "spoof") {
						t.Errorf("%s: %s set as %v: a client's copy would survive", rt.name, h, opt)
					}
					continue
				}
				if !containsFold(ok.GetHeadersToRemove(), h) {
					t.Errorf("%s: %s neither overwritten nor in headers_to_remove %q", rt.name, h, ok.GetHeadersToRemove())
				}
			}
		}
	})

	t.Run("envoy http_service", func(t *testing.T) {
		for _, rt := range routes {
			req, err := http.NewRequest("GET", "http://"+s.httpAddr+"/envoy"+rt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range spoofedEnvoyHeaders(rt.creds) {
				req.Header.Set(k, v)
			}
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", rt.name, resp.StatusCode)
				continue
			}
			remove := strings.Split(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), ",")
			for _, h := range append(spoofIdentity, usedKeyHeader(rt.creds)...) {
				if v := resp.Header.Get(h); v != "" && !strings.Contains(v, "spoof") {
					continue // Envoy copies the answer's value over the client's
				}
				if !containsFold(remove, h) {
					t.Errorf("%s: %s neither answered nor in X-Envoy-Auth-Headers-To-Remove %q", rt.name, h, remove)
				}
			}
		}
	})
}

// spoofedEnvoyHeaders is what Envoy would send for a request with creds and a spoofed copy of
// every identity header: lower-case names, one value each.
func spoofedEnvoyHeaders(creds []string) map[string]string {
	hs := map[string]string{}
	for _, h := range spoofIdentity {
		hs[h] = "spoof-envoy"
	}
	for _, c := range creds {
		name, value, _ := strings.Cut(c, ": ")
		hs[strings.ToLower(name)] = value
	}
	return hs
}

// usedKeyHeader is the API key header of creds, when the key authenticates the request.
func usedKeyHeader(creds []string) []string {
	for _, c := range creds {
		name, _, _ := strings.Cut(c, ": ")
		if n := strings.ToLower(name); n == "x-api-key" || n == "authorization" {
			return []string{n}
		}
	}
	return nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(strings.TrimSpace(v), s) {
			return true
		}
	}
	return false
}

// rawReply is a proxy's answer to a raw request and, on 200, the headers the app received.
type rawReply struct {
	status   int
	body     string
	upstream map[string][]string
}

// rawGet sends GET path to base with exactly the header lines given (names spelt as given,
// repeats kept), which net/http's client cannot do.
func rawGet(t *testing.T, base, path string, lines []string) rawReply {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", path, addr)
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	rep := rawReply{status: resp.StatusCode, body: readAll(resp.Body)}
	if rep.status == http.StatusOK {
		var echo struct {
			Headers map[string][]string `json:"headers"`
		}
		if err := json.Unmarshal([]byte(rep.body), &echo); err != nil {
			t.Fatalf("GET %s: 200 but not the app's echo: %q", path, rep.body)
		}
		rep.upstream = echo.Headers
	}
	return rep
}

// assertNoSpoof checks what the app received: no spelling of an identity header carries a
// client's value, the route's own identity arrived, and the API key did not.
func (r rawReply) assertNoSpoof(t *testing.T, what string, rt spoofRoute, key string) {
	t.Helper()
	got := map[string][]string{}
	for name, vs := range r.upstream {
		norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
		got[norm] = append(got[norm], vs...)
		for _, v := range vs {
			if strings.Contains(v, "spoof") {
				t.Errorf("%s: the app received %s: %q", what, name, v)
			}
			if strings.Contains(v, key) {
				t.Errorf("%s: the app received the API key in %s", what, name)
			}
		}
	}
	for h, want := range rt.want {
		if vs := got[h]; len(vs) != 1 || vs[0] != want {
			t.Errorf("%s: the app received %s = %q, want [%s]", what, h, vs, want)
		}
	}
	if vs := got["x-extauthz-degraded"]; len(vs) > 0 {
		t.Errorf("%s: the app received x-extauthz-degraded %q with Redis up", what, vs)
	}
}

// generate runs `extauthz config PROXY` for the sidecar config with args.
func generate(t *testing.T, proxy, cfg string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"config", proxy, "--config", cfg}, args...)...)
	cmd.Env = append(os.Environ(), "EXTAUTHZ_HTTP_ADDR=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("extauthz config %s: %v\n%s", proxy, err, stderr.String())
	}
	return string(out)
}

// startGeneratedNginx runs the nginx configuration generated for cfg and returns its base URL.
func startGeneratedNginx(t *testing.T, bin, cfg string, s *sidecar, upstream string) string {
	t.Helper()
	prefix, err := os.MkdirTemp("", "extauthz-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	// Workers run as nobody when the master is root: the prefix must be traversable.
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(prefix, "temp"), 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	conf := generate(t, "nginx", cfg, "--listen", listen, "--upstream", strings.TrimPrefix(upstream, "http://"), "--extauthz", s.httpAddr)
	path := writeFile(t, prefix, "nginx.conf", conf)
	p := startProc(t, "nginx", exec.Command(bin, "-p", prefix+"/", "-c", path, "-e", "stderr",
		"-g", "daemon off; pid "+filepath.Join(prefix, "nginx.pid")+"; error_log stderr;"))
	p.waitListen(t, listen, 10*time.Second)
	return "http://" + listen
}

// startGeneratedCaddy runs the Caddyfile generated for cfg and returns its base URL.
func startGeneratedCaddy(t *testing.T, bin, cfg string, s *sidecar, upstream string) string {
	t.Helper()
	dir := t.TempDir()
	listen := freeAddr(t)
	conf := generate(t, "caddy", cfg, "--listen", listen, "--upstream", strings.TrimPrefix(upstream, "http://"), "--extauthz", s.httpAddr, "--admin", "off")
	path := writeFile(t, dir, "Caddyfile", conf)
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	p := startProc(t, "caddy", cmd)
	p.waitListen(t, listen, 15*time.Second)
	return "http://" + listen
}
