package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// TestTopologyContract runs the contract suite (contract_test.go) against the three Redis
// deployments the sidecar supports, each with its own redis-server processes and its own
// sidecar, in parallel: a single server (redis://), Sentinel (redis-sentinel://, a master, a
// replica and three sentinels) and Cluster (redis-cluster://, three masters with a replica
// each).
func TestTopologyContract(t *testing.T) {
	for _, name := range []string{"single", "sentinel", "cluster"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			tp := startTopology(t, name)
			t.Logf("%s: topology up in %v (%s)", name, time.Since(began).Round(time.Millisecond), tp.url)
			runContract(t, tp)
			t.Logf("%s: contract done in %v", name, time.Since(began).Round(time.Millisecond))
		})
	}
}

// startTopology starts the named deployment on loopback ports, stopped at the test's end.
func startTopology(t *testing.T, kind string) *topology {
	t.Helper()
	switch kind {
	case "single":
		r := redistest.Start(t)
		return &topology{name: kind, kind: kind, url: r.URL(), seeds: []string{r.Addr()}}
	case "sentinel":
		s := redistest.StartSentinel(t)
		url := "redis-sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + s.MasterName()
		return &topology{name: kind, kind: kind, url: url, seeds: s.SentinelAddrs(), masterName: s.MasterName()}
	case "cluster":
		c := redistest.StartCluster(t)
		return &topology{name: kind, kind: kind, url: c.URL(), seeds: c.Addrs()}
	}
	t.Fatalf("unknown topology %q", kind)
	return nil
}
