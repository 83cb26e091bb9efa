package rls_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redistest"
)

// Hostile traffic (random domains, random values) must not grow the metric label sets, and no
// request value may appear in a label.
func TestMetricLabelsStayBounded(t *testing.T) {
	r := redistest.Start(t)
	rdb := newClient(t, r.URL())
	cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(testConfig)}})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	svc := rls.NewService(ratelimit.NewFixedWindow(rdb), cfg, rls.Options{Timeout: time.Second, Metrics: m, Headers: ratelimit.FormatDraft7})
	for i := 0; i < 300; i++ {
		domain := "edge"
		if i%2 == 0 {
			domain = fmt.Sprintf("random-domain-%d", i)
		}
		d := &ratelimitv3.RateLimitDescriptor{Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user", Value: fmt.Sprintf("secret-value-%d", i)}}}
		if _, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}}); err != nil {
			t.Fatal(err)
		}
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "extauthz_") {
			continue
		}
		for _, metric := range f.GetMetric() {
			series++
			for _, l := range metric.GetLabel() {
				if strings.Contains(l.GetValue(), "secret-value") || strings.Contains(l.GetValue(), "random-domain") {
					t.Fatalf("%s has a request value in label %s=%q", f.GetName(), l.GetName(), l.GetValue())
				}
			}
		}
	}
	if series > 30 {
		t.Fatalf("%d extauthz series after 300 distinct requests: labels are not bounded", series)
	}
}
