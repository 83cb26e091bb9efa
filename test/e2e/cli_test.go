package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "extauthz ") {
		t.Fatalf("version: exit %d, output %q", code, out)
	}
}

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	rlsDir := t.TempDir()
	writeFile(t, rlsDir, "mesh.yaml", perMinute100)
	good := writeFile(t, dir, "good.yaml", "listen: {grpc: 127.0.0.1:7001}\nratelimit: {config_dir: "+rlsDir+"}\n")
	code, out, errOut := runCLI(t, "config", "validate", "--config", good)
	if code != 0 {
		t.Fatalf("valid config: exit %d, stderr %s", code, errOut)
	}
	if !strings.Contains(out, "ok") {
		t.Fatalf("valid config: stdout %q", out)
	}

	bad := writeFile(t, dir, "bad.yaml", "listen:\n  grcp: 127.0.0.1:7001\nredis:\n  timeout: -5ms\nresponse_headers: draft-9\n")
	code, _, errOut = runCLI(t, "config", "validate", "--config", bad)
	if code != 1 {
		t.Fatalf("invalid config: exit %d, want 1", code)
	}
	for _, want := range []string{"listen.grcp", "redis.timeout", "response_headers"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("invalid config: the output does not name %q:\n%s", want, errOut)
		}
	}

	badRLS := t.TempDir()
	writeFile(t, badRLS, "x.yaml", "domain: x\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n")
	cfg := writeFile(t, dir, "rls.yaml", "ratelimit: {config_dir: "+badRLS+"}\n")
	code, _, errOut = runCLI(t, "config", "validate", "--config", cfg)
	if code != 1 || !strings.Contains(errOut, "x.yaml:4") {
		t.Fatalf("invalid rls dir: exit %d, stderr %s", code, errOut)
	}

	if code, _, _ := runCLI(t, "config", "validate"); code == 0 {
		t.Fatal("validate without --config must fail")
	}
	if code, _, _ := runCLI(t, "frobnicate"); code == 0 {
		t.Fatal("an unknown command must fail")
	}
}

// With no Redis URL anywhere, serve runs on the embedded store, warns loudly, and answers.
func TestServeEmbeddedWithFlagsOnly(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	s := startSidecar(t, "--rls-config-dir", dir)
	s.waitReady()
	if !strings.Contains(s.logs.String(), "NOT shared between replicas") {
		t.Fatalf("no embedded-store warning in the logs:\n%s", s.logs.String())
	}
	c := s.dial()
	for i := 1; i <= 3; i++ {
		resp, err := c.ShouldRateLimit(context.Background(), rlsRequest("mesh", "user", "carol"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.Statuses[0].LimitRemaining, uint32(100-i); got != want {
			t.Fatalf("request %d: remaining = %d, want %d", i, got, want)
		}
	}

	// gRPC health reports SERVING once ready.
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	h, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}

	// Admin endpoints: metrics without descriptor values; pprof only with admin.pprof.
	code, body := s.get("/metrics")
	if code != 200 || !strings.Contains(body, `extauthz_rls_requests_total{code="OK",domain="mesh"}`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if strings.Contains(body, "carol") {
		t.Fatal("a descriptor value leaked into the metrics")
	}
	if code, _ := s.get("/debug/pprof/"); code != 404 || !isLoopbackAddr(s.adminAddr) {
		t.Fatalf("/debug/pprof/ without admin.pprof = %d, want 404", code)
	}
}
