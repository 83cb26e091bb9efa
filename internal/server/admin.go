package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// The admin listener's bounds. They are fixed: it serves probes, scrapes and, on loopback,
// profiles, not traffic.
const (
	adminReadHeaderTimeout = 5 * time.Second
	adminReadTimeout       = 10 * time.Second
	// adminWriteTimeout lets /debug/pprof/profile run its default 30 s (net/http/pprof
	// refuses a longer one with 400).
	adminWriteTimeout  = time.Minute
	adminIdleTimeout   = 2 * time.Minute
	adminMaxHeaderSize = 16 << 10
	// adminMaxBody bounds what /debug/pprof/symbol may read (a POST of addresses).
	adminMaxBody       = 1 << 20
	adminMaxConnection = 64
)

// The fixed reasons /readyz gives for a 503. They name no address and carry no error text:
// the admin port may be reachable from more places than the logs are. The detail is logged.
var (
	errNotLoaded        = errors.New("configuration not loaded")
	errStopping         = errors.New("shutting down")
	errRedisTimeout     = errors.New("redis timeout")
	errRedisUnreachable = errors.New("redis unreachable")
)

// readyPingTimeout bounds the backend ping of one readiness check.
const readyPingTimeout = time.Second

func (s *Server) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ready(r.Context()); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return
		}
		writeText(w, http.StatusOK, "ready")
	})
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Metrics.Registry, promhttp.HandlerOpts{}))
	}
	if s.opts.AdminAPI != nil {
		mux.Handle("/v1/", peerGuard(s.opts.AdminAPIAllow, s.opts.AdminAPI))
	}
	switch {
	case !s.opts.Pprof:
	case !isLoopback(s.adminL.Addr()):
		s.log.Warn("admin.pprof is on but the admin address is not loopback: /debug/pprof is not served",
			zap.String("admin", s.adminL.Addr().String()))
	default:
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// adminHandler bounds what a request to the admin listener may send.
func adminHandler(mux http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, adminMaxBody)
		mux.ServeHTTP(w, r)
	})
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// ready returns nil when the sidecar can serve, or one of the fixed reasons above.
func (s *Server) ready(ctx context.Context) error {
	err := s.readiness(ctx)
	s.noteReadiness(err)
	return err
}

func (s *Server) readiness(ctx context.Context) error {
	if s.stopping.Load() {
		return errStopping
	}
	if !s.loaded.Load() {
		return errNotLoaded
	}
	if s.opts.Backend == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, readyPingTimeout)
	defer cancel()
	err := s.opts.Backend.Ping(ctx)
	if err == nil {
		return nil
	}
	// The ping's own error names the Redis address (never its password); it goes to the
	// log when the reason changes, not to the caller.
	s.lastPingErr.Store(&err)
	if redisconn.IsTimeout(err) {
		return errRedisTimeout
	}
	return errRedisUnreachable
}

// noteReadiness logs a change of readiness once, not once per probe: /readyz and the gRPC
// health loop both ask every second or so.
func (s *Server) noteReadiness(err error) {
	reason := "ready"
	if err != nil {
		reason = err.Error()
	}
	prev := s.readyReason.Swap(&reason)
	if prev != nil && *prev == reason || err == errStopping {
		return
	}
	if err == nil {
		if prev != nil {
			s.log.Info("ready")
		}
		return
	}
	fields := []zap.Field{zap.String("reason", reason)}
	if (err == errRedisTimeout || err == errRedisUnreachable) && s.lastPingErr.Load() != nil {
		fields = append(fields, zap.Error(*s.lastPingErr.Load()))
	}
	s.log.Warn("not ready", fields...)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
