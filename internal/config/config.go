// Package config is the sidecar's one YAML configuration file: its typed shape, the defaults,
// a strict decode that rejects unknown keys, cross-field checks and a few environment overrides
// for secrets and addresses. Every problem is reported at once, each with its field path and,
// when the config came from a file, its line.
package config

import (
	"fmt"
	"os"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisurl"
)

// The defaults, named so that flags, docs and tests can refer to them.
const (
	DefaultGRPCAddr  = "127.0.0.1:9001"
	DefaultHTTPAddr  = "127.0.0.1:9002"
	DefaultAdminAddr = "127.0.0.1:9003"

	// DefaultRedisTimeout and DefaultRedisDialTimeout are the client builder's own defaults,
	// defined once in redisurl (see redisurl.DefaultTimeout for why 25 ms).
	DefaultRedisTimeout     = redisurl.DefaultTimeout
	DefaultRedisDialTimeout = redisurl.DefaultDialTimeout
	// DefaultEmbeddedAddr is redis.embedded_addr: a free loopback port per process.
	DefaultEmbeddedAddr = redisurl.DefaultEmbeddedAddr
	// MaxRedisTimeout bounds redis.timeout: a per-call deadline longer than this would let
	// goroutines pile up behind a stuck Redis long after the proxy has given up on the call.
	MaxRedisTimeout = 10 * time.Second

	// DefaultPipelineSlots and DefaultPipelineMax tune how the Redis commands of concurrent
	// decisions are coalesced into pipelines. One connection with one pipeline in flight
	// makes the largest batches: the fewest system calls in the sidecar and in Redis.
	DefaultPipelineSlots = 1
	DefaultPipelineMax   = 128
	// DefaultRedisMaxInflight is redis.max_inflight: at the measured 100k+ calls a second,
	// 10,000 queued calls are about 0.1 s of Redis work, already past any proxy's patience.
	DefaultRedisMaxInflight = 10000
	// MaxPipelineSlots bounds redis.pipeline_slots: more connections per node only split the
	// batches that make pipelining pay.
	MaxPipelineSlots = 64

	DefaultResponseHeaders = "draft-7"
	DefaultRLSPrefix       = "rls:"
	// DefaultOverLimitCacheSize bounds the local over-limit cache (about 100 bytes an entry).
	DefaultOverLimitCacheSize = 100000
	DefaultLogLevel           = "info"
	DefaultLogFormat          = "json"
	DefaultShutdownGrace      = 10 * time.Second
	DefaultShutdownDrain      = time.Duration(0)
)

// The environment variables ApplyEnv reads. They cover only what differs per deployment and
// what should not sit in a ConfigMap: the Redis URL and password, and the listen addresses.
const (
	EnvRedisURL      = "EXTAUTHZ_REDIS_URL"
	EnvRedisPassword = "EXTAUTHZ_REDIS_PASSWORD"
	EnvGRPCAddr      = "EXTAUTHZ_GRPC_ADDR"
	EnvHTTPAddr      = "EXTAUTHZ_HTTP_ADDR"
	EnvAdminAddr     = "EXTAUTHZ_ADMIN_ADDR"
)

// Config is the whole file. A new section is a new field with a yaml tag: the strict decoder
// walks the struct by reflection, so it needs no other change.
type Config struct {
	Listen          Listen    `yaml:"listen"`
	Redis           Redis     `yaml:"redis"`
	ResponseHeaders string    `yaml:"response_headers"`
	RateLimit       RateLimit `yaml:"ratelimit"`
	Log             Log       `yaml:"log"`
	Shutdown        Shutdown  `yaml:"shutdown"`
	Tracing         Tracing   `yaml:"tracing"`

	// Sessions, APIKeys, Limits and Policies configure ext_authz Check and the HTTP
	// authorization endpoints.
	Sessions Sessions `yaml:"sessions"`
	APIKeys  APIKeys  `yaml:"apikeys"`
	Limits   Limits   `yaml:"limits"`
	Policies []Policy `yaml:"policies"`
	// Cache keeps sessions and API key records in memory while Redis keyspace notifications
	// flow.
	Cache Cache `yaml:"cache"`
	// Server bounds the listeners' work; Admin configures the admin listener.
	Server Server `yaml:"server"`
	Admin  Admin  `yaml:"admin"`

	// TrustedProxies are the CIDRs of proxies whose client-address header is believed. Without
	// them only the peer's address (or Envoy's source address) counts, so a client cannot pick
	// the address its `by: ip` limits count against.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClientIPHeader is the header a trusted proxy puts the client's address in:
	// x-forwarded-for (the right-most address that is not a trusted proxy) or x-real-ip.
	ClientIPHeader string `yaml:"client_ip_header"`
	// Request bounds and canonicalizes what every transport receives.
	Request Request `yaml:"request"`

	// origins maps a field path to where its value came from (file and line, or an environment
	// variable), so that Validate can point at the source of a bad value. It is shared between
	// copies of a Config and never written after Parse except by ApplyEnv, which replaces it.
	origins map[string]origin
}

