package rls_test

import (
	"strings"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redistest"
)

// shareConfig is the reference's share_threshold example (envoyproxy/ratelimit#1016): values
// under files/* share one 100-an-hour threshold, where a plain wildcard gives each value its
// own; plus the same under a parent descriptor, to show sharing applies at any level.
const shareConfig = `
domain: edge
descriptors:
  - key: path
    value: files/*
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: path
    value: models/*
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: tenant
    value: t-*
    share_threshold: true
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 2}
`

func newShareEnv(t *testing.T) *env {
	t.Helper()
	r := redistest.Start(t)
	cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(shareConfig)}})
	if err != nil {
		t.Fatal(err)
	}
	svc := rls.NewService(ratelimit.NewFixedWindow(newClient(t, r.URL())), cfg, rls.Options{Headers: ratelimit.FormatDraft7, Timeout: time.Second})
	return &env{client: serve(t, svc), redis: r, rdb: newClient(t, r.URL()), svc: svc}
}

// With share_threshold, files/a.pdf, files/b.csv and files/c.txt use up one 100-request
// threshold between them, on one Redis key; without it (models/*) each value has its own.
func TestShareThresholdSharesOneCounter(t *testing.T) {
	e := newShareEnv(t)
	if r := e.call(t, 98, desc("path", "files/a.pdf")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 2 {
		t.Fatalf("98 hits on a.pdf: %v", r)
	}
	if r := e.call(t, 1, desc("path", "files/b.csv")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 1 {
		t.Fatalf("b.csv after a.pdf's 98: remaining %d, want 1 (shared threshold)", r.Statuses[0].LimitRemaining)
	}
	if r := e.call(t, 1, desc("path", "files/c.txt")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("c.txt, the 100th hit: %v", r)
	}
	if r := e.call(t, 1, desc("path", "files/d.png")); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("101st hit, on a value never seen before: %v, want OVER_LIMIT", r.OverallCode)
	}
	// The literal pattern as a value is the same descriptor and the same counter.
	if r := e.call(t, 1, desc("path", "files/*")); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("value files/*: %v, want OVER_LIMIT", r.OverallCode)
	}
	var fileKeys []string
	for _, k := range e.keys(t) {
		if strings.Contains(k, "files") {
			fileKeys = append(fileKeys, k)
		}
	}
	if len(fileKeys) != 1 || !strings.Contains(fileKeys[0], "files/*") {
		t.Fatalf("files/* counters in Redis: %q, want one, keyed by the pattern", fileKeys)
	}

	// A wildcard without share_threshold keeps a counter per value, as before.
	if r := e.call(t, 100, desc("path", "models/a")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("100 hits on models/a: %v", r)
	}
	if r := e.call(t, 1, desc("path", "models/b")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 99 {
		t.Fatalf("models/b after models/a's 100: %v, want its own counter", r)
	}
}

// share_threshold on a parent level: every tenant matching t-* shares the per-user counters,
// while the user's own value still tells users apart.
func TestShareThresholdOnAParentLevel(t *testing.T) {
	e := newShareEnv(t)
	if r := e.call(t, 0, desc("tenant", "t-1", "user", "alice")); r.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("1st: %v", r)
	}
	if r := e.call(t, 0, desc("tenant", "t-2", "user", "alice")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 0 {
		t.Fatalf("alice under t-2 after t-1: %v, want the same counter", r)
	}
	if r := e.call(t, 0, desc("tenant", "t-3", "user", "alice")); r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("alice's 3rd under a third tenant: %v, want OVER_LIMIT", r.OverallCode)
	}
	if r := e.call(t, 0, desc("tenant", "t-1", "user", "bob")); r.OverallCode != rlsv3.RateLimitResponse_OK || r.Statuses[0].LimitRemaining != 1 {
		t.Fatalf("bob: %v, want his own counter", r)
	}
}
