package rls

import (
	"context"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// deadlineCounter records the deadline of the context each Add gets.
type deadlineCounter struct {
	constCounter
	deadline time.Time
	has      bool
}

func (d *deadlineCounter) Add(ctx context.Context, hits []ratelimit.Hit) (ratelimit.FixedWindowResult, error) {
	d.deadline, d.has = ctx.Deadline()
	return d.constCounter.Add(ctx, hits)
}

// The service bounds the counter's call by Timeout, unless the counter's client bounds every
// call itself (CounterBounded), in which case the caller's context goes through unchanged.
func TestCounterCallDeadline(t *testing.T) {
	cfg, err := Parse([]File{{Name: "d.yaml", Data: []byte("domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: minute, requests_per_unit: 10}}\n")}})
	if err != nil {
		t.Fatal(err)
	}
	req := &rlsv3.RateLimitRequest{Domain: "d", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}},
	}}
	const timeout = 40 * time.Millisecond
	for _, tc := range []struct {
		name    string
		bounded bool
		callDL  time.Duration // 0: no deadline on the caller's context
		wantDL  bool
		atMost  time.Duration
	}{
		{"bounded by the service", false, 0, true, timeout},
		{"caller's sooner deadline kept", false, 10 * time.Millisecond, true, 10 * time.Millisecond},
		{"client bounds its calls", true, 0, false, 0},
		{"client bounds, caller's deadline passed through", true, time.Second, true, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &deadlineCounter{}
			s := NewService(c, cfg, Options{Timeout: timeout, CounterBounded: tc.bounded})
			start := time.Now()
			ctx := context.Background()
			if tc.callDL > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.callDL)
				defer cancel()
			}
			if _, err := s.ShouldRateLimit(ctx, req); err != nil {
				t.Fatal(err)
			}
			end := time.Now()
			if c.has != tc.wantDL {
				t.Fatalf("counter's context has a deadline: %v, want %v", c.has, tc.wantDL)
			}
			if tc.wantDL && (c.deadline.After(end.Add(tc.atMost)) || c.deadline.Before(start.Add(tc.atMost))) {
				t.Errorf("counter's deadline is %v after the call started, want %v", c.deadline.Sub(start), tc.atMost)
			}
		})
	}
}
