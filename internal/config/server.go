package config

import (
	"math"
	"net"
	"time"
)

// The defaults of the server section. Each bounds what one client can hold: a connection, a
// goroutine, a header buffer or a decision slot. docs/configuration.md says why each value.
const (
	// DefaultMaxInflight caps the decisions (Check, ShouldRateLimit and HTTP authorization
	// requests together) running at once in a process. At tens of thousands of decisions a
	// second on two cores, 1024 queued decisions are tens of milliseconds of work: inside
	// Envoy's 200 ms ext_authz timeout, and past it a caller is better answered at once.
	DefaultMaxInflight = 1024

	// DefaultHTTPReadHeaderTimeout bounds reading a request's headers, which a proxy sends at
	// once.
	DefaultHTTPReadHeaderTimeout = 5 * time.Second
	// DefaultHTTPReadTimeout bounds reading a whole request, body included.
	DefaultHTTPReadTimeout = 10 * time.Second
	// DefaultHTTPWriteTimeout bounds a request from the end of its headers to the end of its
	// answer.
	DefaultHTTPWriteTimeout = 10 * time.Second
	// DefaultHTTPIdleTimeout is how long a keep-alive connection may wait for its next
	// request. It is longer than the idle timeouts of the proxies' own pools (nginx 60 s,
	// Go's http.Transport 90 s, Caddy 2 min), so the proxy closes first and never sends a
	// request on a connection the sidecar is closing.
	DefaultHTTPIdleTimeout = 3 * time.Minute
	// DefaultHTTPMaxHeaderBytes is above Envoy's 60 KiB max_request_headers_kb and nginx's
	// 4 × 8 KiB large_client_header_buffers, so whatever a proxy accepts fits.
	DefaultHTTPMaxHeaderBytes = 64 << 10
	// DefaultHTTPMaxBodyBytes caps a request body; the authorization endpoints read none.
	DefaultHTTPMaxBodyBytes = 64 << 10
	// DefaultHTTPMaxConnections caps open connections to the HTTP listener.
	DefaultHTTPMaxConnections = 1024

	// DefaultGRPCMaxConcurrentStreams caps the calls in flight on one gRPC connection.
	DefaultGRPCMaxConcurrentStreams = 1024
	// DefaultGRPCMaxConnectionIdle closes a gRPC connection that carried no call for this
	// long; Envoy opens a new one on its next call.
	DefaultGRPCMaxConnectionIdle = 15 * time.Minute
	// DefaultGRPCMaxConnections caps open connections to the gRPC listener.
	DefaultGRPCMaxConnections = 1024
	// DefaultGRPCKeepaliveMinTime is the shortest interval between a client's keepalive
	// pings that the server accepts; Envoy's connection_keepalive.interval must not be
	// shorter (the shipped configs use 30 s).
	DefaultGRPCKeepaliveMinTime = 10 * time.Second
)

// Server bounds the work of the gRPC and HTTP authorization listeners.
type Server struct {
	// MaxInflight caps the decisions running at once in the process, across gRPC Check,
	// ShouldRateLimit and the HTTP endpoints. Past it a call is answered at once: gRPC
	// UNAVAILABLE, HTTP 503.
	MaxInflight int `yaml:"max_inflight"`
	// HTTP bounds the HTTP authorization listener.
	HTTP ServerHTTP `yaml:"http"`
	// GRPC bounds the gRPC listener.
	GRPC ServerGRPC `yaml:"grpc"`
}

// ServerHTTP bounds the HTTP authorization listener.
type ServerHTTP struct {
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	ReadTimeout       Duration `yaml:"read_timeout"`
	WriteTimeout      Duration `yaml:"write_timeout"`
	IdleTimeout       Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int      `yaml:"max_header_bytes"`
	// MaxBodyBytes answers a request that declares a longer body with 413; a shorter one is
	// discarded unread.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxConnections caps open connections; at the cap the longest idle one is closed to make
	// room, and a new connection is refused when none is idle.
	MaxConnections int `yaml:"max_connections"`
}

// ServerGRPC bounds the gRPC listener.
type ServerGRPC struct {
	MaxConcurrentStreams int      `yaml:"max_concurrent_streams"`
	MaxConnectionIdle    Duration `yaml:"max_connection_idle"`
	MaxConnections       int      `yaml:"max_connections"`
	KeepaliveMinTime     Duration `yaml:"keepalive_min_time"`
}

