package redistest

import (
	"os"
	"testing"
)

// StartOn starts a redis-server as Start does, on port, a loopback port the test chose
// (usually FreePort's): for a client pointed at a port before anything listens there, as in
// a sidecar that starts before its Redis. It skips or fails like Start when redis-server is
// not installed.
func StartOn(t testing.TB, port int, args ...string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("redis-server not found on PATH; .ci/run must install it (apt-get install -y redis-server)")
		}
		t.Skip("redis-server not found on PATH: install it (apt-get install -y redis-server) to run this test")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), port: port, args: args}
	s.start()
	t.Cleanup(s.Stop)
	return s
}
