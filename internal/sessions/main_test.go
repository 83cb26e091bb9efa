package sessions

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running at the
// end: every goroutine must have an owner that stops it. Two rueidis goroutines are the
// exceptions, each a sleep that ends by itself and that Close does not stop
// (internal/redisclientcheck REPORT.md, "Other findings"): a failed rueidis.NewClient leaves a
// delayed topology refresh sleeping for up to a second, and a Cluster client that dropped a
// node (TestCacheCluster's replicas, given as seeds) closes that node's connections 5 s later.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}