// Listen holds the three listen addresses as host:port. Port 0 picks a free port, which
// tests use.
type Listen struct {
	// GRPC serves Envoy's ratelimit (and ext_authz) services.
	GRPC string `yaml:"grpc"`
	// HTTP serves authorization for proxies that ask over HTTP.
	HTTP string `yaml:"http"`
	// Admin serves /healthz, /readyz and /metrics.
	Admin string `yaml:"admin"`
}

// Redis says how to reach Redis. An empty URL selects the embedded in-memory store, which is
// per process and so only right for a single replica.
type Redis struct {
	// URL is any form internal/redisurl parses: redis://, rediss:// (TLS), unix://,
	// redis-sentinel://, redis-cluster:// and their TLS forms; empty is the embedded store.
	URL string `yaml:"url"`
	// EmbeddedAddr is where the embedded store listens when URL is empty: a loopback IP:port
	// (the store has no password). Port 0, the default, picks a free port per process; a
	// fixed port lets `extauthz apikey` reach the store of a running `extauthz serve`.
	EmbeddedAddr string `yaml:"embedded_addr"`
	// Username and Password override the URL's user info, so that the secret can come from
	// the environment while the URL sits in a ConfigMap.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Timeout is the deadline of every Redis call made for a request.
	Timeout Duration `yaml:"timeout"`
	// DialTimeout bounds establishing a new connection.
	DialTimeout Duration `yaml:"dial_timeout"`
	// PoolSize and MinIdleConns sized go-redis's pool. The client multiplexes every call over
	// pipelined connections (PipelineSlots per node) and has no pool: both are accepted so that
	// existing files still load, checked, and otherwise unused.
	PoolSize     int `yaml:"pool_size"`
	MinIdleConns int `yaml:"min_idle_conns"`
	// TLS applies to rediss:// URLs only.
	TLS TLS `yaml:"tls"`
	// PipelineSlots is how many pipelined connections the client keeps to each Redis node
	// (rounded up to a power of two; 0 means 1). Concurrent calls share them: commands queued
	// within a few microseconds go out in one write.
	PipelineSlots int `yaml:"pipeline_slots"`
	// PipelineMax was the most commands in one pipeline write of the hand-written client; the
	// client now writes whatever is queued. Accepted and checked, otherwise unused.
	PipelineMax int `yaml:"pipeline_max"`
	// MaxInflight bounds the Redis commands in flight at once across the process; past it a
	// call fails at once (the request gets the failure policy) instead of queueing behind a
	// slow or stalled Redis.
	MaxInflight int `yaml:"max_inflight"`
}

// TLS configures the client side of a rediss:// connection. Files are paths read when the
// client is built, not here.
type TLS struct {
	// CAFile is a PEM bundle that replaces the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a client certificate for mutual TLS; they go together.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name checked against the server's certificate.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate checks off; for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// RateLimit configures the envoyproxy/ratelimit-compatible service.
type RateLimit struct {
	// ConfigDir is an envoyproxy/ratelimit YAML directory; empty means no domains, so every
	// ShouldRateLimit answers OK.
	ConfigDir string `yaml:"config_dir"`
	// Prefix starts every RLS counter key. It may not hold { or }, which would move the
	// counters' Redis Cluster hash slot.
	Prefix string `yaml:"prefix"`
	// Watch reloads ConfigDir when it changes; SIGHUP reloads it either way.
	Watch bool `yaml:"watch"`
	// OverLimitCacheSize is how many counters already over their limit each replica
	// remembers until their window ends, answering without Redis; 0 turns it off.
	OverLimitCacheSize int `yaml:"over_limit_cache_size"`
	// MaxDescriptors caps the descriptors of one ShouldRateLimit request, 1 to
	// rls.MaxDescriptorsCap (default rls.DefaultMaxDescriptors); more is InvalidArgument.
	MaxDescriptors int `yaml:"max_descriptors"`
	// MaxEntries caps the entries of one descriptor, 1 to rls.MaxEntriesCap (default
	// rls.DefaultMaxEntries); more is InvalidArgument.
	MaxEntries int `yaml:"max_entries"`
	// MaxHitsAddend caps a request's or a descriptor's hits_addend, 1 to ratelimit.MaxHits
	// (default rls.DefaultMaxHitsAddend, 2^32-1); more is InvalidArgument.
	MaxHitsAddend int64 `yaml:"max_hits_addend"`
}

// Log configures the process logger.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or console.
	Format string `yaml:"format"`
	// DecisionSample is the share of allowed ext_authz decisions logged (0 to 1; 0 = none).
	DecisionSample float64 `yaml:"decision_sample"`
	// DecisionDenials logs every denial and failed decision (the logger's own sampling still
	// caps a flood).
	DecisionDenials bool `yaml:"decision_denials"`
}

