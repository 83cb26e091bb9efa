package rls_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/metrics/metricstest"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redistest"
)

// A caller's deadline (Envoy's ratelimit filter timeout, 20 ms by default, arriving as the
// call's grpc-timeout) against a Redis that does not answer is a timeout in the metrics and
// the gRPC code, never a cancellation; a caller that goes away is canceled. Both are real gRPC
// calls to a Redis stopped with SIGSTOP, through the redisconn client serve.go wires.
func TestCallerDeadlineIsTimeout(t *testing.T) {
	tests := []struct {
		name string
		// call makes the client's context: a 20 ms deadline, or a cancellation after 10 ms.
		call       func() (context.Context, context.CancelFunc)
		wantReason string
		wantCode   codes.Code
	}{
		{"20ms client deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, "timeout", codes.DeadlineExceeded},
		{"client cancels", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(10*time.Millisecond, cancel)
			return ctx, cancel
		}, "canceled", codes.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := redistest.Start(t)
			m := metrics.New()
			client := startPausable(t, r, m)
			// One answered call first, so that the gRPC connection is up when Redis stops. It
			// asks about an unlimited descriptor: a Redis call could exceed the 25 ms bound on
			// a busy host and leave an error series behind.
			warm := &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("health", "probe")}}
			if _, err := client.ShouldRateLimit(context.Background(), warm); err != nil {
				t.Fatalf("warm-up call: %v", err)
			}
			r.Pause()

			ctx, cancel := tt.call()
			defer cancel()
			_, err := client.ShouldRateLimit(ctx, reasonRequest())
			if got := status.Code(err); got != codes.DeadlineExceeded && got != codes.Canceled {
				t.Fatalf("call against a paused Redis: %v, want the client's deadline or cancellation", err)
			}
			// The client gives up before the server has recorded the call: wait for the
			// record, then read every series it wrote.
			series := waitSeries(t, m, `extauthz_rls_requests_total{code="`+tt.wantCode.String()+`",domain="edge"}`)
			wantErr := fmt.Sprintf(`extauthz_redis_errors_total{op="rls_fixed_window",reason=%q}`, tt.wantReason)
			if got := series[wantErr]; got != 1 {
				t.Errorf("%s = %v, want 1; series:\n%s", wantErr, got, metricstest.Dump(series))
			}
			for name := range series {
				if strings.HasPrefix(name, "extauthz_redis_errors_total") && name != wantErr {
					t.Errorf("unexpected %s; series:\n%s", name, metricstest.Dump(series))
				}
			}
		})
	}
}

// startPausable serves ShouldRateLimit over gRPC on a loopback port, counting on r through a
// redisconn client, and returns a client for it.
func startPausable(t *testing.T, r *redistest.Server, m *metrics.Metrics) rlsv3.RateLimitServiceClient {
	t.Helper()
	rc := newClient(t, r.URL())
	// Load the script and open the connection now, under a generous deadline, so that the
	// paused call is the only one that can fail.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ratelimit.NewFixedWindow(rc).Add(ctx, []ratelimit.Hit{{Key: "{warm}", Window: 60}}); err != nil {
		t.Fatalf("warm-up script: %v", err)
	}
	cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(testConfig)}})
	if err != nil {
		t.Fatal(err)
	}
	// The service's own bound is far beyond the client's 20 ms deadline and 10 ms cancel, so
	// that the caller always ends the paused call: with the sidecar's 25 ms a busy host (-race,
	// one CPU) can deliver the client's cancellation after our deadline, which is then rightly
	// a timeout, not what this test is about.
	svc := rls.NewService(ratelimit.NewFixedWindow(rc), cfg, rls.Options{Timeout: time.Second, Metrics: m})
	return serve(t, svc)
}

func reasonRequest() *rlsv3.RateLimitRequest {
	return &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user", "alice")}}
}

// waitSeries waits until the counter series want exists, then returns every counter series
// of m by its name and labels, as the Prometheus text format writes them. It gathers once
// more after want appears: Gather is no snapshot (it collects each vector apart), so the
// gather that found want may have missed a series written just before it.
func waitSeries(t *testing.T, m *metrics.Metrics, want string) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		series := metricstest.Counters(t, m.Registry)
		if _, ok := series[want]; ok {
			return metricstest.Counters(t, m.Registry)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 5s; series:\n%s", want, metricstest.Dump(series))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
