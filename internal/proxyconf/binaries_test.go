package proxyconf

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// lookPath returns the path of a proxy binary, skipping the test without it (test/e2e runs
// the proxies for real and insists on them under CI).
func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not on PATH", name)
	}
	return p
}

// renderVariants renders proxy for the configurations that change the output's shape.
func renderVariants(t *testing.T, proxy string) map[string]string {
	t.Helper()
	o := Options{Listen: "127.0.0.1:18080", Upstream: "127.0.0.1:13000", Extauthz: "127.0.0.1:19002", Admin: "off"}
	out := map[string]string{
		"default":   render(t, proxy, parseConfig(t, baseConfig), o),
		"x-real-ip": render(t, proxy, parseConfig(t, strings.Replace(baseConfig, "apikeys:\n", "apikeys:\n  keep_header: true\n", 1)+"client_ip_header: x-real-ip\n"), o),
	}
	o.Policy = "open"
	out["policy"] = render(t, proxy, parseConfig(t, baseConfig), o)
	return out
}

// TestNginxAcceptsTheConfig runs `nginx -t` on generated configurations.
func TestNginxAcceptsTheConfig(t *testing.T) {
	bin := lookPath(t, "nginx")
	for name, conf := range renderVariants(t, Nginx) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "-t", "-q", "-p", dir+"/", "-c", path, "-e", "stderr",
				"-g", "pid "+filepath.Join(dir, "nginx.pid")+"; error_log stderr;")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
			}
		})
	}
}

// TestCaddyAcceptsTheConfig adapts and validates generated Caddyfiles with `caddy adapt
// --validate`, which provisions every module without listening.
func TestCaddyAcceptsTheConfig(t *testing.T) {
	bin := lookPath(t, "caddy")
	for name, conf := range renderVariants(t, Caddy) {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "adapt", "--config", path, "--adapter", "caddyfile", "--validate")
			cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("caddy adapt --validate: %v\n%s\n%s", err, out, conf)
			}
		})
	}
}
