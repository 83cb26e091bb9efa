package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/redistest"
)

func rlsRequest(domain string, kv ...string) *rlsv3.RateLimitRequest {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}}
}

const perMinute100 = `
domain: mesh
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 100}
`

// Two sidecar processes share one Redis: 64 concurrent clients send 10,000 requests against a
// limit of 100 per minute, and exactly 100 are allowed across both.
func TestTwoSidecarsShareOneLimitExactly(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	// This test is about exactness, not deadlines: give Redis calls room on a loaded machine.
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf("redis: {url: %q, timeout: 2s}\nratelimit: {config_dir: %q}\n", r.URL(), dir))
	a := startSidecar(t, "--config", cfg)
	b := startSidecar(t, "--config", cfg)
	a.waitReady()
	b.waitReady()
	clients := []rlsv3.RateLimitServiceClient{a.dial(), b.dial()}
	waitForWindowRoom(t, r, 60, 25)

	const total, workers = 10000, 64
	var next, ok, over, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%2]
			for next.Add(1) <= total && ctx.Err() == nil {
				resp, err := c.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "alice"))
				switch {
				case err != nil:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				case resp.OverallCode == rlsv3.RateLimitResponse_OK:
					ok.Add(1)
				default:
					over.Add(1)
				}
			}
		}(w)
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed, the first with: %v", failed.Load(), firstErr.Load())
	}
	if got := ok.Load(); got != 100 {
		t.Fatalf("allowed = %d, want exactly 100 (over = %d)", got, over.Load())
	}
	if got := ok.Load() + over.Load(); got != total {
		t.Fatalf("answered = %d, want %d", got, total)
	}
}

