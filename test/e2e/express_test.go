package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/extauthz/extauthz/internal/redistest"
)

// The Express app in express/ pins these; node_modules must hold exactly them.
var expressDeps = []string{"express", "express-session", "connect-redis", "ioredis"}

var (
	npmOnce sync.Once
	npmErr  error
)

// expressDir returns the directory of the Express app with its dependencies installed. It
// uses express/node_modules (gitignored) when it holds the pinned versions, and otherwise runs
// `npm ci` there once per test run. Without node (or npm, when an install is needed) the test
// is skipped, or fails under CI.
func expressDir(t *testing.T) (dir, node string) {
	t.Helper()
	node = requireBinary(t, "node", "apt-get install -y nodejs npm")
	dir, err := filepath.Abs("express")
	if err != nil {
		t.Fatal(err)
	}
	if problem := nodeModulesProblem(dir); problem != "" {
		npm := requireBinary(t, "npm", "apt-get install -y npm")
		npmOnce.Do(func() {
			t.Logf("installing the Express app's dependencies (%s): npm ci", problem)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--prefix", dir)
			cmd.Dir = dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			out, err := cmd.CombinedOutput()
			if err != nil {
				npmErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
			}
		})
		if npmErr != nil {
			t.Fatal(npmErr)
		}
		if problem := nodeModulesProblem(dir); problem != "" {
			t.Fatalf("after npm ci: %s", problem)
		}
	}
	return dir, node
}

// nodeModulesProblem says why dir/node_modules does not hold the versions package.json pins,
// or "" when it does.
func nodeModulesProblem(dir string) string {
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		return err.Error()
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		return "package.json: " + err.Error()
	}
	for _, name := range expressDeps {
		var got struct {
			Version string `json:"version"`
		}
		b, err := os.ReadFile(filepath.Join(dir, "node_modules", name, "package.json"))
		if err != nil {
			return "node_modules/" + name + " is missing"
		}
		if err := json.Unmarshal(b, &got); err != nil || got.Version != pkg.Dependencies[name] {
			return fmt.Sprintf("node_modules/%s is %q, package.json pins %q", name, got.Version, pkg.Dependencies[name])
		}
	}
	return ""
}

// expressApp is one running `node app.js`.
type expressApp struct {
	t    *testing.T
	p    *proc
	base string
}

// startExpress runs the Express app against redisURL with the secrets (comma-separated,
// newest first) and waits until it listens.
func startExpress(t *testing.T, redisURL, secrets string) *expressApp {
	t.Helper()
	dir, node := expressDir(t)
	port := redistest.FreePort(t)
	cmd := exec.Command(node, "app.js")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "REDIS_URL="+redisURL, "SECRETS="+secrets, "NODE_ENV=production")
	p := startProc(t, "express", cmd)
	p.waitLog(t, "listening", 20*time.Second)
	return &expressApp{t: t, p: p, base: "http://127.0.0.1:" + strconv.Itoa(port)}
}

var expressClient = &http.Client{Timeout: 5 * time.Second}

// login posts /login and returns the connect.sid cookie value exactly as Express sent it in
// Set-Cookie (URL-encoded, "s%3A...").
func (a *expressApp) login(user, role string) string {
	a.t.Helper()
	resp, err := expressClient.Post(a.base+"/login?user="+url.QueryEscape(user)+"&role="+url.QueryEscape(role), "", nil)
	if err != nil {
		a.t.Fatalf("express login: %v\n%s", err, a.p.logs.String())
	}
	defer resp.Body.Close()
	body := readAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		a.t.Fatalf("express login %s: %d %s\n%s", user, resp.StatusCode, body, a.p.logs.String())
	}
	for _, sc := range resp.Header.Values("Set-Cookie") {
		if v, ok := strings.CutPrefix(sc, "connect.sid="); ok {
			if i := strings.IndexByte(v, ';'); i >= 0 {
				v = v[:i]
			}
			return v
		}
	}
	a.t.Fatalf("express login %s: no connect.sid in Set-Cookie %q", user, resp.Header.Values("Set-Cookie"))
	return ""
}

