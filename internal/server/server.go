// Package server owns the sidecar's listeners: the gRPC listener (Envoy's ratelimit service,
// gRPC health and reflection), the HTTP authorization listener and the admin listener
// (/healthz, /readyz, /metrics, /debug/pprof on loopback), with readiness and graceful
// shutdown. It holds no policy: the services it serves decide.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/extauthz/extauthz/internal/metrics"
)

// Pinger reports whether the backend answers; *redisconn.Client is one.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Options configures a Server.
type Options struct {
	GRPCAddr, HTTPAddr, AdminAddr string

	// RateLimit is registered as envoy.service.ratelimit.v3.RateLimitService when non-nil.
	RateLimit rlsv3.RateLimitServiceServer
	// Authorization is registered as envoy.service.auth.v3.Authorization when non-nil.
	Authorization authv3.AuthorizationServer
	// HTTPHandler serves the HTTP authorization listener; nil answers 404 to every request.
	HTTPHandler http.Handler
	// Backend is pinged by /readyz and the gRPC health service.
	Backend Pinger
	// GRPCExtra are added to GRPCOptions() for the gRPC listener only, such as the tracing
	// stats handler when tracing is on. Empty by default, so the hot path carries nothing.
	GRPCExtra []grpc.ServerOption

	// Grace bounds how long in-flight calls may run after shutdown starts; 0 ends them at once.
	Grace time.Duration
	// Drain is how long readiness reports 503 before listeners close, so that load balancers
	// stop sending first.
	Drain time.Duration

	Logger  *zap.Logger
	Metrics *metrics.Metrics
}

// Server is the running set of listeners.
type Server struct {
	opts  Options
	log   *zap.Logger
	grpc  *grpc.Server
	hs    *health.Server
	httpS *http.Server
	admin *http.Server

	grpcL, httpL, adminL net.Listener

	loaded   atomic.Bool
	stopping atomic.Bool
}

// serviceName is the gRPC health service name for the whole sidecar ("" is the server).
const serviceName = ""

// New binds the three listeners, so a busy port fails here, and builds the servers.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Server{opts: opts, log: opts.Logger}
	var err error
	if s.grpcL, err = net.Listen("tcp", opts.GRPCAddr); err != nil {
		return nil, fmt.Errorf("grpc listener: %w", err)
	}
	if s.httpL, err = net.Listen("tcp", opts.HTTPAddr); err != nil {
		s.grpcL.Close()
		return nil, fmt.Errorf("http listener: %w", err)
	}
	if s.adminL, err = net.Listen("tcp", opts.AdminAddr); err != nil {
		s.grpcL.Close()
		s.httpL.Close()
		return nil, fmt.Errorf("admin listener: %w", err)
	}

	s.grpc = grpc.NewServer(append(GRPCOptions(), opts.GRPCExtra...)...)
	if opts.RateLimit != nil {
		rlsv3.RegisterRateLimitServiceServer(s.grpc, opts.RateLimit)
	}
	if opts.Authorization != nil {
		authv3.RegisterAuthorizationServer(s.grpc, opts.Authorization)
	}
	s.hs = health.NewServer()
	s.hs.SetServingStatus(serviceName, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.hs)
	reflection.Register(s.grpc)

	h := opts.HTTPHandler
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"no HTTP authorization endpoint is configured"}` + "\n"))
		})
	}
	s.httpS = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(s.log)}
	s.admin = &http.Server{Handler: s.adminMux(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: zap.NewStdLog(s.log)}
	return s, nil
}

// GRPCOptions are the gRPC server settings of the sidecar. The benchmark's do-nothing ceiling
// server uses the same ones, so the two differ only in the work they do.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		// Envoy keeps long-lived HTTP/2 connections and may ping them; allow that.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Minute, Timeout: 20 * time.Second}),
	}
}

// GRPCAddr is the bound gRPC address (useful with port 0).
func (s *Server) GRPCAddr() net.Addr { return s.grpcL.Addr() }

// HTTPAddr is the bound HTTP authorization address.
func (s *Server) HTTPAddr() net.Addr { return s.httpL.Addr() }

// AdminAddr is the bound admin address.
func (s *Server) AdminAddr() net.Addr { return s.adminL.Addr() }

// SetLoaded marks the configuration as loaded; readiness needs it.
func (s *Server) SetLoaded(v bool) { s.loaded.Store(v) }

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
	if isLoopback(s.adminL.Addr()) {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(msg + "\n"))
}

// errNotLoaded and errStopping explain a 503 from /readyz.
var (
	errNotLoaded = errors.New("configuration not loaded")
	errStopping  = errors.New("shutting down")
)

func (s *Server) ready(ctx context.Context) error {
	if s.stopping.Load() {
		return errStopping
	}
	if !s.loaded.Load() {
		return errNotLoaded
	}
	if s.opts.Backend != nil {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := s.opts.Backend.Ping(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	return nil
}

// healthInterval is how often the gRPC health status and the ready gauge follow readiness.
const healthInterval = time.Second

// Run serves until ctx ends, then shuts down gracefully: readiness turns 503 at once, after
// Drain the listeners stop accepting, in-flight calls get up to Grace to finish, and Run
// returns nil. It returns early with an error if a listener fails.
func (s *Server) Run(ctx context.Context) error {
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(s.grpcL); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("grpc: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.httpS.Serve(s.httpL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("http: %w", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := s.admin.Serve(s.adminL); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin: %w", err)
		}
	}()

	healthCtx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		s.followHealth(healthCtx)
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopHealth()
	<-healthDone
	s.shutdown()
	wg.Wait()
	return runErr
}

func (s *Server) followHealth(ctx context.Context) {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		ready := 0.0
		if s.ready(ctx) == nil {
			st = healthpb.HealthCheckResponse_SERVING
			ready = 1
		}
		if ctx.Err() != nil {
			return
		}
		s.hs.SetServingStatus(serviceName, st)
		if s.opts.Metrics != nil {
			s.opts.Metrics.Ready.Set(ready)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) shutdown() {
	s.stopping.Store(true)
	s.hs.Shutdown()
	if s.opts.Metrics != nil {
		s.opts.Metrics.Ready.Set(0)
	}
	if s.opts.Drain > 0 {
		s.log.Info("draining before closing listeners", zap.Duration("drain", s.opts.Drain))
		time.Sleep(s.opts.Drain)
	}
	deadline := time.Now().Add(s.opts.Grace)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	_ = s.httpS.Shutdown(ctx)
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grace period over, closing remaining gRPC calls", zap.Duration("grace", s.opts.Grace))
		s.grpc.Stop()
		<-done
	}
	// The admin listener closes last so /readyz keeps answering 503 until the end.
	_ = s.admin.Shutdown(ctx)
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
