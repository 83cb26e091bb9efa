package redisconn

import (
	"crypto/tls"
	"math/bits"
	"net"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// maxFlushDelay lets rueidis gather the commands of concurrent callers into one write. At
// 20 µs it bought 7–31% throughput and less Redis CPU per call in the client A/B
// (redisclientcheck REPORT.md, (f)), for latency well under the per-call deadline.
const maxFlushDelay = 20 * time.Microsecond

// sentinelRefresh is how often a Sentinel client asks the sentinels who the master is, on top
// of listening for +switch-master: rueidis documents it as the only way back from a missed
// event.
const sentinelRefresh = 5 * time.Second

// clusterRefresh is how often a Cluster client reads the slot map on its own (see
// clientOption).
const clusterRefresh = time.Second

// clientOption maps a parsed URL and Options onto rueidis. It is pure, so that tests can check
// the mapping without a server; the caller adds the dialer.
func clientOption(u redisurl.URL, opts Options, tlsConf *tls.Config, cache bool) rueidis.ClientOption {
	o := rueidis.ClientOption{
		InitAddress: append([]string(nil), u.Addrs...),
		Username:    u.Username,
		Password:    u.Password,
		SelectDB:    u.DB,
		TLSConfig:   tlsConf,
		Dialer:      net.Dialer{Timeout: opts.DialTimeout},

		// Every call goes through the pipeline, so a call that times out leaves its connection
		// open. Without it rueidis closes the connection on a lone call's timeout, and the
		// redial it then makes against a stalled server held other callers for up to 1 s,
		// whatever their deadlines (REPORT.md, (a)).
		AlwaysPipelining: true,
		// One connection per node: rueidis's default of several per node cost throughput and
		// Redis CPU in the A/B (REPORT.md, (f)).
		PipelineMultiplex: multiplex(opts.ConnsPerNode),
		MaxFlushDelay:     maxFlushDelay,
		// Retries stay on: rueidis retries only commands marked read-only (GET, HGETALL, the
		// cached reads), never EVALSHA, EVAL, EXPIRE or a MULTI/EXEC, so nothing that writes
		// runs twice, and a retried read stays inside its caller's deadline (REPORT.md, (b)).
		DisableRetry: false,
		// No CLIENT SETINFO on every new connection: one round trip saved per dial, and Redis
		// before 7.2 and the embedded store answer it with an error.
		ClientSetInfo: []string{},
		// Tracking is OPTIN (rueidis's default): only DoCache reads are tracked.
		DisableCache:      !cache,
		CacheSizeEachConn: max(opts.CacheBytes, 0),
	}
	switch u.Topology {
	case redisurl.Single, redisurl.Unix:
		// The URL already says this is no cluster: skip rueidis's CLUSTER SLOTS probe.
		o.ForceSingleClient = true
	case redisurl.Sentinel:
		o.Sentinel = rueidis.SentinelOption{
			MasterSet:               u.MasterName,
			Username:                u.SentinelUsername,
			Password:                u.SentinelPassword,
			TLSConfig:               tlsConf,
			Dialer:                  o.Dialer,
			TopologyRefreshInterval: sentinelRefresh,
		}
	case redisurl.Cluster:
		// Topology from CLUSTER SLOTS (rueidis's default: its CLUSTER SHARDS mode is wrong on
		// Redis 7 after a failover), refreshed on MOVED and on broken connections, and every
		// clusterRefresh besides: a master that hangs without closing its connections (a
		// partition, SIGSTOP) tells the client nothing until ConnWriteTimeout (10 s), while
		// its replica may have been promoted after 2 s. Without the refresh the client sent
		// that master's calls into the void for 12-13 s and served its cached keys for 9 s
		// after they changed on the new master; with it, 2.3-3.5 s and under 1.5 s
		// (redisclientcheck TestPartitionCluster). It costs one CLUSTER SLOTS a second.
		o.ClusterOption.ShardsRefreshInterval = clusterRefresh
	}
	return o
}

// multiplex is rueidis's PipelineMultiplex for n connections per node: -1 for one, else the
// exponent of the power of two at or above n.
func multiplex(n int) int {
	if n <= 1 {
		return -1
	}
	return bits.Len(uint(n - 1))
}
