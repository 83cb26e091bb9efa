package rls

import (
	"context"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// constCounter answers every Add with count 1 and no I/O, so that the benchmark measures the
// service's own work: matching, keys, the response and its headers, metrics.
type constCounter struct{}

func (constCounter) Add(_ context.Context, hits []ratelimit.Hit) (ratelimit.FixedWindowResult, error) {
	counts := make([]uint64, len(hits))
	for i := range counts {
		counts[i] = 1
	}
	return ratelimit.FixedWindowResult{Now: time.Unix(1_800_000_000, 0), Counts: counts}, nil
}

// BenchmarkShouldRateLimit is one ShouldRateLimit call with three descriptors, draft-7
// headers and metrics, without Redis.
func BenchmarkShouldRateLimit(b *testing.B) {
	cfg, err := Parse([]File{{Name: "bench.yaml", Data: []byte(`domain: bench
descriptors:
  - {key: k0, rate_limit: {unit: minute, requests_per_unit: 1000000}}
  - {key: k1, rate_limit: {unit: minute, requests_per_unit: 1000000}}
  - {key: k2, rate_limit: {unit: hour, requests_per_unit: 1000000}}
`)}})
	if err != nil {
		b.Fatal(err)
	}
	s := NewService(constCounter{}, cfg, Options{Headers: ratelimit.FormatDraft7, Metrics: metrics.New()})
	req := &rlsv3.RateLimitRequest{Domain: "bench"}
	for _, k := range []string{"k0", "k1", "k2"} {
		req.Descriptors = append(req.Descriptors, &ratelimitv3.RateLimitDescriptor{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: k, Value: "user-1234"}},
		})
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		resp, err := s.ShouldRateLimit(ctx, req)
		if err != nil || resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
			b.Fatal(resp, err)
		}
	}
}
