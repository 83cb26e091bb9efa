// Package tracingtest is a test helper: an in-process OpenTelemetry collector that accepts
// OTLP/gRPC trace exports on a free loopback port and keeps what it received, so that tests
// can check the spans the sidecar really sent over a real socket.
package tracingtest

import (
	"context"
	"encoding/hex"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
)

// Collector is a running OTLP/gRPC trace receiver.
type Collector struct {
	coltracepb.UnimplementedTraceServiceServer
	addr string

	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
}

var _ coltracepb.TraceServiceServer = (*Collector)(nil)

// Start runs a collector on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB) *Collector {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("collector listener: %v", err)
	}
	c := &Collector{addr: l.Addr().String()}
	s := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(s, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return c
}

// Addr is the collector's host:port.
func (c *Collector) Addr() string { return c.addr }

// Export records a request.
func (c *Collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.mu.Unlock()
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// Span is one received span with its resource, ids in hex and attributes as strings.
type Span struct {
	Name                           string
	Kind                           tracepb.Span_SpanKind
	TraceID, SpanID, ParentSpanID  string
	Attributes, ResourceAttributes map[string]string
}

// Spans lists every span received so far, in arrival order.
func (c *Collector) Spans() []Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Span
	for _, req := range c.reqs {
		for _, rs := range req.GetResourceSpans() {
			res := attrs(rs.GetResource().GetAttributes())
			for _, ss := range rs.GetScopeSpans() {
				for _, sp := range ss.GetSpans() {
					out = append(out, Span{
						Name:               sp.GetName(),
						Kind:               sp.GetKind(),
						TraceID:            hex.EncodeToString(sp.GetTraceId()),
						SpanID:             hex.EncodeToString(sp.GetSpanId()),
						ParentSpanID:       hex.EncodeToString(sp.GetParentSpanId()),
						Attributes:         attrs(sp.GetAttributes()),
						ResourceAttributes: res,
					})
				}
			}
		}
	}
	return out
}

// Dump is everything received, as protobuf text: resources, spans, attributes, events,
// links and status messages. Tests search it for values that must never be exported.
func (c *Collector) Dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, req := range c.reqs {
		b.WriteString(prototext.Format(req))
		b.WriteByte('\n')
	}
	return b.String()
}

// Wait polls until want holds for the spans received or timeout passes, and returns the
// spans either way.
func (c *Collector) Wait(want func([]Span) bool, timeout time.Duration) []Span {
	deadline := time.Now().Add(timeout)
	for {
		spans := c.Spans()
		if want(spans) || time.Now().After(deadline) {
			return spans
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Find returns the spans named name.
func Find(spans []Span, name string) []Span {
	var out []Span
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = prototext.Format(kv.GetValue())
		if s, ok := kv.GetValue().GetValue().(*commonpb.AnyValue_StringValue); ok {
			m[kv.GetKey()] = s.StringValue
		}
	}
	return m
}

// NoOTelGoroutines fails the test if goroutines running OpenTelemetry code are still alive
// after a grace period: a provider that was shut down must leave none behind.
func NoOTelGoroutines(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		var left []string
		for g := range strings.SplitSeq(stacks, "\n\n") {
			if strings.Contains(g, "go.opentelemetry.io/") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d OpenTelemetry goroutine(s) still running:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
