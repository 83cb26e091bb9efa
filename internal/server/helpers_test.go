package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/extauthz/extauthz/internal/metrics"
)

// start runs a Server on loopback ports with opts (addresses filled in) until the test ends,
// and waits for Run to return at cleanup.
func start(t *testing.T, opts Options) *Server {
	t.Helper()
	opts.GRPCAddr, opts.HTTPAddr, opts.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.SetLoaded(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return s
}

// counter reads one child of a counter or gauge vector.
func counter(t *testing.T, m *metrics.Metrics, name string, labels ...string) float64 {
	t.Helper()
	var c prometheus.Metric
	switch name {
	case "shed":
		c = m.Shed.WithLabelValues(labels...)
	case "open":
		c = m.Connections.WithLabelValues(labels...)
	case "limited":
		c = m.ConnectionsLimited.WithLabelValues(labels...)
	default:
		t.Fatalf("unknown metric %s", name)
	}
	var out dto.Metric
	if err := c.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}

// waitFor polls cond every 10 ms until it holds, failing after timeout with what.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// idleConns counts the connections l holds that its server reported idle.
func idleConns(l *connLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for c := range l.conns {
		if c.idleSince.Load() != 0 {
			n++
		}
	}
	return n
}

// oneLine trims a body for messages.
func oneLine(s string) string { return strings.TrimSpace(s) }
