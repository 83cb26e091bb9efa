// Package server owns the sidecar's listeners: the gRPC listener (Envoy's ratelimit service,
// gRPC health and reflection), the HTTP authorization listener and the admin listener
// (/healthz, /readyz, /metrics, /debug/pprof on loopback when asked), with readiness and
// graceful shutdown. It bounds what any client can hold: connections, time, header and body
// bytes, and the decisions running at once. It holds no policy: the services it serves decide.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
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

	// MaxInflight caps the Check, ShouldRateLimit and HTTP authorization calls running at
	// once; past it they are answered at once (gRPC UNAVAILABLE, HTTP 503). 0 means no cap.
	MaxInflight int
	// HTTP and GRPC bound the two decision listeners; zero fields mean no bound.
	HTTP HTTPLimits
	GRPC GRPCLimits
	// Pprof serves /debug/pprof on the admin listener when its address is loopback.
	Pprof bool
	// AdminAPI, when set, serves every path under /v1/ on the admin listener, to loopback
	// peers and peers in AdminAPIAllow only (adminapi.go).
	AdminAPI http.Handler
	// AdminAPIAllow lists the networks besides loopback whose peers may use AdminAPI.
	AdminAPIAllow []netip.Prefix

	Logger  *zap.Logger
	Metrics *metrics.Metrics
}

// HTTPLimits bounds the HTTP authorization listener. A zero field means no bound.
type HTTPLimits struct {
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes caps the request line and headers (net/http adds 4 KiB of slack).
	MaxHeaderBytes int
	// MaxBodyBytes caps a request body; see capBody. 0 means no cap.
	MaxBodyBytes int64
	// MaxConnections caps open connections; see connLimiter.
	MaxConnections int
}

// GRPCLimits bounds the gRPC listener. A zero field means no bound (or, for
// KeepaliveMinTime, the default of GRPCOptions).
type GRPCLimits struct {
	MaxConcurrentStreams uint32
	MaxConnectionIdle    time.Duration
	MaxConnections       int
	KeepaliveMinTime     time.Duration
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
	// httpConns, grpcConns and adminConns cap the open connections of each listener; the
	// listeners above are them.
	httpConns, grpcConns, adminConns *connLimiter

	loaded   atomic.Bool
	stopping atomic.Bool
	// readyReason is the last readiness answer, so that only its changes are logged, and
	// lastPingErr the backend's last ping error, logged with it.
	readyReason atomic.Pointer[string]
	lastPingErr atomic.Pointer[error]
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

	s.grpcConns = newConnLimiter(s.grpcL, opts.GRPC.MaxConnections, false, "grpc", opts.Metrics)
	s.httpConns = newConnLimiter(s.httpL, opts.HTTP.MaxConnections, true, "http", opts.Metrics)
	s.adminConns = newConnLimiter(s.adminL, adminMaxConnection, true, "admin", opts.Metrics)
	s.grpcL, s.httpL, s.adminL = s.grpcConns, s.httpConns, s.adminConns

	limit := newInflight(opts.MaxInflight, opts.Metrics)
	gopts := append(grpcOptions(opts.GRPC), grpc.ChainUnaryInterceptor(limit.unary))
	s.grpc = grpc.NewServer(append(gopts, opts.GRPCExtra...)...)
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
	h = limit.middleware(h)
	if opts.HTTP.MaxBodyBytes > 0 {
		h = capBody(opts.HTTP.MaxBodyBytes, h)
	}
	l := opts.HTTP
	s.httpS = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ConnState:         s.httpConns.connState,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	s.admin = &http.Server{
		Handler:           adminHandler(s.adminMux()),
		ReadHeaderTimeout: adminReadHeaderTimeout,
		ReadTimeout:       adminReadTimeout,
		WriteTimeout:      adminWriteTimeout,
		IdleTimeout:       adminIdleTimeout,
		MaxHeaderBytes:    adminMaxHeaderSize,
		ConnState:         s.adminConns.connState,
		ErrorLog:          zap.NewStdLog(s.log),
	}
	return s, nil
}

// The keepalive settings shared by the sidecar and the benchmark's ceiling server.
const (
	// keepaliveMinTime is the shortest interval between a client's pings that is accepted
	// (more often, and the connection is closed with GOAWAY "too_many_pings"). Envoy's
	// connection_keepalive.interval must be at least this; the shipped configs use 30 s.
	keepaliveMinTime = 10 * time.Second
	// keepaliveTime and keepaliveTimeout: the server pings a connection quiet for 2 min and
	// closes it when the ping is not answered within 20 s, which finds peers that vanished.
	keepaliveTime    = 2 * time.Minute
	keepaliveTimeout = 20 * time.Second
)

// GRPCOptions are the gRPC server settings of the sidecar without its configured limits. The
// benchmark's do-nothing ceiling server uses them, so the two differ only in the work they do
// (the limits cost nothing per call).
func GRPCOptions() []grpc.ServerOption { return grpcOptions(GRPCLimits{}) }

func grpcOptions(l GRPCLimits) []grpc.ServerOption {
	minTime := l.KeepaliveMinTime
	if minTime <= 0 {
		minTime = keepaliveMinTime
	}
	opts := []grpc.ServerOption{
		// Envoy keeps long-lived HTTP/2 connections and may ping them, with or without calls
		// in flight; allow that.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: minTime, PermitWithoutStream: true}),
		// MaxConnectionIdle closes, with GOAWAY, a connection that carried no call for that
		// long (0: never); keepalive pings do not count as calls.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time: keepaliveTime, Timeout: keepaliveTimeout, MaxConnectionIdle: l.MaxConnectionIdle,
		}),
	}
	if l.MaxConcurrentStreams > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(l.MaxConcurrentStreams))
	}
	return opts
}

// GRPCAddr is the bound gRPC address (useful with port 0).
func (s *Server) GRPCAddr() net.Addr { return s.grpcL.Addr() }

// HTTPAddr is the bound HTTP authorization address.
func (s *Server) HTTPAddr() net.Addr { return s.httpL.Addr() }

// AdminAddr is the bound admin address.
func (s *Server) AdminAddr() net.Addr { return s.adminL.Addr() }

// SetLoaded marks the configuration as loaded; readiness needs it.
func (s *Server) SetLoaded(v bool) { s.loaded.Store(v) }

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
