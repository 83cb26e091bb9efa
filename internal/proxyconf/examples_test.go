package proxyconf

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/extauthz/extauthz/internal/config"
)

// exampleConfig is the sidecar config the shipped proxy examples are generated from.
const exampleConfig = "examples/extauthz.yaml"

// examples are the shipped proxy configurations and the options they are generated with:
// placeholders that test/e2e/proxy_test.go fills. `make examples` runs the same commands.
var examples = []struct {
	proxy, file string
	o           Options
}{
	{Nginx, "examples/nginx/nginx.conf", Options{Listen: "{{LISTEN}}", Upstream: "{{UPSTREAM}}", Extauthz: "{{EXTAUTHZ_HTTP}}"}},
	{Caddy, "examples/caddy/Caddyfile", Options{Listen: "{{LISTEN}}", Upstream: "{{UPSTREAM}}", Extauthz: "{{EXTAUTHZ_HTTP}}", Bind: "{{BIND}}", Admin: "{{ADMIN}}"}},
	{Traefik, "examples/traefik/dynamic.yaml", Options{Listen: "{{LISTEN}}", Upstream: "{{UPSTREAM}}", Extauthz: "{{EXTAUTHZ_HTTP}}"}},
}

// loadExampleConfig loads examples/extauthz.yaml without the environment's overrides.
func loadExampleConfig(t *testing.T) *config.Config {
	t.Helper()
	for _, env := range []string{config.EnvHTTPAddr, config.EnvGRPCAddr, config.EnvAdminAddr, config.EnvRedisURL, config.EnvSessionSecret} {
		t.Setenv(env, "")
	}
	cfg, err := config.Load("../../" + exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestExamplesAreGenerated fails when a shipped proxy example is not exactly what the
// generator writes for examples/extauthz.yaml, so the examples cannot drift from the config
// or from the generator. Run `make examples` to write them again.
func TestExamplesAreGenerated(t *testing.T) {
	cfg := loadExampleConfig(t)
	for _, ex := range examples {
		t.Run(ex.proxy, func(t *testing.T) {
			o := ex.o
			o.ConfigName = exampleConfig
			var want bytes.Buffer
			if err := Render(&want, ex.proxy, cfg, o); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile("../../" + ex.file)
			if err != nil {
				t.Fatalf("%v (run `make examples`)", err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Errorf("%s is not what `%s` writes: run `make examples`\n%s", ex.file, command(ex.proxy, &view{Options: o}), firstDiff(got, want.Bytes()))
			}
		})
	}
}

// firstDiff describes the first line where got and want differ.
func firstDiff(got, want []byte) string {
	g, w := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl []byte
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if !bytes.Equal(gl, wl) {
			return fmt.Sprintf("line %d:\n  file:      %s\n  generated: %s", i+1, gl, wl)
		}
	}
	return "(same lines)"
}