// do sends method path with the session cookie and returns the status and body.
func (a *expressApp) do(method, path, cookie string) (int, string) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Cookie", "connect.sid="+cookie)
	resp, err := expressClient.Do(req)
	if err != nil {
		a.t.Fatalf("express %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(resp.Body)
}

// sessionConfig is the sidecar config of the interop test, with the given secrets.
func sessionConfig(redisURL string, secrets ...string) string {
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
    x-passport-user: passport.user
policies:
  - name: admin
    match: {path_prefix: /admin}
    auth: session
    roles: [admin]
  - name: api
    match: {path_prefix: /api}
    auth: session
    limits:
      - {name: api-hourly, by: principal, requests: 3, window: 1h}
`, redisURL, strings.Join(secrets, ", "))
}

func startSessionSidecar(t *testing.T, redisURL string, secrets ...string) (*sidecar, authv3.AuthorizationClient) {
	t.Helper()
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", sessionConfig(redisURL, secrets...))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	return s, dialCheck(t, s)
}

// cookieHeader is the Cookie header a browser sends: the session among other cookies.
func cookieHeader(value string) map[string]string {
	return map[string]string{"cookie": "connect.sid=" + value + "; other=1"}
}

// TestExpressSessionInterop logs in through a real Express app (express-session +
// connect-redis over ioredis) and asks the sidecar, over real gRPC, about the very cookie
// Express sent.
func TestExpressSessionInterop(t *testing.T) {
	t.Setenv("SESSION_SECRET", "") // the config file's secrets, not the caller's environment
	r := redistest.Start(t)
	app := startExpress(t, r.URL(), "new,old")

	alice := app.login("alice", "admin")
	bob := app.login("bob", "user")
	if !strings.HasPrefix(alice, "s%3A") {
		t.Fatalf("Express cookie %q is not URL-encoded s:...", alice)
	}
	// The test package's signer is byte-for-byte express-session's (the proxy tests rely on it).
	if want := signCookie(sidOf(t, alice), "new"); alice != want {
		t.Fatalf("express-session signed %q, signCookie gives %q", alice, want)
	}
	if code, body := app.do("GET", "/whoami", alice); code != 200 || !strings.Contains(body, `"userId":"alice"`) {
		t.Fatalf("Express /whoami: %d %s", code, body)
	}

	_, c := startSessionSidecar(t, r.URL(), "new", "old")

	t.Run("allowed with identity headers", func(t *testing.T) {
		h := cookieHeader(alice)
		h["x-user-id"] = "mallory" // a client's own copy must be replaced, not appended to
		resp := check(t, c, checkRequest("GET", "/admin/users?page=2&sort=name", h, ""))
		assertAllowedAs(t, resp, map[string]string{"x-user-id": "alice", "x-user-role": "admin", "x-passport-user": "42"})
		if got := resp.GetDynamicMetadata().GetFields()["principal"].GetStringValue(); got != "alice" {
			t.Errorf("dynamic_metadata principal = %q, want alice (%v)", got, resp.GetDynamicMetadata())
		}
		if got := resp.GetDynamicMetadata().GetFields()["policy"].GetStringValue(); got != "admin" {
			t.Errorf("dynamic_metadata policy = %q, want admin", got)
		}
	})

	t.Run("named policy from context_extensions", func(t *testing.T) {
		// /elsewhere matches no policy by path; the route names "admin".
		resp := check(t, c, checkRequest("GET", "/elsewhere?x=1", cookieHeader(alice), "admin"))
		assertAllowedAs(t, resp, map[string]string{"x-user-id": "alice"})
		resp = check(t, c, checkRequest("GET", "/elsewhere?x=1", cookieHeader(alice), ""))
		assertDenied(t, resp, 403)
	})

	t.Run("role missing is 403", func(t *testing.T) {
		resp := check(t, c, checkRequest("GET", "/admin/users", cookieHeader(bob), ""))
		assertDenied(t, resp, 403)
		if resp.GetStatus().GetCode() != int32(code.Code_PERMISSION_DENIED) {
			t.Errorf("status code = %d, want PERMISSION_DENIED", resp.GetStatus().GetCode())
		}
	})

	t.Run("no cookie is 401", func(t *testing.T) {
		resp := check(t, c, checkRequest("GET", "/admin/users", map[string]string{"cookie": "other=1"}, ""))
		assertDenied(t, resp, 401)
		resp = check(t, c, checkRequest("GET", "/admin/users", nil, ""))
		assertDenied(t, resp, 401)
		if _, ok := headerValue(resp.GetDeniedResponse().GetHeaders(), "www-authenticate"); !ok {
			t.Errorf("401 without www-authenticate: %v", resp.GetDeniedResponse().GetHeaders())
		}
	})

	t.Run("tampered cookie is 401", func(t *testing.T) {
		raw, _ := url.PathUnescape(alice)
		dot := strings.LastIndexByte(raw, '.')
		sid, sig := raw[2:dot], raw[dot+1:]
		flip := func(s string, i int) string {
			b := []byte(s)
			if b[i] == 'A' {
				b[i] = 'B'
			} else {
				b[i] = 'A'
			}
			return string(b)
		}
		bobRaw, _ := url.PathUnescape(bob)
		bobSig := bobRaw[strings.LastIndexByte(bobRaw, '.')+1:]
		for name, v := range map[string]string{
			"signature":    encodeURIComponent("s:" + sid + "." + flip(sig, 3)),
			"sid":          encodeURIComponent("s:" + flip(sid, len(sid)-1) + "." + sig),
			"unsigned":     encodeURIComponent(sid),
			"bob's sig":    encodeURIComponent("s:" + sid + "." + bobSig),
			"short sig":    encodeURIComponent("s:" + sid + "." + sig[:len(sig)-1]),
			"other secret": signCookie(sid, "guessed"),
		} {
			resp := check(t, c, checkRequest("GET", "/admin/users", cookieHeader(v), ""))
			if resp.GetStatus().GetCode() == int32(code.Code_OK) || resp.GetDeniedResponse().GetStatus().GetCode() != typev3.StatusCode_Unauthorized {
				t.Errorf("%s tampered: want 401, got %v", name, resp)
			}
		}
	})

	t.Run("logout is immediate", func(t *testing.T) {
		carol := app.login("carol", "admin")
		assertAllowedAs(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(carol), "")), map[string]string{"x-user-id": "carol"})
		if code, body := app.do("POST", "/logout", carol); code != 200 {
			t.Fatalf("Express logout: %d %s", code, body)
		}
		assertDenied(t, check(t, c, checkRequest("GET", "/admin/x", cookieHeader(carol), "")), 401)
		if code, _ := app.do("GET", "/whoami", carol); code != 401 {
			t.Errorf("Express still knows carol after logout: %d", code)
		}
	})

	t.Run("api limit", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			resp := check(t, c, checkRequest("POST", "/api/items?page="+strconv.Itoa(i), cookieHeader(alice), ""))
			ok := assertAllowedAs(t, resp, map[string]string{"x-user-id": "alice"})
			rl, found := headerValue(ok.GetResponseHeadersToAdd(), "RateLimit")
			want := fmt.Sprintf("limit=3, remaining=%d, reset=", 3-i)
			if !found || !strings.HasPrefix(rl.GetHeader().GetValue(), want) {
				t.Errorf("call %d: response_headers_to_add RateLimit = %v, want prefix %q", i, ok.GetResponseHeadersToAdd(), want)
			}
			if p, found := headerValue(ok.GetResponseHeadersToAdd(), "RateLimit-Policy"); !found || p.GetHeader().GetValue() != "3;w=3600" {
				t.Errorf("call %d: RateLimit-Policy = %v", i, p)
			}
			for _, h := range ok.GetResponseHeadersToAdd() {
				if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("response header %s append_action %v", h.GetHeader().GetKey(), h.GetAppendAction())
				}
			}
		}
		resp := check(t, c, checkRequest("POST", "/api/items?page=4", cookieHeader(alice), ""))
		denied := assertDenied(t, resp, 429)
		if resp.GetStatus().GetCode() != int32(code.Code_RESOURCE_EXHAUSTED) {
			t.Errorf("status code = %d, want RESOURCE_EXHAUSTED", resp.GetStatus().GetCode())
		}
		ra, ok := headerValue(denied.GetHeaders(), "Retry-After")
		if n, err := strconv.Atoi(ra.GetHeader().GetValue()); !ok || err != nil || n <= 0 || n > 3600 {
			t.Errorf("Retry-After = %v", ra)
		}
		if rl, ok := headerValue(denied.GetHeaders(), "RateLimit"); !ok || !strings.HasPrefix(rl.GetHeader().GetValue(), "limit=3, remaining=0, reset=") {
			t.Errorf("429 RateLimit = %v", rl)
		}
		if _, ok := headerValue(denied.GetHeaders(), "RateLimit-Policy"); !ok {
			t.Errorf("429 without RateLimit-Policy: %v", denied.GetHeaders())
		}
		if !strings.Contains(denied.GetBody(), "rate limit") {
			t.Errorf("429 body = %q", denied.GetBody())
		}
		// bob has his own budget.
		assertAllowedAs(t, check(t, c, checkRequest("POST", "/api/items", cookieHeader(bob), "")), map[string]string{"x-user-id": "bob"})
	})

	t.Run("secret rotation", func(t *testing.T) {
		app.p.stop()
		app2 := startExpress(t, r.URL(), "newer,new")
		// Express itself still accepts the cookie it signed with "new" ...
		if code, body := app2.do("GET", "/whoami", alice); code != 200 {
			t.Fatalf("Express after rotation rejects the old cookie: %d %s", code, body)
		}
		// ... and signs new sessions with "newer".
		dave := app2.login("dave", "admin")
		if want := signCookie(sidOf(t, dave), "newer"); dave != want {
			t.Fatalf("Express signed %q, want the newer secret's %q", dave, want)
		}
		_, c2 := startSessionSidecar(t, r.URL(), "newer", "new")
		assertAllowedAs(t, check(t, c2, checkRequest("GET", "/admin/a", cookieHeader(alice), "")), map[string]string{"x-user-id": "alice"})
		assertAllowedAs(t, check(t, c2, checkRequest("GET", "/admin/a", cookieHeader(dave), "")), map[string]string{"x-user-id": "dave", "x-user-role": "admin"})
		// The sidecar that does not know "newer" yet rejects dave's cookie.
		assertDenied(t, check(t, c, checkRequest("GET", "/admin/a", cookieHeader(dave), "")), 401)
	})
}

// assertAllowedAs checks an OK Check answer that sets exactly want's identity headers with
// OVERWRITE_IF_EXISTS_OR_ADD and removes none of the headers it sets.
func assertAllowedAs(t *testing.T, resp *authv3.CheckResponse, want map[string]string) *authv3.OkHttpResponse {
	t.Helper()
	if resp.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("want allowed, got status %v denied %v", resp.GetStatus(), resp.GetDeniedResponse())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("allowed without ok_response: %v", resp)
	}
	for name, v := range want {
		h, found := headerValue(ok.GetHeaders(), name)
		switch {
		case !found:
			t.Errorf("ok_response.headers lacks %s: %v", name, ok.GetHeaders())
		case h.GetHeader().GetValue() != v:
			t.Errorf("ok_response.headers %s = %q, want %q", name, h.GetHeader().GetValue(), v)
		case h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			t.Errorf("ok_response.headers %s append_action = %v, want OVERWRITE_IF_EXISTS_OR_ADD", name, h.GetAppendAction())
		}
	}
	for _, h := range ok.GetHeaders() {
		if slices.ContainsFunc(ok.GetHeadersToRemove(), func(r string) bool { return strings.EqualFold(r, h.GetHeader().GetKey()) }) {
			t.Errorf("headers_to_remove %v lists %s, which the answer sets (Envoy removes after setting)", ok.GetHeadersToRemove(), h.GetHeader().GetKey())
		}
	}
	return ok
}

// assertDenied checks a denial with the given HTTP status.
func assertDenied(t *testing.T, resp *authv3.CheckResponse, status int) *authv3.DeniedHttpResponse {
	t.Helper()
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		t.Fatalf("want %d, got allowed: %v", status, resp.GetOkResponse())
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("want denied_response %d, got %v", status, resp)
	}
	if got := int(d.GetStatus().GetCode()); got != status {
		t.Fatalf("denied_response status = %d, want %d (%s)", got, status, d.GetBody())
	}
	return d
}

// TestExactLimitsUnderConcurrency runs two sidecars on one Redis and has 32 callers race
// through 400 Check calls per algorithm on a 50-per-hour limit: exactly 50 must pass, whatever
// the interleaving across processes.
func TestExactLimitsUnderConcurrency(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t)
	// The sliding window weighs the previous epoch-aligned hour; stay inside one hour.
	waitForWindowRoom(t, r, 3600, 20)

	key := createAPIKey(t, r.URL(), "o")
	cfg := fmt.Sprintf(`redis:
  url: %s
  timeout: 5s
log:
  level: warn
policies:
`, r.URL())
	algos := []string{"fixed", "sliding", "gcra"}
	for _, a := range algos {
		cfg += fmt.Sprintf(`  - name: exact-%s
    auth: apikey
    failure: {limits: closed}
    limits:
      - {by: principal, requests: 50, window: 1h, algorithm: %s}
`, a, a)
	}
	path := writeFile(t, t.TempDir(), "extauthz.yaml", cfg)
	sidecars := []*sidecar{startSidecar(t, "--config", path), startSidecar(t, "--config", path)}
	clients := make([]authv3.AuthorizationClient, len(sidecars))
	for i, s := range sidecars {
		s.waitReady()
		clients[i] = dialCheck(t, s)
	}

	const callers, calls, limit = 32, 400, 50
	for _, algo := range algos {
		t.Run(algo, func(t *testing.T) {
			var next, allowed, limited atomic.Int64
			var mu sync.Mutex
			var failures []string
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < callers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					<-start
					for next.Add(1) <= calls {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						resp, err := clients[w%len(clients)].Check(ctx, checkRequest("GET", "/v1/things?w="+strconv.Itoa(w),
							map[string]string{"x-api-key": key}, "exact-"+algo))
						cancel()
						switch {
						case err != nil:
							mu.Lock()
							failures = append(failures, err.Error())
							mu.Unlock()
						case resp.GetStatus().GetCode() == int32(code.Code_OK):
							allowed.Add(1)
						case resp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_TooManyRequests:
							limited.Add(1)
						default:
							mu.Lock()
							failures = append(failures, fmt.Sprintf("unexpected answer %v", resp))
							mu.Unlock()
						}
					}
				}(w)
			}
			t0 := time.Now()
			close(start)
			wg.Wait()
			if len(failures) > 0 {
				t.Fatalf("%d calls failed, first: %s", len(failures), failures[0])
			}
			if allowed.Load() != limit || limited.Load() != calls-limit {
				t.Fatalf("%s: allowed %d, limited %d; want exactly %d and %d", algo, allowed.Load(), limited.Load(), limit, calls-limit)
			}
			t.Logf("%s: %d calls from %d callers over 2 sidecars in %v: %d allowed", algo, calls, callers, time.Since(t0).Round(time.Millisecond), allowed.Load())
		})
	}
}

// createAPIKey runs `extauthz apikey create` and returns the key, which the CLI prints alone on
// its first line.
func createAPIKey(t *testing.T, redisURL, owner string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, "apikey", "create", "--owner", owner, "--redis-url", redisURL)
	cmd.Env = append(os.Environ(), "EXTAUTHZ_REDIS_URL=")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("extauthz apikey create: %v\n%s", err, out)
	}
	key := firstLine(string(out))
	if !strings.HasPrefix(key, "eak_") {
		t.Fatalf("apikey create printed %q first, want the key", key)
	}
	return key
}
