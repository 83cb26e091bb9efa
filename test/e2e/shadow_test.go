package e2e

import (
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/redistest"
)

// A mode: shadow policy in the real binary: Envoy's Check is answered OK with the caller's
// identity (and none for a forged one), the would-be denials are on /metrics and in the
// decision log without a secret, and `extauthz explain` on the same config says what
// enforcing the policy would do.
func TestShadowPolicyEndToEnd(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "extauthz.yaml", fmt.Sprintf(`
redis: {url: %q, timeout: 2s}
sessions: {secrets: [s3cret], headers: {x-user-id: userId}, roles: role}
policies:
  - name: admin
    match: {path_prefix: /admin}
    auth: session
    roles: [admin]
    limits: [{name: per-user, requests: 5, window: 1m}]
    mode: shadow
`, r.URL()))
	sid := "e2e-shadow-session-0123456789"
	cookie := "connect.sid=" + writeSession(t, r, sid, "s3cret", map[string]any{"userId": "bob", "role": "viewer"})
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := dialCheck(t, s)

	resp := check(t, c, checkRequest("GET", "/admin/users", map[string]string{"cookie": cookie, "x-user-id": "root"}, ""))
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("viewer on a shadow admin policy: %v", resp)
	}
	if h, found := headerValue(ok.GetHeaders(), "x-user-id"); !found || h.GetHeader().GetValue() != "bob" {
		t.Fatalf("x-user-id = %v, want bob's (not the client's root)", h)
	}
	if got := resp.GetDynamicMetadata().GetFields()["would_deny"].GetStringValue(); got != "forbidden_role" {
		t.Fatalf("would_deny metadata %q", got)
	}
	resp = check(t, c, checkRequest("GET", "/admin/users", map[string]string{"x-user-id": "root"}, ""))
	if ok = resp.GetOkResponse(); ok == nil || len(ok.GetHeaders()) != 0 || !slices.Contains(ok.GetHeadersToRemove(), "x-user-id") {
		t.Fatalf("anonymous on a shadow admin policy: %v", resp)
	}

	_, metrics := s.get("/metrics")
	for _, want := range []string{
		`extauthz_would_deny_total{policy="admin",reason="forbidden_role"} 1`,
		`extauthz_would_deny_total{policy="admin",reason="unauthenticated"} 1`,
		`extauthz_authz_decisions_total{policy="admin",reason="shadow",result="allow"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	logs := s.logs.String()
	if !strings.Contains(logs, `"would_deny_reason":"forbidden_role"`) || !strings.Contains(logs, `"would_deny_reason":"unauthenticated"`) {
		t.Errorf("decision log lacks the would-be denials:\n%s", logs)
	}
	for _, secret := range []string{sid, cookie, "bob"} {
		if strings.Contains(logs, secret) || strings.Contains(metrics, secret) {
			t.Errorf("%q in the logs or metrics", secret)
		}
	}

	cmd := exec.Command(binPath, "explain", "--config", cfg, "--path", "/admin/users", "--cookie", cookie)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	for _, want := range []string{"identity: session bob", "roles      required one of admin; held viewer: MISSING",
		"count 0, remaining 5", "the decision ends before the limits are checked",
		"verdict    allow 200 shadow (shadow: enforcing the policy would deny: forbidden_role)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), sid) {
		t.Errorf("explain printed the session id:\n%s", out)
	}
}
