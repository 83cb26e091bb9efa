package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// proxySecret signs the sessions the proxy tests write straight into Redis.
const proxySecret = "proxy-secret"

// proxyConfig is the sidecar config behind the proxies: an open route, an admin route, a
// route with a small limit, and everything else for any logged-in user.
func proxyConfig(redisURL string) string {
	return fmt.Sprintf(`redis:
  url: %s
  timeout: 2s
response_headers: draft-7
log:
  level: warn
sessions:
  secrets: [%s]
  subject: userId
  roles: role
  headers:
    x-user-id: userId
    x-user-role: role
policies:
  - name: open
    match: {path_prefix: /public}
    auth: none
  - name: admin
    match: {path_prefix: /admin}
    auth: session
    roles: [admin]
  - name: limited
    match: {path_prefix: /limited}
    auth: session
    limits:
      - {requests: 2, window: 1h}
  - name: app
    match: {path_prefix: /}
    auth: session
`, redisURL, proxySecret)
}

// echoUpstream is the app behind the proxies: it answers the headers it received as JSON.
func echoUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"method": r.Method, "uri": r.RequestURI, "headers": r.Header})
	}))
	t.Cleanup(up.Close)
	return up
}

// renderExample reads an example config and fills its {{PLACEHOLDERS}}; every placeholder
// must be filled, so the test runs the example exactly as shipped.
func renderExample(t *testing.T, path string, vals map[string]string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for k, v := range vals {
		if !strings.Contains(s, "{{"+k+"}}") {
			t.Fatalf("%s has no {{%s}}", path, k)
		}
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	// Comments may mention the scheme; directives must not keep a placeholder.
	for i, line := range strings.Split(s, "\n") {
		if code, _, _ := strings.Cut(line, "#"); strings.Contains(code, "{{") {
			t.Fatalf("%s:%d: unfilled placeholder: %s", path, i+1, line)
		}
	}
	return s
}

// proxySetup is what both proxies sit in front of.
type proxySetup struct {
	redis    *redistest.Server
	sidecar  *sidecar
	upstream *httptest.Server
}

// TestProxies runs real nginx (auth_request) and Caddy (forward_auth) with the shipped example
// configs in front of an echo app, with the sidecar deciding over HTTP.
func TestProxies(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", proxyConfig(r.URL()))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	env := &proxySetup{redis: r, sidecar: s, upstream: echoUpstream(t)}

	t.Run("nginx", func(t *testing.T) {
		nginx := requireBinary(t, "nginx", "apt-get install -y nginx")
		base := startNginx(t, nginx, env)
		testProxy(t, env, "nginx", base, true)
	})
	t.Run("caddy", func(t *testing.T) {
		caddy := requireBinary(t, "caddy", "apt-get install -y caddy")
		base := startCaddy(t, caddy, env)
		testProxy(t, env, "caddy", base, false)
	})
}

// startNginx runs examples/nginx/nginx.conf on a free loopback port and returns its base URL.
func startNginx(t *testing.T, bin string, env *proxySetup) string {
	t.Helper()
	// Workers run as nobody when the master is root: the prefix must be traversable.
	prefix, err := os.MkdirTemp("", "extauthz-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(prefix, "temp"), 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	conf := renderExample(t, "../../examples/nginx/nginx.conf", map[string]string{
		"LISTEN":        listen,
		"EXTAUTHZ_HTTP": env.sidecar.httpAddr,
		"UPSTREAM":      strings.TrimPrefix(env.upstream.URL, "http://"),
	})
	confPath := writeFile(t, prefix, "nginx.conf", conf)
	cmd := exec.Command(bin, "-p", prefix+"/", "-c", confPath, "-e", "stderr",
		"-g", "daemon off; pid "+filepath.Join(prefix, "nginx.pid")+"; error_log stderr;")
	p := startProc(t, "nginx", cmd)
	p.waitListen(t, listen, 10*time.Second)
	return "http://" + listen
}

