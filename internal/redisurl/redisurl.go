// Package redisurl parses the one Redis URL the sidecar is given (redis://, rediss://,
// unix://, redis-sentinel://, redis-cluster:// and their TLS forms) into a value that says
// which topology to build and how to reach it. Config validation and the client builder both
// call Parse, so a URL that validates is a URL the server accepts.
package redisurl

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Topology is the shape of the deployment a URL names.
type Topology int

// The topologies. The zero Topology is not one of them: a URL comes from Parse.
const (
	// Single is one Redis server over TCP (redis://, rediss://).
	Single Topology = iota + 1
	// Unix is one Redis server over a unix socket (unix://).
	Unix
	// Sentinel is a master found through Redis Sentinel (redis-sentinel://, rediss-sentinel://).
	Sentinel
	// Cluster is a Redis Cluster reached through seed nodes (redis-cluster://, rediss-cluster://).
	Cluster
)

// String names the topology as its scheme does: single, unix, sentinel or cluster.
func (t Topology) String() string {
	switch t {
	case Single:
		return "single"
	case Unix:
		return "unix"
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	}
	return "Topology(" + strconv.Itoa(int(t)) + ")"
}

// Default ports, used for a host written without one.
const (
	// DefaultPort is the port of a data node (redis://, redis-cluster://).
	DefaultPort = 6379
	// DefaultSentinelPort is the port of a sentinel (redis-sentinel://).
	DefaultSentinelPort = 26379
)

// The default deadlines of a connection to Redis. They live here, in the one package that
// every Redis-facing package already depends on or can depend on without a cycle, so that
// config defaults, the client builder, the ext_authz engine and ShouldRateLimit share one
// value instead of each defining its own.
const (
	// DefaultTimeout is the per-call Redis deadline (redis.timeout). It sits well under
	// Envoy's 200 ms ext_authz timeout, so a slow Redis turns into a policy decision rather
	// than an Envoy timeout, but above the ratelimit filter's 20 ms default: a deployment
	// that keeps that default should lower this one or raise the filter's.
	DefaultTimeout = 25 * time.Millisecond
	// DefaultDialTimeout bounds one connection attempt, TLS handshake included
	// (redis.dial_timeout).
	DefaultDialTimeout = time.Second
)

// URL is what a Redis URL says. Its String and GoString methods return Redacted, so that
// printing a URL by mistake prints no credential.
type URL struct {
	// Topology says which client to build.
	Topology Topology
	// TLS is set by rediss://, rediss-sentinel://, rediss-cluster:// and tls=true. For
	// Sentinel it covers both the sentinels and the data nodes.
	TLS bool
	// Addrs are host:port pairs (IPv6 in brackets, a zone as in [fe80::1%eth0]:6379), in the
	// order written: one for Single, the sentinels for Sentinel, the seed nodes for Cluster.
	// For Unix it holds the one socket path.
	Addrs []string
	// Username and Password authenticate to the data nodes. Either may be empty.
	Username, Password string
	// DB is the logical database selected on every connection; always 0 for Cluster.
	DB int
	// MasterName is the name the sentinels know the master by (Sentinel only).
	MasterName string
	// SentinelUsername and SentinelPassword authenticate to the sentinels themselves
	// (Sentinel only), from the sentinel_username and sentinel_password parameters.
	SentinelUsername, SentinelPassword string
}

// Scheme is the canonical scheme of u: redis, rediss, unix, redis-sentinel, rediss-sentinel,
// redis-cluster or rediss-cluster. A sentinel or cluster URL written with tls=true has the
// rediss- scheme.
func (u URL) Scheme() string {
	s := "redis"
	if u.TLS {
		s = "rediss"
	}
	switch u.Topology {
	case Unix:
		return "unix"
	case Sentinel:
		return s + "-sentinel"
	case Cluster:
		return s + "-cluster"
	}
	return s
}

// Redacted renders u as a URL with no credential, for logs and errors: the scheme, the
// addresses, and the master name and database where the topology has them
// ("redis://10.0.0.1:6379/0", "unix:///run/redis.sock?db=0",
// "redis-sentinel://s1:26379,s2:26379/mymaster/0", "redis-cluster://n1:6379,n2:6379").
// Parse accepts what it returns and reads the same topology, addresses and database back.
func (u URL) Redacted() string {
	if u.Topology == 0 {
		return ""
	}
	if u.Topology == Unix {
		var path string
		if len(u.Addrs) > 0 {
			path = escapeAt((&url.URL{Path: u.Addrs[0]}).EscapedPath())
		}
		return "unix://" + path + "?db=" + strconv.Itoa(u.DB)
	}
	addrs := make([]string, len(u.Addrs))
	for i, a := range u.Addrs {
		// An IPv6 zone is written %25 in a URL (RFC 6874).
		addrs[i] = strings.ReplaceAll(a, "%", "%25")
	}
	s := u.Scheme() + "://" + strings.Join(addrs, ",")
	switch u.Topology {
	case Sentinel:
		s += "/" + escapeAt(url.PathEscape(u.MasterName)) + "/" + strconv.Itoa(u.DB)
	case Single:
		s += "/" + strconv.Itoa(u.DB)
	}
	return s
}

// escapeAt escapes the '@' that net/url leaves in a path: Parse takes an '@' after the host
// for a misplaced password.
func escapeAt(s string) string { return strings.ReplaceAll(s, "@", "%40") }

// String returns Redacted.
func (u URL) String() string { return u.Redacted() }

// GoString returns Redacted, so that %#v prints no credential either.
func (u URL) GoString() string { return u.Redacted() }

// Error is a problem with a URL. Msg names what is wrong and never quotes a credential, a
// query value, or any part of the URL that could be one.
type Error struct {
	// Part is the part of the URL that is wrong: scheme, userinfo, host, port, path, db,
	// master name, query or fragment.
	Part string
	// Msg says what is wrong, as a predicate of the URL ("has no host").
	Msg string
}

func (e *Error) Error() string { return "redisurl: url " + e.Msg }