// Redis stops: answers become Unavailable within the deadline; Redis returns: answers resume
// without restarting the sidecar.
func TestRedisOutageAndRecovery(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf(`
redis: {url: %q, timeout: 40ms}
ratelimit: {config_dir: %q}
`, r.URL(), dir))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := s.dial()
	ctx := context.Background()
	if _, err := c.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "bob")); err != nil {
		t.Fatalf("before outage: %v", err)
	}

	r.Stop()
	for i := 0; i < 20; i++ {
		start := time.Now()
		_, err := c.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "bob"))
		took := time.Since(start)
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("during outage: got %v, want Unavailable", err)
		}
		// 40ms deadline, plus generous slack for a loaded CI machine.
		if took > 500*time.Millisecond {
			t.Fatalf("during outage: answer took %v, want about the 40ms deadline", took)
		}
	}
	if code, _ := s.get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during outage = %d, want 503", code)
	}
	// The client's redials were refused: counted and logged.
	if v := metricValue(t, s, `extauthz_redis_pipeline_connection_failures_total{reason="refused"}`); v < 1 {
		t.Errorf("connection failures (refused) = %v, want at least 1", v)
	}
	if !strings.Contains(s.logs.String(), "redis connection failed") {
		t.Errorf("no warning about the refused connection in the log:\n%s", s.logs.String())
	}
	// Requests that need no Redis still answer.
	resp, err := c.ShouldRateLimit(ctx, rlsRequest("unknown-domain", "user", "bob"))
	if err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OK {
		t.Fatalf("unknown domain during outage: %v %v", resp, err)
	}

	r.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.ShouldRateLimit(ctx, rlsRequest("mesh", "user", "bob"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after Redis came back: %v\n%s", err, s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.waitReady()
}

// A reload under load (file rewrites seen by the watcher, and SIGHUP) drops no request, and
// the new limit takes effect.
func TestHotReloadUnderLoad(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	// The test is about reloads, not deadlines: a loaded CI machine must not fail it with a
	// slow Redis call.
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf("redis: {url: %q, timeout: 2s}\nratelimit: {config_dir: %q}\n", r.URL(), dir))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := s.dial()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, err := c.ShouldRateLimit(ctx, rlsRequest("mesh", "user", fmt.Sprintf("u%d", w)))
				sent.Add(1)
				if err != nil {
					failed.Add(1)
				}
			}
		}(w)
	}
	for i := 0; i < 6; i++ {
		time.Sleep(150 * time.Millisecond)
		limit := 1000 + i
		writeFile(t, dir, "mesh.yaml", fmt.Sprintf("domain: mesh\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: %d}\n", limit))
		if i%2 == 1 {
			s.signal(syscall.SIGHUP)
		}
	}
	// Wait for the last good config to be in force, then break the file: it is rejected and
	// the last good config stays.
	limitNow := func() uint32 {
		resp, err := c.ShouldRateLimit(context.Background(), rlsRequest("mesh", "user", "fresh"))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
	}
	deadline := time.Now().Add(5 * time.Second)
	for limitNow() != 1005 {
		if time.Now().After(deadline) {
			t.Fatalf("the last good config was never loaded\n%s", s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	writeFile(t, dir, "mesh.yaml", "domain: mesh\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n")
	time.Sleep(600 * time.Millisecond)
	close(stop)
	wg.Wait()
	if sent.Load() < 100 {
		t.Fatalf("only %d requests sent during the reloads", sent.Load())
	}
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads", failed.Load(), sent.Load())
	}
	if got := limitNow(); got != 1005 {
		t.Fatalf("limit after reloads = %d, want 1005 (the last good config)", got)
	}
	logs := s.logs.String()
	if !strings.Contains(logs, "mesh.yaml:4") || !strings.Contains(logs, "fortnight") {
		t.Fatalf("the rejected file's problem is not logged with file and line:\n%s", logs)
	}
	_, metricsText := s.get("/metrics")
	if !strings.Contains(metricsText, `extauthz_config_reloads_total{component="ratelimit",result="error"}`) {
		t.Fatalf("reload errors not counted in metrics")
	}
}

// A Kubernetes ConfigMap update swaps the ..data symlink; the watcher must see it.
func TestReloadOnConfigMapSymlinkSwap(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	v1 := filepath.Join(dir, "..2026_01_01_00_00_00.1")
	writeFile(t, v1, "mesh.yaml", perMinute100)
	mustSymlink(t, filepath.Base(v1), filepath.Join(dir, "..data"))
	mustSymlink(t, "..data/mesh.yaml", filepath.Join(dir, "mesh.yaml"))
	s := startSidecar(t, "--redis-url", r.URL(), "--rls-config-dir", dir)
	s.waitReady()
	c := s.dial()
	limitNow := func() uint32 {
		resp, err := c.ShouldRateLimit(context.Background(), rlsRequest("mesh", "user", "k8s"))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Statuses[0].GetCurrentLimit().GetRequestsPerUnit()
	}
	if got := limitNow(); got != 100 {
		t.Fatalf("initial limit = %d, want 100", got)
	}
	// The kubelet's atomic update: write a new timestamped dir, point a temp link at it,
	// rename the temp link over ..data, remove the old dir.
	v2 := filepath.Join(dir, "..2026_01_01_00_00_01.2")
	writeFile(t, v2, "mesh.yaml", strings.Replace(perMinute100, "100", "250", 1))
	mustSymlink(t, filepath.Base(v2), filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(v1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for limitNow() != 250 {
		if time.Now().After(deadline) {
			t.Fatalf("ConfigMap swap not picked up\n%s", s.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// SIGTERM: readiness turns 503, in-flight calls finish, the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	r := redistest.Start(t)
	dir := t.TempDir()
	writeFile(t, dir, "mesh.yaml", perMinute100)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf(`
redis: {url: %q, timeout: 2s}
ratelimit: {config_dir: %q}
shutdown: {drain: 2s, grace: 5s}
`, r.URL(), dir))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := s.dial()

	var wg sync.WaitGroup
	var failed atomic.Int64
	stop := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.ShouldRateLimit(context.Background(), rlsRequest("mesh", "user", "t")); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	s.signal(syscall.SIGTERM)
	// Callers keep going into the drain (which lasts 2s): the server must still answer them.
	time.Sleep(150 * time.Millisecond)
	close(stop)
	wg.Wait()
	code, _ := s.get("/readyz")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during drain = %d, want 503", code)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed during the drain", failed.Load())
	}
	if exit := s.waitExit(10 * time.Second); exit != 0 {
		t.Fatalf("exit code = %d, want 0\n%s", exit, s.logs.String())
	}
}