// Shutdown configures what happens on SIGTERM.
type Shutdown struct {
	// Grace is the longest in-flight calls may run once shutdown starts.
	Grace Duration `yaml:"grace"`
	// Drain is how long readiness reports 503 before the listeners close, so that Kubernetes
	// can take the pod out of its endpoints first.
	Drain Duration `yaml:"drain"`
}

// Default returns a Config with every default filled in; it passes Validate.
func Default() *Config {
	return &Config{
		Listen: Listen{
			GRPC:  DefaultGRPCAddr,
			HTTP:  DefaultHTTPAddr,
			Admin: DefaultAdminAddr,
		},
		Redis: Redis{
			EmbeddedAddr:  DefaultEmbeddedAddr,
			Timeout:       Duration(DefaultRedisTimeout),
			DialTimeout:   Duration(DefaultRedisDialTimeout),
			PipelineSlots: DefaultPipelineSlots,
			PipelineMax:   DefaultPipelineMax,
			MaxInflight:   DefaultRedisMaxInflight,
		},
		ResponseHeaders: DefaultResponseHeaders,
		RateLimit: RateLimit{
			Prefix:             DefaultRLSPrefix,
			Watch:              true,
			OverLimitCacheSize: DefaultOverLimitCacheSize,
			MaxDescriptors:     rls.DefaultMaxDescriptors,
			MaxEntries:         rls.DefaultMaxEntries,
			MaxHitsAddend:      rls.DefaultMaxHitsAddend,
		},
		Log: Log{
			Level:           DefaultLogLevel,
			Format:          DefaultLogFormat,
			DecisionDenials: true,
		},
		Shutdown: Shutdown{
			Grace: Duration(DefaultShutdownGrace),
			Drain: Duration(DefaultShutdownDrain),
		},
		Tracing:  defaultTracing(),
		Sessions: defaultSessions(),
		APIKeys:  defaultAPIKeysSection(),
		Limits:   defaultLimits(),
		Cache:    defaultCache(),
		Server:   defaultServer(),
		Admin:    Admin{API: true},

		ClientIPHeader: DefaultClientIPHeader,
		Request:        Request{MaxHeaders: DefaultMaxHeaders, MaxTargetLength: DefaultMaxTargetLength},
	}
}

// Embedded reports whether the config selects the embedded in-memory store instead of Redis.
func (c *Config) Embedded() bool { return c.Redis.URL == "" }

// Load reads the file at path and parses it; errors name the path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// LoadWith is Load with override applied after the environment and before validation, so that
// command-line flags take part in the checks: a file that is valid only with its flags (TLS
// options with --redis-url rediss://...) is accepted, and a bad flag is reported too.
func LoadWith(path string, getenv func(string) string, override func(*Config)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return parseWith(path, data, getenv, override)
}

// Parse builds a Config from YAML: the defaults, then the document decoded strictly over
// them, then the environment overrides, then Validate. name labels errors (usually the file
// path; it may be empty). The error joins every problem found, each a *FieldError.
func Parse(name string, data []byte) (*Config, error) {
	return parse(name, data, os.Getenv)
}

// parse is Parse with the environment passed in, so that tests do not depend on the
// process's own.
func parse(name string, data []byte, getenv func(string) string) (*Config, error) {
	return parseWith(name, data, getenv, nil)
}

func parseWith(name string, data []byte, getenv func(string) string, override func(*Config)) (*Config, error) {
	c := Default()
	d := decoder{file: name, origins: map[string]origin{}}
	d.document(data, c)
	c.origins = d.origins
	c.fillPolicyDefaults()
	c.ApplyEnv(getenv)
	if override != nil {
		override(c)
	}
	problems := append(d.errs, c.check()...)
	if len(problems) > 0 {
		return nil, join(problems)
	}
	return c, nil
}
