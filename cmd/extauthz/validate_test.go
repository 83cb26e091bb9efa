package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// config validate runs what serve runs before it listens: a file that validates starts, and one
// that serve would reject fails validation with the same reason.
func TestValidateRunsTheServersChecks(t *testing.T) {
	for _, tt := range []struct {
		name, yaml, want string
	}{
		{"a limit the limiter cannot hold", "policies:\n  - {name: p, auth: none, limits: [{by: ip, requests: 4000000000000000, window: 1m, algorithm: sliding}]}\n", "policies[0].limits[0]"},
		{"a redis url the parser rejects", "redis: {url: 'redis://r:6379?db=2'}\n", "redis.url: parameter \"db\" is not supported"},
		{"a tls file the client cannot read", "redis: {url: 'rediss-cluster://r1,r2', tls: {ca_file: /nonexistent/ca.pem}}\n", "/nonexistent/ca.pem"},
		{"a sentinel url", "redis: {url: 'redis-sentinel://s1,s2:26380/mymaster/2?sentinel_password=x'}\n", ""},
		{"a cluster url", "redis: {url: 'redis-cluster://n1:7000,n2:7001'}\n", ""},
		{"a missing rate limit directory", "ratelimit: {config_dir: /nonexistent/rls.d}\n", "ratelimit.config_dir"},
		{"valid", "trusted_proxies: [127.0.0.1/32]\npolicies: [{name: p, auth: none}]\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var out, errOut bytes.Buffer
			code := run([]string{"config", "validate", "--config", path}, &out, &errOut)
			if tt.want == "" {
				if code != 0 {
					t.Fatalf("exit %d: %s", code, errOut.String())
				}
				return
			}
			if code != 1 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 naming %q", code, errOut.String(), tt.want)
			}
			// serve refuses the same file before it listens.
			errOut.Reset()
			if code := run([]string{"serve", "--config", path, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"}, &out, &errOut); code != 1 ||
				!strings.Contains(errOut.String(), "invalid configuration") {
				t.Fatalf("serve exit %d: %s", code, errOut.String())
			}
		})
	}
}
