package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/redistest"
)

// The sidecar starts while nothing listens at redis.url, as an ioredis client with
// lazyConnect does: it serves what needs no Redis (an unknown rate limit domain, a policy
// with auth: none and no limits), answers what needs Redis with a fast Unavailable, reports
// not ready on /readyz and gRPC health, and becomes ready by itself once a redis-server
// starts on that port, with no restart.
func TestStartsWithoutRedis(t *testing.T) {
	port := redistest.FreePort(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf(`
redis: {url: "redis://127.0.0.1:%d/0"}
ratelimit: {config_dir: %q}
policies:
  - name: public
    match: {path_prefix: /public/}
    auth: none
`, port, dir))
	s := startSidecar(t, "--config", cfg)
	rls := s.dial()
	authz := dialCheck(t, s)
	health := dialHealth(t, s)
	ctx := context.Background()

	// Not ready: /readyz runs the Redis ping itself, and gRPC health follows the same check.
	if code, body := s.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without Redis = %d %q, want 503", code, body)
	}
	if got := healthStatus(t, health); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health without Redis = %v, want NOT_SERVING", got)
	}

	// What needs no Redis is served.
	resp, err := rls.ShouldRateLimit(ctx, rlsRequest("no-such-domain", "user", "alice"))
	if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("unknown domain without Redis: %v %v, want OK", resp, err)
	}
	if got := check(t, authz, checkRequest("GET", "/public/page", nil, "")); got.GetStatus().GetCode() != int32(codes.OK) || got.GetOkResponse() == nil {
		t.Fatalf("auth: none policy without Redis: %v, want allowed", got)
	}
	// What needs Redis fails fast, for Envoy's failure mode to decide.
	start := time.Now()
	if _, err := rls.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "alice")); status.Code(err) != codes.Unavailable {
		t.Fatalf("limited domain without Redis: %v, want Unavailable", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("limited domain without Redis answered in %v, want about redis.timeout", took)
	}

	redistest.StartOn(t, port)
	up := time.Now()
	const within = 5 * time.Second
	for {
		code, _ := s.get("/readyz")
		if code == http.StatusOK && healthStatus(t, health) == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if exited(s) {
			t.Fatalf("extauthz exited while waiting for Redis:\n%s", s.logs.String())
		}
		if time.Since(up) > within {
			t.Fatalf("not ready %v after Redis started (/readyz %d)\n%s", within, code, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready %v after redis-server started on port %d", time.Since(up).Round(time.Millisecond), port)

	resp, err = rls.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "alice"))
	if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetLimitRemaining() != 99 {
		t.Fatalf("limited domain once Redis is up: %v %v, want OK with 99 remaining", resp, err)
	}
	if exited(s) {
		t.Fatalf("extauthz restarted or exited:\n%s", s.logs.String())
	}
}

// dialHealth opens a gRPC health client to the sidecar.
func dialHealth(t *testing.T, s *sidecar) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", s.grpcAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// healthStatus asks the gRPC health service about the whole server ("").
func healthStatus(t *testing.T, c healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("gRPC health check: %v", err)
	}
	return resp.GetStatus()
}

// exited reports whether the sidecar process has ended.
func exited(s *sidecar) bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}
