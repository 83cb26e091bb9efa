package rls

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running at the
// end: every goroutine must have an owner that stops it. Two rueidis goroutines are the
// exceptions, as in redisconn's tests: each is a sleep that ends by itself and that Close does
// not stop (internal/redisclientcheck REPORT.md, "Other findings").
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}
