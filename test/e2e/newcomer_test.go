package e2e

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// exampleSecret is sessions.secrets of examples/extauthz.yaml.
const exampleSecret = "dev-only-change-me"

// readmeSection returns the README's section under heading, up to the next "## ".
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", heading)
	}
	sec, _, _ := strings.Cut(rest, "\n## ")
	return sec
}

// exampleCopy writes examples/extauthz.yaml to a temporary file with the embedded store moved
// to embeddedAddr and the rate limit directory made absolute (the test does not run from the
// repository root, as `make run` does). Everything else is the file as shipped.
func exampleCopy(t *testing.T, embeddedAddr string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/extauthz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rlsDir, err := filepath.Abs("../../examples/rls.d")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for old, repl := range map[string]string{
		"embedded_addr: 127.0.0.1:9004": "embedded_addr: " + embeddedAddr,
		"config_dir: examples/rls.d":    "config_dir: " + rlsDir,
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("examples/extauthz.yaml no longer says %q: update the README flow and this test", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	return writeFile(t, t.TempDir(), "extauthz.yaml", s)
}

// askHTTP sends GET url with headers and returns the status and response headers.
func askHTTP(t *testing.T, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, resp.Header, readAll(resp.Body)
}

// TestReadmeNewcomerFlow runs the README's "Try it in a minute" as written: the real binary on
// examples/extauthz.yaml and its embedded store, an API key created by the CLI with --config
// and no Redis URL, the HTTP listener asked about the README's route with and without it, a
// session made by `sessions create` in the same store (the Cookie value it prints first), and a
// revoke. Only the ports differ from the README's, so that the test can run beside `make run`.
func TestReadmeNewcomerFlow(t *testing.T) {
	t.Setenv("EXTAUTHZ_REDIS_URL", "")
	t.Setenv("EXTAUTHZ_REDIS_PASSWORD", "")
	t.Setenv("SESSION_SECRET", "")
	readme := readmeSection(t, "## Try it in a minute")
	const createCmd = "./bin/extauthz apikey create --config examples/extauthz.yaml --owner alice"
	for _, want := range []string{"make run", createCmd, "./bin/extauthz sessions create --config examples/extauthz.yaml --user alice"} {
		if !strings.Contains(readme, want) {
			t.Fatalf("the README section no longer shows %q; update this test with it", want)
		}
	}
	// The route is the one the README curls, so that a change of example policy breaks here.
	m := regexp.MustCompile(`http://127\.0\.0\.1:9002(/\S+)`).FindAllStringSubmatch(readme, -1)
	if len(m) == 0 {
		t.Fatal("the README section curls nothing on 127.0.0.1:9002")
	}
	route := m[0][1]
	for _, mm := range m {
		if mm[1] != route {
			t.Fatalf("the README curls %s and %s: the test follows one route", route, mm[1])
		}
	}

	embedded := freeAddr(t)
	cfg := exampleCopy(t, embedded)
	args := strings.Fields(createCmd)[1:] // without ./bin/extauthz
	for i, a := range args {
		if a == "examples/extauthz.yaml" {
			args[i] = cfg
		}
	}

	// Before the sidecar runs, the command says to start it instead of failing obscurely.
	code, out, errOut := runCLI(t, args...)
	if code != 1 || !strings.Contains(errOut, "nothing answers at "+embedded) || !strings.Contains(errOut, "make run") || out != "" {
		t.Fatalf("create without a running sidecar: exit %d, stdout %q, stderr %q; want 1 and a hint to run make run", code, out, errOut)
	}

	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	if !strings.Contains(s.logs.String(), embedded) {
		t.Errorf("the sidecar's start-up log does not name the embedded store's address %s:\n%s", embedded, s.logs.String())
	}
	base := "http://" + s.httpAddr + route

	code, out, errOut = runCLI(t, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d, stderr %q", createCmd, code, errOut)
	}
	key := firstLine(out)
	if !strings.HasPrefix(key, "eak_") {
		t.Fatalf("create printed %q first, want the key (head -1 in the README)", key)
	}
	id := regexp.MustCompile(`created api key (k_\S+)`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("create did not name the key's id: %q", out)
	}

	// With the key: 200 and its identity, the README's "x-api-key-id: k_...".
	status, h, body := askHTTP(t, base, map[string]string{"x-api-key": key})
	if status != 200 || h.Get("x-api-key-id") != id[1] {
		t.Fatalf("with the key: %d, x-api-key-id %q, body %q; want 200 and %s", status, h.Get("x-api-key-id"), body, id[1])
	}
	if got := h.Get("RateLimit"); !strings.HasPrefix(got, "limit=100, remaining=99,") {
		t.Errorf("RateLimit = %q, want the api policy's 100 a minute, 99 left", got)
	}
	if h.Get("x-user-id") != "" {
		t.Errorf("a key caller got x-user-id %q", h.Get("x-user-id"))
	}
	// Without: 401, as the README says.
	status, _, body = askHTTP(t, base, nil)
	if status != 401 || !strings.Contains(body, `{"error":"authentication required"}`) {
		t.Fatalf("without a key: %d %q, want 401 and the README's body", status, body)
	}
	if strings.Contains(s.logs.String(), key) {
		t.Error("the sidecar logged the API key")
	}

	// The session, as the README makes it: `sessions create` writes a connect-redis session into
	// the running sidecar's store and prints the Cookie header's value first (head -1).
	sessArgs := []string{"sessions", "create", "--config", cfg, "--user", "alice"}
	code, out, errOut = runCLI(t, sessArgs...)
	if code != 0 {
		t.Fatalf("sessions create: exit %d, stderr %q", code, errOut)
	}
	cookieValue := firstLine(out)
	if !strings.HasPrefix(cookieValue, "connect.sid=s%3A") {
		t.Fatalf("sessions create printed %q first, want connect.sid=s%%3A... (the README sends it as Cookie: $COOKIE)", cookieValue)
	}
	name := "Cookie"
	status, h, body = askHTTP(t, base, map[string]string{name: cookieValue})
	if status != 200 || h.Get("x-user-id") != "alice" {
		t.Fatalf("with the session: %d, x-user-id %q, body %q; want 200 as alice", status, h.Get("x-user-id"), body)
	}
	if strings.Contains(s.logs.String(), cookieValue) {
		t.Error("the sidecar logged the session cookie")
	}
	// The same sid signed with another secret is refused.
	sid, err := url.QueryUnescape(strings.TrimPrefix(cookieValue, "connect.sid=s%3A"))
	if err != nil {
		t.Fatal(err)
	}
	sid, _, _ = strings.Cut(sid, ".")
	if status, _, _ = askHTTP(t, base, map[string]string{name: "connect.sid=" + signCookie(sid, "not-the-secret")}); status != 401 {
		t.Errorf("a cookie signed with another secret: %d, want 401", status)
	}

	// list shows the key, never the key itself; revoke makes the next request 401 (the
	// embedded store is not cached, so at once).
	listArgs := []string{"apikey", "list", "--config", cfg}
	if code, out, errOut = runCLI(t, listArgs...); code != 0 || !strings.Contains(out, id[1]) || !strings.Contains(out, "alice") || strings.Contains(out, key) {
		t.Fatalf("list: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut = runCLI(t, "apikey", "revoke", id[1], "--config", cfg); code != 0 {
		t.Fatalf("revoke: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if status, _, body = askHTTP(t, base, map[string]string{"x-api-key": key}); status != 401 {
		t.Fatalf("with the revoked key: %d %q, want 401", status, body)
	}
}
