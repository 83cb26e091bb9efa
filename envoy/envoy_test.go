package envoy_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
)

// extauthzConfig is the extauthz config the Envoy configs run beside. Its ratelimit.config_dir
// is relative to the working directory, which for `go test` is this directory.
const extauthzConfig = "extauthz.yaml"

// wantConfigs are the Envoy configs that must exist, so that a rename cannot turn TestConfigs
// into a test of nothing.
var wantConfigs = []string{"front-proxy.yaml", "http-service.yaml", "sidecar.yaml"}

// loadSide loads extauthz.yaml exactly as `extauthz serve` would, without the environment (so
// that EXTAUTHZ_* variables of the machine running the tests change nothing), and its rate
// limit directory.
func loadSide(t *testing.T) extauthzSide {
	t.Helper()
	cfg, err := config.LoadWith(extauthzConfig, func(string) string { return "" }, nil)
	if err != nil {
		t.Fatalf("%s: %v", extauthzConfig, err)
	}
	if cfg.RateLimit.ConfigDir == "" {
		t.Fatalf("%s: ratelimit.config_dir is empty; the Envoy configs use the rate limit service", extauthzConfig)
	}
	domains, err := rls.LoadDir(cfg.RateLimit.ConfigDir)
	if err != nil {
		t.Fatalf("%s: ratelimit.config_dir: %v", extauthzConfig, err)
	}
	side := extauthzSide{cfg: cfg, policies: map[string]bool{}, rls: domains}
	for _, p := range cfg.Policies {
		side.policies[p.Name] = true
	}
	side.grpcPort = port(t, "listen.grpc", cfg.Listen.GRPC)
	side.httpPort = port(t, "listen.http", cfg.Listen.HTTP)
	return side
}

func port(t *testing.T, field, addr string) uint32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %s: %v", extauthzConfig, field, err)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		t.Fatalf("%s: %s %q: the Envoy configs need a fixed port", extauthzConfig, field, addr)
	}
	return uint32(n)
}

// envoyConfigs returns the name and parsed tree of every YAML file here that is an Envoy
// bootstrap (has static_resources); extauthz.yaml and rls.d/ are not.
func envoyConfigs(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]any{}
	for _, f := range files {
		tree := parseFile(t, f)
		if m, ok := tree.(map[string]any); ok && m["static_resources"] != nil {
			out[f] = tree
		}
	}
	for _, f := range wantConfigs {
		if _, ok := out[f]; !ok {
			t.Errorf("%s: missing, or not an Envoy bootstrap with static_resources", f)
		}
	}
	return out
}

func parseFile(t *testing.T, name string) any {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := parseYAML(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return tree
}

// check runs every check on one parsed config and joins the problems.
func check(tree any, side extauthzSide) error {
	b, err := decodeBootstrap(tree)
	if err != nil {
		return err
	}
	nodes, err := messages(b)
	if err != nil {
		return err
	}
	errs := validate(nodes)
	errs = append(errs, wiring(b, nodes, side)...)
	return errors.Join(errs...)
}

func TestExtauthzConfig(t *testing.T) {
	side := loadSide(t)
	if len(side.policies) == 0 {
		t.Errorf("%s: no policies, so routes have none to name", extauthzConfig)
	}
	if got, want := side.rls.Domains(), []string{"edge"}; !reflect.DeepEqual(got, want) {
		t.Errorf("%s: rate limit domains %v, want %v", extauthzConfig, got, want)
	}
}

func TestConfigs(t *testing.T) {
	side := loadSide(t)
	configs := envoyConfigs(t)
	names := make([]string, 0, len(configs))
	for name := range configs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if err := check(configs[name], side); err != nil {
				t.Errorf("%s:\n%v", name, err)
			}
		})
	}
}

// TestUnquotedOFF shows the YAML trap the configs comment on: Envoy's loader reads a plain OFF
// as false, which an enum field rejects, so "OFF" must stay quoted.
func TestUnquotedOFF(t *testing.T) {
	data, err := os.ReadFile("sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	quoted := []byte(`enable_x_ratelimit_headers: "OFF"`)
	if !bytes.Contains(data, quoted) {
		t.Fatalf("sidecar.yaml has no %s line to unquote", quoted)
	}
	tree, err := parseYAML(bytes.Replace(data, quoted, []byte("enable_x_ratelimit_headers: OFF"), 1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = decodeBootstrap(tree)
	if err == nil || !strings.Contains(err.Error(), "enableXRatelimitHeaders") {
		t.Errorf("decode with a plain OFF: got %v, want an enable_x_ratelimit_headers error", err)
	}
}

// TestValidateAllStopsAtAny shows why validate unpacks every Any: the Bootstrap's own
// ValidateAll accepts a filter config that the filter's ValidateAll rejects.
func TestValidateAllStopsAtAny(t *testing.T) {
	tree := parseFile(t, "http-service.yaml")
	obj(t, tree, "static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config",
		"http_filters", 1, "typed_config", "http_service", "server_uri")["timeout"] = "-1s"
	b, err := decodeBootstrap(tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("Bootstrap.ValidateAll: %v; this test assumes it does not look inside typed_config", err)
	}
	nodes, err := messages(b)
	if err != nil {
		t.Fatal(err)
	}
	if errs := validate(nodes); len(errs) == 0 {
		t.Error("validate accepted a negative http_service timeout")
	}
}

// TestEnvoyYAMLScalars pins the scalar rules of parseYAML to those of Envoy's loader.
func TestEnvoyYAMLScalars(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{"OFF", false},
		{"Off", false},
		{`"OFF"`, "OFF"},
		{"on", true},
		{"Yes", true},
		{"y", true},
		{"N", false},
		{"yEs", "yEs"},
		{"true", true},
		{"9001", int64(9001)},
		{"-3", int64(-3)},
		{"0.25", 0.25},
		{"0.2s", "0.2s"},
		{"'9001'", "9001"},
		{"~", nil},
		{"null", nil},
		{"V3", "V3"},
		{"inf", "inf"},
		{"POST|PUT", "POST|PUT"},
	}
	for _, tt := range tests {
		got, err := parseYAML([]byte("v: " + tt.in))
		if err != nil {
			t.Errorf("%s: %v", tt.in, err)
			continue
		}
		if got := got.(map[string]any)["v"]; !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %#v, want %#v", tt.in, got, tt.want)
		}
	}
	if _, err := parseYAML([]byte("a: 1\na: 2\n")); err == nil {
		t.Error("duplicate key accepted")
	}
}

// TestEnvoyValidate runs Envoy's own config validation when an envoy binary is installed. Debian
// does not package Envoy, so this usually skips; the decoding tests above cover the API.
func TestEnvoyValidate(t *testing.T) {
	bin, err := exec.LookPath("envoy")
	if err != nil {
		t.Skip("envoy not found in PATH (not packaged for Debian bookworm); skipping envoy --mode validate")
	}
	names := make([]string, 0)
	for name := range envoyConfigs(t) {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", name,
				"--disable-hot-restart", "--log-level", "warn")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Errorf("envoy --mode validate -c %s: %v\n%s", name, err, out.String())
			}
		})
	}
}
