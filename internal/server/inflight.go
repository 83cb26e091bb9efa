package server

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/metrics"
)

// The transport label values of the shed counter.
const (
	transportCheck     = "grpc_check"
	transportRateLimit = "grpc_ratelimit"
	transportHTTP      = "http"
)

// overloadedBody is the HTTP answer to a shed request.
const overloadedBody = `{"error":"overloaded"}` + "\n"

// errOverloaded is the gRPC answer to a shed call. UNAVAILABLE lets Envoy's failure mode
// decide (failure_mode_allow for ext_authz, failure_mode_deny for ratelimit), as it does when
// the sidecar cannot be reached.
var errOverloaded = status.Error(codes.Unavailable, "overloaded")

// inflight caps the decisions running at once across every transport. It is one atomic
// counter: a call that would take it past max is answered at once instead of queued, since a
// queue longer than that outlasts the proxies' own timeouts. A zero max means no cap.
type inflight struct {
	max int64
	n   atomic.Int64

	shedCheck, shedRateLimit, shedHTTP prometheus.Counter
}

func newInflight(max int, m *metrics.Metrics) *inflight {
	f := &inflight{max: int64(max)}
	if m != nil {
		// The counters are resolved once so that a shed costs no label lookup.
		f.shedCheck = m.Shed.WithLabelValues(transportCheck)
		f.shedRateLimit = m.Shed.WithLabelValues(transportRateLimit)
		f.shedHTTP = m.Shed.WithLabelValues(transportHTTP)
	}
	return f
}

// acquire takes a slot, or reports false and counts a shed on c when every slot is taken.
func (f *inflight) acquire(c prometheus.Counter) bool {
	if f.max <= 0 {
		return true
	}
	if f.n.Add(1) > f.max {
		f.n.Add(-1)
		if c != nil {
			c.Inc()
		}
		return false
	}
	return true
}

func (f *inflight) release() {
	if f.max > 0 {
		f.n.Add(-1)
	}
}

// unary is the gRPC interceptor. Only the two decision RPCs count and are shed: health checks
// and reflection always answer, so that an overloaded sidecar is not also taken for a dead one.
func (f *inflight) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	var c prometheus.Counter
	switch info.FullMethod {
	case authv3.Authorization_Check_FullMethodName:
		c = f.shedCheck
	case rlsv3.RateLimitService_ShouldRateLimit_FullMethodName:
		c = f.shedRateLimit
	default:
		return handler(ctx, req)
	}
	if !f.acquire(c) {
		return nil, errOverloaded
	}
	defer f.release()
	return handler(ctx, req)
}

// middleware wraps the HTTP authorization handler: past the cap it answers 503 with
// X-Extauthz-Status: 503 and {"error":"overloaded"}.
func (f *inflight) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.acquire(f.shedHTTP) {
			writeJSON(w, http.StatusServiceUnavailable, overloadedBody)
			return
		}
		defer f.release()
		next.ServeHTTP(w, r)
	})
}

// statusHeader carries the real status on every answer of the HTTP authorization listener,
// as the authorization handler's own answers do.
const statusHeader = "X-Extauthz-Status"

func writeJSON(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set(statusHeader, strconv.Itoa(code))
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}