// Admin configures the admin listener beyond its address.
type Admin struct {
	// Pprof serves /debug/pprof; it is off by default and needs a loopback listen.admin.
	Pprof bool `yaml:"pprof"`
	// API serves the admin API under /v1/ (the session endpoints); on by default, and only
	// to loopback peers unless APIAllow names more (sessionindex.go).
	API bool `yaml:"api"`
	// APIAllow lists the CIDRs (or single addresses) besides loopback whose peers may use
	// the admin API.
	APIAllow []string `yaml:"api_allow"`
}

func defaultServer() Server {
	return Server{
		MaxInflight: DefaultMaxInflight,
		HTTP: ServerHTTP{
			ReadHeaderTimeout: Duration(DefaultHTTPReadHeaderTimeout),
			ReadTimeout:       Duration(DefaultHTTPReadTimeout),
			WriteTimeout:      Duration(DefaultHTTPWriteTimeout),
			IdleTimeout:       Duration(DefaultHTTPIdleTimeout),
			MaxHeaderBytes:    DefaultHTTPMaxHeaderBytes,
			MaxBodyBytes:      DefaultHTTPMaxBodyBytes,
			MaxConnections:    DefaultHTTPMaxConnections,
		},
		GRPC: ServerGRPC{
			MaxConcurrentStreams: DefaultGRPCMaxConcurrentStreams,
			MaxConnectionIdle:    Duration(DefaultGRPCMaxConnectionIdle),
			MaxConnections:       DefaultGRPCMaxConnections,
			KeepaliveMinTime:     Duration(DefaultGRPCKeepaliveMinTime),
		},
	}
}

// server checks the server and admin sections. Every bound must be positive: a limit is
// raised, never switched off.
func (k *checker) server() {
	s := k.c.Server
	k.serverMin1("server.max_inflight", s.MaxInflight)
	for _, d := range []struct {
		path string
		val  Duration
	}{
		{"server.http.read_header_timeout", s.HTTP.ReadHeaderTimeout},
		{"server.http.read_timeout", s.HTTP.ReadTimeout},
		{"server.http.write_timeout", s.HTTP.WriteTimeout},
		{"server.http.idle_timeout", s.HTTP.IdleTimeout},
		{"server.grpc.max_connection_idle", s.GRPC.MaxConnectionIdle},
		{"server.grpc.keepalive_min_time", s.GRPC.KeepaliveMinTime},
	} {
		if d.val <= 0 {
			k.fail(d.path, d.val, "must be > 0, got %s", d.val)
		}
	}
	if s.HTTP.ReadHeaderTimeout > s.HTTP.ReadTimeout && s.HTTP.ReadTimeout > 0 {
		k.fail("server.http.read_header_timeout", s.HTTP.ReadHeaderTimeout, "must not exceed server.http.read_timeout (%s)", s.HTTP.ReadTimeout)
	}
	k.serverMin1("server.http.max_header_bytes", s.HTTP.MaxHeaderBytes)
	if s.HTTP.MaxBodyBytes < 1 {
		k.fail("server.http.max_body_bytes", s.HTTP.MaxBodyBytes, "must be >= 1, got %d", s.HTTP.MaxBodyBytes)
	}
	k.serverMin1("server.http.max_connections", s.HTTP.MaxConnections)
	k.serverMin1("server.grpc.max_connections", s.GRPC.MaxConnections)
	if n := s.GRPC.MaxConcurrentStreams; n < 1 || int64(n) > math.MaxUint32 {
		k.fail("server.grpc.max_concurrent_streams", n, "must be from 1 to %d, got %d", uint32(math.MaxUint32), n)
	}
	k.adminAPI()
	if k.c.Admin.Pprof {
		host, _, err := net.SplitHostPort(k.c.Listen.Admin)
		if ip := net.ParseIP(host); err == nil && (host == "" || ip != nil && !ip.IsLoopback()) {
			k.fail("admin.pprof", true, "needs a loopback listen.admin, not %q: profiles expose memory contents", k.c.Listen.Admin)
		}
	}
}

func (k *checker) serverMin1(path string, n int) {
	if n < 1 {
		k.fail(path, n, "must be >= 1, got %d", n)
	}
}