// startCaddy runs examples/caddy/Caddyfile on a free loopback port (admin endpoint on another)
// with HOME and XDG dirs in a temporary directory, and returns its base URL.
func startCaddy(t *testing.T, bin string, env *proxySetup) string {
	t.Helper()
	dir := t.TempDir()
	listen := freeAddr(t)
	conf := renderExample(t, "../../examples/caddy/Caddyfile", map[string]string{
		"LISTEN":        listen,
		"BIND":          "127.0.0.1",
		"ADMIN":         freeAddr(t),
		"EXTAUTHZ_HTTP": env.sidecar.httpAddr,
		"UPSTREAM":      strings.TrimPrefix(env.upstream.URL, "http://"),
	})
	confPath := writeFile(t, dir, "Caddyfile", conf)
	cmd := exec.Command(bin, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	p := startProc(t, "caddy", cmd)
	p.waitListen(t, listen, 15*time.Second)
	return "http://" + listen
}

// proxyReply is one answer through a proxy; Upstream is what the echo app saw, when the
// request got there.
type proxyReply struct {
	Status   int
	Header   http.Header
	Body     string
	Upstream *struct {
		URI     string              `json:"uri"`
		Headers map[string][]string `json:"headers"`
	}
}

func proxyGet(t *testing.T, base, path string, headers map[string]string) proxyReply {
	t.Helper()
	req, err := http.NewRequest("GET", base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	out := proxyReply{Status: resp.StatusCode, Header: resp.Header, Body: readAll(resp.Body)}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal([]byte(out.Body), &out.Upstream); err != nil {
			t.Fatalf("GET %s: 200 but not the upstream's echo: %q", path, out.Body)
		}
	}
	return out
}

// upstreamSaw returns every value of name the upstream received.
func (r proxyReply) upstreamSaw(name string) []string {
	if r.Upstream == nil {
		return nil
	}
	return r.Upstream.Headers[http.CanonicalHeaderKey(name)]
}

// testProxy is the same story through either proxy. rateLimitOnAllow says whether the proxy's
// config forwards RateLimit headers on allowed responses too (nginx's does).
func testProxy(t *testing.T, env *proxySetup, name, base string, rateLimitOnAllow bool) {
	admin := writeSession(t, env.redis, name+"-sid-admin-0123456789", proxySecret, map[string]any{"userId": name + "-admin", "role": "admin"})
	user := writeSession(t, env.redis, name+"-sid-user-0123456789ab", proxySecret, map[string]any{"userId": name + "-user", "role": "user"})
	forged := map[string]string{"X-User-Id": "mallory", "X-User-Role": "admin"}
	withCookie := func(cookie string, extra map[string]string) map[string]string {
		h := map[string]string{"Cookie": "theme=dark; connect.sid=" + cookie}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}

	t.Run("allowed, identity from the session", func(t *testing.T) {
		rep := proxyGet(t, base, "/admin/reports?year=2025", withCookie(admin, forged))
		if rep.Status != 200 {
			t.Fatalf("status %d: %s", rep.Status, rep.Body)
		}
		if got := rep.upstreamSaw("X-User-Id"); len(got) != 1 || got[0] != name+"-admin" {
			t.Errorf("upstream X-User-Id = %q, want [%s-admin] (never the forged one)", got, name)
		}
		if got := rep.upstreamSaw("X-User-Role"); len(got) != 1 || got[0] != "admin" {
			t.Errorf("upstream X-User-Role = %q", got)
		}
		if rep.Upstream.URI != "/admin/reports?year=2025" {
			t.Errorf("upstream URI = %q", rep.Upstream.URI)
		}
		rep = proxyGet(t, base, "/dashboard", withCookie(user, forged))
		if got := rep.upstreamSaw("X-User-Id"); rep.Status != 200 || len(got) != 1 || got[0] != name+"-user" {
			t.Errorf("status %d, upstream X-User-Id = %q, want [%s-user]", rep.Status, got, name)
		}
		if got := rep.upstreamSaw("X-User-Role"); len(got) != 1 || got[0] != "user" {
			t.Errorf("upstream X-User-Role = %q, want [user] (never the forged admin)", got)
		}
	})

	t.Run("missing session field drops forged header", func(t *testing.T) {
		norole := writeSession(t, env.redis, name+"-sid-norole-0123456789", proxySecret, map[string]any{"userId": name + "-norole"})
		rep := proxyGet(t, base, "/dashboard", withCookie(norole, forged))
		if got := rep.upstreamSaw("X-User-Id"); rep.Status != 200 || len(got) != 1 || got[0] != name+"-norole" {
			t.Fatalf("status %d, upstream X-User-Id = %q: %s", rep.Status, got, rep.Body)
		}
		if got := rep.upstreamSaw("X-User-Role"); len(got) != 0 {
			t.Errorf("upstream X-User-Role = %q for a session without a role, want none", got)
		}
	})

	t.Run("open route drops forged identity", func(t *testing.T) {
		rep := proxyGet(t, base, "/public/index.html", forged)
		if rep.Status != 200 {
			t.Fatalf("status %d: %s", rep.Status, rep.Body)
		}
		if got := rep.upstreamSaw("X-User-Id"); len(got) != 0 {
			t.Errorf("upstream saw a client-supplied X-User-Id %q on an open route", got)
		}
		if got := rep.upstreamSaw("X-User-Role"); len(got) != 0 {
			t.Errorf("upstream saw a client-supplied X-User-Role %q on an open route", got)
		}
	})

	t.Run("401 without a session", func(t *testing.T) {
		for what, h := range map[string]map[string]string{
			"no cookie": forged,
			"tampered":  withCookie(signCookie(name+"-sid-admin-0123456789", "wrong-secret"), nil),
			"unknown":   withCookie(signCookie(name+"-sid-nobody", proxySecret), nil),
		} {
			rep := proxyGet(t, base, "/dashboard", h)
			if rep.Status != 401 {
				t.Errorf("%s: status %d, want 401: %s", what, rep.Status, rep.Body)
			}
		}
	})

	t.Run("403 without the role", func(t *testing.T) {
		rep := proxyGet(t, base, "/admin/reports", withCookie(user, forged))
		if rep.Status != 403 {
			t.Fatalf("status %d, want 403: %s", rep.Status, rep.Body)
		}
		if rep.Header.Get("Retry-After") != "" {
			t.Errorf("403 with Retry-After %q", rep.Header.Get("Retry-After"))
		}
	})

	t.Run("429 after the limit", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			rep := proxyGet(t, base, "/limited/item?n="+strconv.Itoa(i), withCookie(user, nil))
			if rep.Status != 200 {
				t.Fatalf("call %d: status %d: %s", i, rep.Status, rep.Body)
			}
			if rateLimitOnAllow {
				want := fmt.Sprintf("limit=2, remaining=%d, reset=", 2-i)
				if got := rep.Header.Get("RateLimit"); !strings.HasPrefix(got, want) {
					t.Errorf("call %d: RateLimit = %q, want prefix %q", i, got, want)
				}
				if got := rep.Header.Get("RateLimit-Policy"); got != "2;w=3600" {
					t.Errorf("call %d: RateLimit-Policy = %q", i, got)
				}
			}
		}
		rep := proxyGet(t, base, "/limited/item?n=3", withCookie(user, nil))
		if rep.Status != 429 {
			t.Fatalf("status %d, want 429: %v %s", rep.Status, rep.Header, rep.Body)
		}
		if n, err := strconv.Atoi(rep.Header.Get("Retry-After")); err != nil || n <= 0 || n > 3600 {
			t.Errorf("Retry-After = %q", rep.Header.Get("Retry-After"))
		}
		if got := rep.Header.Get("RateLimit"); !strings.HasPrefix(got, "limit=2, remaining=0, reset=") {
			t.Errorf("RateLimit = %q", got)
		}
		if got := rep.Header.Get("RateLimit-Policy"); got != "2;w=3600" {
			t.Errorf("RateLimit-Policy = %q", got)
		}
		if !strings.Contains(rep.Body, `"error":"rate limit exceeded"`) {
			t.Errorf("429 body = %q", rep.Body)
		}
		// Another user's budget is untouched.
		if rep := proxyGet(t, base, "/limited/item", withCookie(admin, nil)); rep.Status != 200 {
			t.Errorf("admin on /limited: status %d: %s", rep.Status, rep.Body)
		}
	})
}
