package authz

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine they started is still running at the
// end: gRPC servers, Redis clients and their pools must be closed by their owners.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
