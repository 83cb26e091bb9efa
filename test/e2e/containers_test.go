package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// containerRedisImage is the official image the suite runs on; EXTAUTHZ_E2E_REDIS_IMAGE
// overrides it (say redis:8 or a registry mirror).
const containerRedisImage = "redis:7.4"

// TestContainersContract runs the contract suite (contract_test.go) against a redis-server of
// the official redis image, started by testcontainers-go, when a Docker engine is reachable
// on this machine. Without one the test skips: nothing in make test needs Docker.
func TestContainersContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if reason := dockerUnreachable(ctx); reason != "" {
		t.Skipf("no Docker engine reachable (%s): the contract suite on the official redis image is skipped", reason)
	}
	image := containerRedisImage
	if v := os.Getenv("EXTAUTHZ_E2E_REDIS_IMAGE"); v != "" {
		image = v
	}
	began := time.Now()
	redisPort := network.MustParsePort("6379/tcp")
	c, err := testcontainers.Run(ctx, image,
		testcontainers.WithExposedPorts("6379/tcp"),
		// Published on loopback only, never on every interface of the host.
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{redisPort: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}}
		}),
		testcontainers.WithWaitStrategy(wait.ForListeningPort("6379/tcp").WithStartupTimeout(2*time.Minute)),
	)
	testcontainers.CleanupContainer(t, c)
	if err != nil {
		t.Fatalf("start %s: %v", image, err)
	}
	port, err := c.MappedPort(ctx, "6379/tcp")
	if err != nil {
		t.Fatalf("%s: mapped port: %v", image, err)
	}
	addr := net.JoinHostPort("127.0.0.1", port.Port())
	t.Logf("%s up on %s in %v", image, addr, time.Since(began).Round(time.Millisecond))
	runContract(t, &topology{name: "container", kind: "single", url: "redis://" + addr + "/0", seeds: []string{addr}})
}

// dockerUnreachable returns why no Docker engine can run a container here and publish its
// port on this host's loopback, or "" when one can.
func dockerUnreachable(ctx context.Context) (reason string) {
	defer func() {
		// testcontainers panics on some broken setups instead of returning an error.
		if r := recover(); r != nil {
			reason = fmt.Sprint(r)
		}
	}()
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err.Error()
	}
	defer p.Close()
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.Health(hctx); err != nil {
		return err.Error()
	}
	// A remote engine would publish the port on another machine: the tests use loopback only.
	host, err := p.DaemonHost(hctx)
	if err != nil {
		return err.Error()
	}
	ips, err := net.DefaultResolver.LookupIPAddr(hctx, host)
	if err != nil || len(ips) == 0 {
		return fmt.Sprintf("docker host %q does not resolve: %v", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Sprintf("the engine at %q is not on this host's loopback", host)
		}
	}
	return ""
}
