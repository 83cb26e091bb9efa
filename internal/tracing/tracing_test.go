package tracing

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/extauthz/extauthz/internal/tracing/tracingtest"
)

const (
	checkSpan = "envoy.service.auth.v3.Authorization/Check"
	rlsSpan   = "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"

	// A W3C trace context as Envoy sends it, sampled.
	parentTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentSpanID  = "00f067aa0ba902b7"
	traceparent   = "00-" + parentTraceID + "-" + parentSpanID + "-01"
)

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{}, nil
}

type okLimits struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

func (okLimits) ShouldRateLimit(context.Context, *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// serve runs a gRPC server with opts and the two Envoy services plus health on a free
// loopback port, and returns a client connection to it and a function that stops both, as
// serve does before it flushes: a server span ends after the client has its answer, so
// only a stopped server guarantees that every span has ended.
func serve(t *testing.T, opts []grpc.ServerOption) (*grpc.ClientConn, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	authv3.RegisterAuthorizationServer(s, allowAll{})
	rlsv3.RegisterRateLimitServiceServer(s, okLimits{})
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			conn.Close()
			s.GracefulStop()
			<-done
		})
	}
	t.Cleanup(stop)
	return conn, stop
}

func newProvider(t *testing.T, endpoint string, ratio float64, log *zap.Logger) *Provider {
	t.Helper()
	p, err := New(Options{
		Endpoint: endpoint, Plaintext: true, SampleRatio: ratio,
		ServiceName: "extauthz", ServiceVersion: "v-test", Timeout: 5 * time.Second, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	// A test that fails early must not leave its exporter running into the next test's
	// goroutine check; a second Shutdown does nothing.
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	return p
}

// withMetadata returns a call context carrying the given metadata pairs.
func withMetadata(t *testing.T, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

func TestNilProviderInstallsNothing(t *testing.T) {
	var p *Provider
	if got := p.GRPCServerOptions(); len(got) != 0 {
		t.Errorf("GRPCServerOptions() of a nil Provider = %d options, want none", len(got))
	}
	if err := p.ForceFlush(context.Background()); err != nil {
		t.Errorf("ForceFlush() = %v", err)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no endpoint", Options{SampleRatio: 1, Timeout: time.Second}},
		{"ratio above one", Options{Endpoint: "127.0.0.1:4317", SampleRatio: 2, Timeout: time.Second}},
		{"no timeout", Options{Endpoint: "127.0.0.1:4317", SampleRatio: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p, err := New(tt.opts); err == nil {
				_ = p.Shutdown(context.Background())
				t.Fatal("New accepted the options")
			}
		})
	}
}

// TestExportsServerSpans runs real calls through a traced gRPC server and checks what a real
// collector receives.
func TestExportsServerSpans(t *testing.T) {
	col := tracingtest.Start(t)
	p := newProvider(t, col.Addr(), 1, nil)
	conn, stop := serve(t, p.GRPCServerOptions())

	const cookie, apiKey = "connect.sid=s%3Asecret-session-id.sig", "eak_supersecretkey"
	ctx := withMetadata(t, "traceparent", traceparent, "cookie", cookie, "x-api-key", apiKey, "authorization", "Bearer "+apiKey)
	_, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/api/x", Headers: map[string]string{"cookie": cookie, "x-api-key": apiKey},
		}},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	_, err = rlsv3.NewRateLimitServiceClient(conn).ShouldRateLimit(withMetadata(t), &rlsv3.RateLimitRequest{
		Domain: "edge", HitsAddend: 1,
	})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(withMetadata(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health Check: %v", err)
	}
	stop()

	if err := p.ForceFlush(withMetadata(t)); err != nil {
		t.Fatal(err)
	}
	spans := col.Wait(func(s []tracingtest.Span) bool { return len(s) >= 2 }, 5*time.Second)
	if len(spans) != 2 {
		t.Fatalf("got %d spans %+v, want Check and ShouldRateLimit only (health checks are not traced)", len(spans), spans)
	}
	check, rls := tracingtest.Find(spans, checkSpan), tracingtest.Find(spans, rlsSpan)
	if len(check) != 1 || len(rls) != 1 {
		t.Fatalf("spans %+v, want one %s and one %s", spans, checkSpan, rlsSpan)
	}
	for _, s := range spans {
		if s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("%s: kind %v, want server", s.Name, s.Kind)
		}
		if got := s.ResourceAttributes["service.name"]; got != "extauthz" {
			t.Errorf("%s: service.name = %q, want extauthz", s.Name, got)
		}
		if got := s.ResourceAttributes["service.version"]; got != "v-test" {
			t.Errorf("%s: service.version = %q, want v-test", s.Name, got)
		}
		if got := s.Attributes["rpc.response.status_code"]; got != "OK" {
			t.Errorf("%s: rpc.response.status_code = %q, want OK (attributes %v)", s.Name, got, s.Attributes)
		}
	}
	if c := check[0]; c.TraceID != parentTraceID || c.ParentSpanID != parentSpanID {
		t.Errorf("Check span trace %s parent %s, want the caller's trace %s and span %s", c.TraceID, c.ParentSpanID, parentTraceID, parentSpanID)
	}
	if r := rls[0]; r.TraceID == parentTraceID || r.ParentSpanID != "" {
		t.Errorf("ShouldRateLimit span without a trace context: trace %s parent %q, want a new root", r.TraceID, r.ParentSpanID)
	}
	dump := col.Dump()
	if !strings.Contains(dump, checkSpan) {
		t.Fatalf("the dump lacks the spans it should search:\n%s", dump)
	}
	for _, secret := range []string{"secret-session-id", "supersecretkey", "connect.sid", "Bearer"} {
		if strings.Contains(dump, secret) {
			t.Errorf("the exported spans contain %q:\n%s", secret, dump)
		}
	}

	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	tracingtest.NoOTelGoroutines(t)
}

// TestFollowsCallerSampling: with a ratio of 0 the sidecar starts no trace of its own, yet a
// caller's sampled trace is still recorded and its unsampled one is not (parent-based).
func TestFollowsCallerSampling(t *testing.T) {
	col := tracingtest.Start(t)
	p := newProvider(t, col.Addr(), 0, nil)
	conn, stop := serve(t, p.GRPCServerOptions())
	rls := rlsv3.NewRateLimitServiceClient(conn)

	const unsampledTrace = "0af7651916cd43dd8448eb211c80319c"
	const b3Trace = "80f198ee56343ba864fe8b2a57d3eff7"
	calls := []context.Context{
		withMetadata(t),
		withMetadata(t, "traceparent", "00-"+unsampledTrace+"-b7ad6b7169203331-00"),
		withMetadata(t, "traceparent", traceparent),
		// Envoy's Zipkin tracer sends B3 instead.
		withMetadata(t, "b3", b3Trace+"-e457b5a2e4d86bd1-1"),
	}
	for i, ctx := range calls {
		if _, err := rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "edge"}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	stop()
	if err := p.ForceFlush(withMetadata(t)); err != nil {
		t.Fatal(err)
	}
	spans := col.Wait(func(s []tracingtest.Span) bool { return len(s) >= 2 }, 5*time.Second)
	time.Sleep(100 * time.Millisecond) // room for a wrong extra span to show up
	spans = col.Spans()
	got := map[string]bool{}
	for _, s := range spans {
		got[s.TraceID] = true
	}
	if len(spans) != 2 || !got[parentTraceID] || !got[b3Trace] {
		t.Fatalf("exported traces %v, want exactly the caller-sampled %s (W3C) and %s (B3)", got, parentTraceID, b3Trace)
	}
}

// TestCollectorDown: a collector that is not there never fails or slows a call; the failed
// export is logged and Shutdown returns within the timeout.
func TestCollectorDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()

	core, logs := observer.New(zap.WarnLevel)
	p, err := New(Options{Endpoint: dead, Plaintext: true, SampleRatio: 1, ServiceName: "extauthz", Timeout: 300 * time.Millisecond, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) })
	conn, stop := serve(t, p.GRPCServerOptions())
	start := time.Now()
	if _, err := authv3.NewAuthorizationClient(conn).Check(withMetadata(t), &authv3.CheckRequest{}); err != nil {
		t.Fatalf("Check with the collector down: %v", err)
	}
	// The bound is loose for loaded -race runs: the call never touches the exporter at all.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Check took %v with the collector down", d)
	}
	stop()
	start = time.Now()
	_ = p.Shutdown(context.Background())
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v, want about the 300ms timeout", d)
	}
	// Shutdown returns at its deadline; the export it gave up on ends at the same timeout
	// and logs then, so the goroutine check comes first.
	tracingtest.NoOTelGoroutines(t)
	if n := logs.FilterMessage("trace export failed, spans dropped").Len(); n == 0 {
		t.Errorf("no export failure logged; logs: %v", logs.All())
	}
}
