// Package metrics defines the sidecar's Prometheus metrics on a registry of its own. Every
// label is bounded by configuration (domain, rule, policy) or by a closed set of values (code,
// reason, operation): a descriptor value, a user, a key or an address is never a label.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Namespace prefixes every metric name.
const Namespace = "extauthz"

// UnknownDomain is the domain label used for domains that are not in the loaded config, so a
// caller sending random domains cannot grow the label set.
const UnknownDomain = "_unknown"

// Metrics holds every collector the sidecar updates.
type Metrics struct {
	Registry *prometheus.Registry

	// RLSRequests counts ShouldRateLimit calls by domain and result code
	// (OK, OVER_LIMIT, or a gRPC error code name).
	RLSRequests *prometheus.CounterVec
	// RLSDescriptors counts descriptor verdicts by domain, config rule and code
	// (OK, OVER_LIMIT, SHADOW_OVER_LIMIT, NO_LIMIT, UNLIMITED, REPLACED).
	RLSDescriptors *prometheus.CounterVec
	// RLSDuration observes ShouldRateLimit latency in seconds by result code.
	RLSDuration *prometheus.HistogramVec
	// Decisions counts ext_authz decisions (gRPC and HTTP) by policy, result (allow, deny,
	// error) and reason (ok, no_policy, unauthenticated, forbidden_role, forbidden_scope,
	// over_limit, over_credits, backend_error, degraded).
	Decisions *prometheus.CounterVec
	// DecisionDuration observes decision latency in seconds by result.
	DecisionDuration *prometheus.HistogramVec
	// WouldDeny counts requests a policy in mode: shadow let through that enforcing it would
	// have denied or failed, by policy and reason (unauthenticated, forbidden_role,
	// forbidden_scope, over_limit, over_credits, backend_error).
	WouldDeny *prometheus.CounterVec
	// RedisDuration observes Redis round trips in seconds by operation.
	RedisDuration *prometheus.HistogramVec
	// RedisPipeline observed how many decision commands each round trip of the hand-written
	// pipeline carried. The client that replaced it does not report its batches; the
	// histogram stays registered, empty, so that dashboards naming it keep loading.
	RedisPipeline prometheus.Histogram
	// RedisInflightRejected counts Redis calls refused at once because redis.max_inflight
	// calls were already in flight.
	RedisInflightRejected prometheus.Counter
	// RedisErrors counts failed Redis calls by operation and reason (timeout, unavailable, reply).
	RedisErrors *prometheus.CounterVec
	// RedisConnFailures counts failed attempts to connect to Redis (the client, or a
	// topology's node), by reason.
	RedisConnFailures *prometheus.CounterVec
	// PolicyOverLimitCacheHits counts policy limit checks answered by the local over-limit
	// cache, without Redis.
	PolicyOverLimitCacheHits prometheus.Counter
	// PolicyLimitFallback counts policy limit checks decided by local counts because Redis
	// failed, by result (allow, deny).
	PolicyLimitFallback *prometheus.CounterVec
	// ConfigReloads counts configuration reloads by component and result (success, error).
	ConfigReloads *prometheus.CounterVec
	// ConfigLastReload is the Unix time of the last successful reload by component.
	ConfigLastReload *prometheus.GaugeVec
	// InFlight is the number of requests being decided, by RPC.
	InFlight *prometheus.GaugeVec
	// Ready is 1 while the sidecar reports ready.
	Ready prometheus.Gauge
	// CacheLookups counts session and API key cache lookups by cache (session, apikey) and
	// result (hit, negative_hit, miss).
	CacheLookups *prometheus.CounterVec
	// CacheInvalidations counts keys Redis invalidated (client tracking), by cache.
	CacheInvalidations *prometheus.CounterVec
	// CacheActive is 1 while the client-side cache is on.
	CacheActive prometheus.Gauge
	// Shed counts calls answered at once because max_inflight decisions were running, by
	// transport (grpc_check, grpc_ratelimit, http).
	Shed *prometheus.CounterVec
	// Connections is the number of open connections by listener (grpc, http, admin).
	Connections *prometheus.GaugeVec
	// ConnectionsLimited counts connections closed by a listener's connection cap, by
	// listener and action: evicted_idle (the longest idle one, to make room) or refused (a
	// new one, when none was idle).
	ConnectionsLimited *prometheus.CounterVec
}

