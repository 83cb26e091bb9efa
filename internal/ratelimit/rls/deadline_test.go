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

// The service bounds the counter's call by Timeout, whatever the client: redisconn sets no
// deadline of its own. A caller's sooner deadline is kept.
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
		name   string
		callDL time.Duration // 0: no deadline on the caller's context
		atMost time.Duration
	}{
		{"bounded by the service", 0, timeout},
		{"caller's sooner deadline kept", 10 * time.Millisecond, 10 * time.Millisecond},
		{"caller's later deadline cut to Timeout", time.Second, timeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &deadlineCounter{}
			s := NewService(c, cfg, Options{Timeout: timeout})
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
			if !c.has {
				t.Fatal("counter's context has no deadline")
			}
			if c.deadline.After(end.Add(tc.atMost)) || c.deadline.Before(start.Add(tc.atMost)) {
				t.Errorf("counter's deadline is %v after the call started, want %v", c.deadline.Sub(start), tc.atMost)
			}
		})
	}
}
