package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	rlcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/tracing/tracingtest"
)

const (
	checkSpanName = "envoy.service.auth.v3.Authorization/Check"
	rlsSpanName   = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

	// The trace context Envoy would send with the Check.
	envoyTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	envoySpanID  = "00f067aa0ba902b7"

	// Credentials the calls carry; none of them may reach a span.
	sessionID = "sid-must-not-be-exported"
	apiKey    = "eak_keymustnotbeexported0123456789"
)

// tracedConfig is a sidecar config on free loopback ports with the embedded store, one rate
// limit domain, sessions and an API policy, with tracing as given.
func tracedConfig(t *testing.T, tracing string) *config.Config {
	t.Helper()
	for _, k := range []string{config.EnvRedisURL, config.EnvRedisPassword, config.EnvGRPCAddr, config.EnvHTTPAddr,
		config.EnvAdminAddr, config.EnvSessionSecret, config.EnvOTLPEndpoint, config.EnvOTLPTracesEndpoint} {
		t.Setenv(k, "")
	}
	dir := t.TempDir()
	rlsDir := filepath.Join(dir, "rls.d")
	if err := os.Mkdir(rlsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	domain := "domain: edge\ndescriptors:\n  - key: remote_address\n    rate_limit: {unit: minute, requests_per_unit: 100}\n"
	if err := os.WriteFile(filepath.Join(rlsDir, "edge.yaml"), []byte(domain), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := `
listen: {grpc: 127.0.0.1:0, http: 127.0.0.1:0, admin: 127.0.0.1:0}
# A loaded -race run can stall the embedded store past the 25ms default; these tests are
# about spans, not deadlines.
redis: {timeout: 5s}
ratelimit: {config_dir: ` + rlsDir + `, watch: false}
sessions: {secrets: [test-secret], subject: userId}
policies:
  - {name: api, match: {path_prefix: /api/}, auth: any, limits: [{by: ip, requests: 100, window: 1m}]}
tracing: ` + tracing + "\n"
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startServe starts serve and returns the gRPC address and a stop function that ends it as
// SIGTERM would and waits for it to return. stop also runs at cleanup, so a test that fails
// early leaves no server (or exporter) behind for the next one.
func startServe(t *testing.T, cfg *config.Config) (string, func()) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	var serveErr error
	served := make(chan struct{})
	go func() {
		defer close(served)
		serveErr = serve(ctx, cfg, "", zap.New(core))
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-served:
				if serveErr != nil {
					t.Errorf("serve: %v", serveErr)
				}
			case <-time.After(20 * time.Second):
				t.Error("serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if l := logs.FilterMessage("extauthz listening").All(); len(l) > 0 {
			return l[0].ContextMap()["grpc"].(string), stop
		}
		select {
		case <-served:
			t.Fatalf("serve returned before listening: %v; logs %v", serveErr, logs.All())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not listen within 10s; logs %v", logs.All())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// callBoth makes one Check, carrying Envoy's traceparent and a request with a session cookie
// and an API key, and one ShouldRateLimit, over a real connection to addr.
func callBoth(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	cookie := "connect.sid=s%3A" + sessionID + ".c2lnbmF0dXJl"
	// Envoy sends the trace context as gRPC metadata; the credentials ride in the request.
	// They are sent as metadata too, to prove metadata is never recorded either.
	cctx := metadata.AppendToOutgoingContext(ctx,
		"traceparent", "00-"+envoyTraceID+"-"+envoySpanID+"-01",
		"cookie", cookie, "x-api-key", apiKey)
	resp, err := authv3.NewAuthorizationClient(conn).Check(cctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/orders", Host: "app.example", Scheme: "http",
			Headers: map[string]string{":authority": "app.example", "cookie": cookie, "x-api-key": apiKey, "authorization": "Bearer " + apiKey},
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus() == nil {
		t.Fatalf("Check answered without a status: %v", resp)
	}

	rl, err := rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
		Domain: "edge", HitsAddend: 1,
		Descriptors: []*rlcommonv3.RateLimitDescriptor{{Entries: []*rlcommonv3.RateLimitDescriptor_Entry{{Key: "remote_address", Value: "10.0.0.7"}}}},
	})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if rl.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("ShouldRateLimit = %v, want OK", rl.GetOverallCode())
	}
}

// TestServeTracing runs the sidecar with tracing on against an in-process OTLP collector,
// makes real calls and stops it: the final flush at shutdown must deliver both spans.
func TestServeTracing(t *testing.T) {
	col := tracingtest.Start(t)
	cfg := tracedConfig(t, "{enabled: true, endpoint: '"+col.Addr()+"', sample_ratio: 1}")
	addr, stop := startServe(t, cfg)
	callBoth(t, addr)
	stop()

	spans := col.Spans()
	check, rls := tracingtest.Find(spans, checkSpanName), tracingtest.Find(spans, rlsSpanName)
	if len(check) != 1 || len(rls) != 1 || len(spans) != 2 {
		t.Fatalf("spans %+v, want exactly one %s and one %s", spans, checkSpanName, rlsSpanName)
	}
	for _, s := range spans {
		if got := s.ResourceAttributes["service.name"]; got != "extauthz" {
			t.Errorf("%s: service.name = %q, want extauthz", s.Name, got)
		}
		if got := s.ResourceAttributes["service.version"]; got != version {
			t.Errorf("%s: service.version = %q, want %q", s.Name, got, version)
		}
	}
	if c := check[0]; c.TraceID != envoyTraceID || c.ParentSpanID != envoySpanID {
		t.Errorf("Check span in trace %s under %s, want Envoy's trace %s under span %s", c.TraceID, c.ParentSpanID, envoyTraceID, envoySpanID)
	}
	dump := col.Dump()
	if !strings.Contains(dump, checkSpanName) {
		t.Fatalf("the dump lacks the spans it should search:\n%s", dump)
	}
	for _, secret := range []string{sessionID, apiKey, "c2lnbmF0dXJl", "connect.sid", "10.0.0.7", "/api/orders"} {
		if strings.Contains(dump, secret) {
			t.Errorf("the exported spans contain %q:\n%s", secret, dump)
		}
	}
	tracingtest.NoOTelGoroutines(t)
}

// TestServeTracingOff: with tracing off nothing is installed, so a collector that is
// listening at the configured endpoint receives nothing and no OpenTelemetry code runs.
func TestServeTracingOff(t *testing.T) {
	p, err := startTracing(config.Default().Tracing, zap.NewNop())
	if err != nil || p != nil {
		t.Fatalf("startTracing(defaults) = %v, %v, want no provider", p, err)
	}
	if opts := p.GRPCServerOptions(); len(opts) != 0 {
		t.Fatalf("tracing off adds %d gRPC server options, want none", len(opts))
	}

	col := tracingtest.Start(t)
	cfg := tracedConfig(t, "{enabled: false, endpoint: '"+col.Addr()+"', sample_ratio: 1}")
	addr, stop := startServe(t, cfg)
	callBoth(t, addr)
	tracingtest.NoOTelGoroutines(t)
	stop()
	if spans := col.Spans(); len(spans) != 0 {
		t.Errorf("tracing off exported %d spans: %+v", len(spans), spans)
	}
}