// New builds the collectors and registers them, with the Go and process collectors, on a new
// registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		RLSRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "rls", Name: "requests_total",
			Help: "ShouldRateLimit calls by domain and result code.",
		}, []string{"domain", "code"}),
		RLSDescriptors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "rls", Name: "descriptors_total",
			Help: "Descriptor verdicts by domain, config rule and code.",
		}, []string{"domain", "rule", "code"}),
		RLSDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "rls", Name: "request_duration_seconds",
			Help:    "ShouldRateLimit latency by result code.",
			Buckets: latencyBuckets,
		}, []string{"code"}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "authz", Name: "decisions_total",
			Help: "Authorization decisions by policy, result and reason.",
		}, []string{"policy", "result", "reason"}),
		DecisionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "authz", Name: "decision_duration_seconds",
			Help:    "Authorization decision latency by result.",
			Buckets: latencyBuckets,
		}, []string{"result"}),
		WouldDeny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "would_deny_total",
			Help: "Requests let through by a policy in shadow mode that enforcing it would have denied, by policy and reason.",
		}, []string{"policy", "reason"}),
		RedisDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "redis", Name: "call_duration_seconds",
			Help:    "Redis round trips by operation.",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		RedisPipeline: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Subsystem: "redis", Name: "pipeline_commands",
			Help:    "Unused since the Redis client change (the client does not report its batches); kept registered for dashboards.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
		RedisErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "redis", Name: "errors_total",
			Help: "Failed Redis calls by operation and reason.",
		}, []string{"op", "reason"}),
		RedisConnFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "redis", Name: "pipeline_connection_failures_total",
			Help: "Failed attempts to connect to Redis, by reason.",
		}, []string{"reason"}),
		RedisInflightRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "redis", Name: "inflight_rejected_total",
			Help: "Redis calls refused at once because redis.max_inflight calls were in flight.",
		}),
		PolicyOverLimitCacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "policy", Name: "overlimit_cache_hits_total",
			Help: "Policy limit checks answered by the local over-limit cache, without Redis.",
		}),
		PolicyLimitFallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "policy", Name: "limit_fallback_total",
			Help: "Policy limit checks decided by per-process local counts because Redis failed, by result (allow, deny).",
		}, []string{"result"}),
		CacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "cache", Name: "lookups_total",
			Help: "Session and API key reads by cache and result: hit (from the client-side cache), negative_hit (a missing key, from the cache), miss (read from Redis).",
		}, []string{"cache", "result"}),
		CacheInvalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "cache", Name: "invalidations_total",
			Help: "Keys Redis invalidated in the client-side cache (client tracking), by cache.",
		}, []string{"cache"}),
		CacheActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "cache", Name: "active",
			Help: "1 while the client-side cache of session and API key reads is on.",
		}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Subsystem: "config", Name: "reloads_total",
			Help: "Configuration reloads by component and result.",
		}, []string{"component", "result"}),
		ConfigLastReload: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Subsystem: "config", Name: "last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load by component.",
		}, []string{"component"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "in_flight_requests",
			Help: "Requests being decided, by RPC.",
		}, []string{"rpc"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "shed_total",
			Help: "Calls answered at once (gRPC UNAVAILABLE, HTTP 503) because max_inflight decisions were running, by transport.",
		}, []string{"transport"}),
		Connections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "open_connections",
			Help: "Open connections by listener.",
		}, []string{"listener"}),
		ConnectionsLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "connections_limited_total",
			Help: "Connections closed by a listener's connection cap, by listener and action (evicted_idle, refused).",
		}, []string{"listener", "action"}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "ready",
			Help: "1 while the sidecar reports ready, else 0.",
		}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.RLSRequests, m.RLSDescriptors, m.RLSDuration,
		m.Decisions, m.DecisionDuration, m.WouldDeny,
		m.RedisDuration, m.RedisErrors, m.RedisPipeline, m.RedisConnFailures, m.RedisInflightRejected,
		m.PolicyOverLimitCacheHits, m.PolicyLimitFallback,
		m.ConfigReloads, m.ConfigLastReload,
		m.InFlight, m.Ready,
		m.CacheLookups, m.CacheInvalidations, m.CacheActive,
		m.Shed, m.Connections, m.ConnectionsLimited,
	)
	return m
}

// CacheResults are the result label values of CacheLookups.
var CacheResults = []string{"hit", "negative_hit", "miss"}

// CacheObserver returns a function that counts one lookup result of the named cache, with the
// counters resolved up front so that the hot path does no label hashing. Results outside
// CacheResults are not counted.
func (m *Metrics) CacheObserver(cache string) func(result string) {
	cs := make(map[string]prometheus.Counter, len(CacheResults))
	for _, r := range CacheResults {
		cs[r] = m.CacheLookups.WithLabelValues(cache, r)
	}
	return func(result string) {
		if c, ok := cs[result]; ok {
			c.Inc()
		}
	}
}

// LimitFallbackObserver returns a function that counts one fallback decision of the policy
// limits by whether it allowed the request, with both counters resolved up front.
func (m *Metrics) LimitFallbackObserver() func(allowed bool) {
	allow, deny := m.PolicyLimitFallback.WithLabelValues("allow"), m.PolicyLimitFallback.WithLabelValues("deny")
	return func(allowed bool) {
		if allowed {
			allow.Inc()
		} else {
			deny.Inc()
		}
	}
}

// latencyBuckets spans 50µs to 1s: a sidecar decision is expected in well under a millisecond,
// and Envoy gives up after 20 ms (ratelimit) or 200 ms (ext_authz).
var latencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1,
}
