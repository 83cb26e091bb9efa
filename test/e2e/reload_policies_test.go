package e2e

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// SIGHUP re-reads the config file's policies; a broken file keeps the running ones.
func TestSIGHUPReloadsPolicies(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	base := fmt.Sprintf("redis: {url: %q, timeout: 2s}\npolicies:\n  - {name: health, match: {path_prefix: /healthz}, auth: none}\n", r.URL())
	cfg := writeFile(t, dir, "extauthz.yaml", base)
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := dialCheck(t, s)

	if resp := check(t, c, checkRequest("GET", "/new/x", nil, "")); resp.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Fatalf("before reload: %v, want 403 (no policy)", resp)
	}
	writeFile(t, dir, "extauthz.yaml", base+"  - {name: new, match: {path_prefix: /new/}, auth: none}\n")
	s.signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for check(t, c, checkRequest("GET", "/new/x", nil, "")).GetOkResponse() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the new policy never took effect\n%s", s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	writeFile(t, dir, "extauthz.yaml", base+"  - {name: new, auth: sometimes}\n")
	s.signal(syscall.SIGHUP)
	time.Sleep(300 * time.Millisecond)
	if check(t, c, checkRequest("GET", "/new/x", nil, "")).GetOkResponse() == nil {
		t.Fatal("a broken file replaced the running policies")
	}
}
