package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/config"
)

func TestConfigProxy(t *testing.T) {
	for _, env := range []string{config.EnvHTTPAddr, config.EnvSessionSecret} {
		t.Setenv(env, "")
	}
	dir := t.TempDir()
	cfg := writeTestFile(t, dir, "extauthz.yaml", `listen: {http: 127.0.0.1:9102}
trusted_proxies: [127.0.0.1/32]
sessions: {secrets: [s], headers: {x-user-id: userId}}
policies: [{name: app, match: {path_prefix: /}, auth: session}]
`)
	untrusting := writeTestFile(t, dir, "untrusting.yaml", "policies: [{name: app, auth: none}]\n")
	bad := writeTestFile(t, dir, "bad.yaml", "listen: {htp: 1}\n")

	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // a line the output must hold
		stderrHave string
	}{
		{name: "nginx", args: []string{"config", "nginx", "--config", cfg}, stdout: "server 127.0.0.1:9102;"},
		{name: "caddy with a policy", args: []string{"config", "caddy", "--config", cfg, "--policy", "app", "--listen", "127.0.0.1:8081"}, stdout: "uri /forward/app"},
		{name: "traefik", args: []string{"config", "traefik", "--config", cfg, "--upstream", "10.0.0.2:3000"}, stdout: `url: "http://10.0.0.2:3000"`},
		{name: "no trusted proxies", args: []string{"config", "nginx", "--config", untrusting}, stdout: "proxy_pass http://extauthz/nginx;", stderrHave: "sets no trusted_proxies"},
		{name: "an unknown policy", args: []string{"config", "nginx", "--config", cfg, "--policy", "admin"}, code: 1, stderrHave: `--policy "admin": no such policy`},
		{name: "an invalid config", args: []string{"config", "caddy", "--config", bad}, code: 1, stderrHave: "listen.htp"},
		{name: "no --config", args: []string{"config", "nginx"}, code: 2, stderrHave: "usage: extauthz config nginx|caddy|traefik"},
		{name: "--admin is Caddy's", args: []string{"config", "nginx", "--config", cfg, "--admin", "off"}, code: 2, stderrHave: "-admin"},
		{name: "an unknown proxy", args: []string{"config", "haproxy", "--config", cfg}, code: 2, stderrHave: "extauthz config validate --config FILE"},
		{name: "validate still works", args: []string{"config", "validate", "--config", cfg}, stdout: cfg + ": ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if tc.stdout != "" && !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out)
			}
			if tc.code != 0 && out != "" {
				t.Errorf("a failed run wrote to stdout: %q", out)
			}
			if tc.stderrHave != "" && !strings.Contains(errOut, tc.stderrHave) {
				t.Errorf("stderr lacks %q: %s", tc.stderrHave, errOut)
			}
			if tc.stderrHave == "" && errOut != "" {
				t.Errorf("stderr = %q, want nothing", errOut)
			}
		})
	}
}

// writeTestFile writes content to dir/name and returns its path.
func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
