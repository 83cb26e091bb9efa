package authz

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/metrics/metricstest"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
)

const closedLimitsConfig = `
policies:
  - name: limited
    match: {path_prefix: /}
    auth: none
    limits: [{by: ip, requests: 100, window: 1m}]
    failure: {limits: closed}
`

// A Check whose caller's deadline (Envoy's ext_authz timeout, sent as the gRPC deadline)
// passes while Redis does not answer is a timeout in the metrics and the decision log; a
// caller that goes away is canceled. Real gRPC calls, a Redis stopped with SIGSTOP, the
// sidecar's one Redis client.
func TestCheckCallerDeadlineIsTimeout(t *testing.T) {
	tests := []struct {
		name       string
		call       func() (context.Context, context.CancelFunc)
		wantReason string
	}{
		{"20ms client deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 20*time.Millisecond)
		}, "timeout"},
		{"client cancels", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(10*time.Millisecond, cancel)
			return ctx, cancel
		}, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := redistest.Start(t)
			m := metrics.New()
			core, logs := observer.New(zapcore.InfoLevel)
			c := checkClient(t, pausableEngine(t, r, m, zap.New(core)))
			req := checkRequest("GET", "/x", nil, nil)
			// One answered call first, so the connection is up when Redis stops. On a loaded
			// machine a call may miss redis.timeout's 25 ms, so it is retried; the decisions
			// of the warm-up are then taken out of what is asserted below.
			for i := 0; ; i++ {
				resp, err := c.Check(context.Background(), req)
				if err == nil && resp.GetStatus().GetCode() == int32(code.Code_OK) {
					break
				}
				if i == 20 {
					t.Fatalf("warm-up call: %v %v", resp.GetStatus(), err)
				}
			}
			logs.TakeAll()
			before := metricstest.Counters(t, m.Registry)
			r.Pause()

			ctx, cancel := tt.call()
			defer cancel()
			// The answer, when it beats the client's own timer, is an error_response.
			if resp, err := c.Check(ctx, req); err == nil && resp.GetStatus().GetCode() != int32(code.Code_UNAVAILABLE) {
				t.Fatalf("Check against a paused Redis: %v, want the client's deadline or cancellation, or UNAVAILABLE", resp.GetStatus())
			}
			// The client gives up before the server has decided: wait for the decision
			// log line, which is written after every metric of the decision.
			entry := waitErrorLog(t, logs)
			if got := entry.ContextMap()["backend"]; got != tt.wantReason {
				t.Errorf("decision log backend = %v, want %q", got, tt.wantReason)
			}
			series := metricstest.Counters(t, m.Registry)
			wantErr := fmt.Sprintf(`extauthz_redis_errors_total{op="policy_limits",reason=%q}`, tt.wantReason)
			for name, want := range map[string]float64{
				wantErr: 1,
				`extauthz_authz_decisions_total{policy="limited",reason="backend_error",result="error"}`: 1,
			} {
				if got := series[name] - before[name]; got != want {
					t.Errorf("%s went up by %v, want %v; series:\n%s", name, got, want, metricstest.Dump(series))
				}
			}
			for name := range series {
				if strings.HasPrefix(name, "extauthz_redis_errors_total") && name != wantErr && series[name] != before[name] {
					t.Errorf("unexpected %s; series:\n%s", name, metricstest.Dump(series))
				}
			}
		})
	}
}

// pausableEngine builds an Engine on closedLimitsConfig whose limiter counts on r through the
// sidecar's client, wrapped in a Guard as serve.go does, with redis.timeout's default.
func pausableEngine(t *testing.T, r *redistest.Server, m *metrics.Metrics, log *zap.Logger) *Engine {
	t.Helper()
	rc := redisClient(t, r)
	cfg, err := config.Parse("t.yaml", []byte(closedLimitsConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Sessions:        fakeSessions{},
		Keys:            fakeKeys{},
		Limiter:         ratelimit.NewGuard(ratelimit.NewLimiter(rc), ratelimit.GuardOptions{Size: 1000}),
		Timeout:         rc.Timeout(),
		Metrics:         m,
		Logger:          log,
		DecisionDenials: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// waitErrorLog waits for the one decision log line with verdict error.
func waitErrorLog(t *testing.T, logs *observer.ObservedLogs) observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries := logs.FilterMessage("decision").FilterField(zap.String("verdict", "error")).All()
		if len(entries) > 1 {
			t.Fatalf("%d error decision log lines, want 1", len(entries))
		}
		if len(entries) == 1 {
			return entries[0]
		}
		if time.Now().After(deadline) {
			t.Fatal("no error decision logged within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
