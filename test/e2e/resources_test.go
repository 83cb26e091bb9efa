package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/config"
)

// The resource test's own listener settings: short enough to watch them act within the test.
const (
	resReadTimeout = 2 * time.Second
	resIdleTimeout = 4 * time.Second
	// resIdleConns is how many idle keep-alive connections the test opens: about twice the
	// default connection cap.
	resIdleConns = 2000
)

// One sidecar, every bound an attacker would lean on: thousands of idle keep-alive
// connections, bodies at one byte a second, ten thousand duplicate headers over HTTP and over
// Check, ten thousand descriptors in one ShouldRateLimit. The sidecar keeps answering, its
// file descriptors stay under the cap, and every hostile request is answered within a second.
func TestResourceBounds(t *testing.T) {
	raiseNoFile(t, resIdleConns+512)
	dir := t.TempDir()
	writeFile(t, dir+"/rls", "mesh.yaml", perMinute100)
	cfg := writeFile(t, dir, "extauthz.yaml", fmt.Sprintf(`
server:
  http: {read_header_timeout: 1s, read_timeout: %s, idle_timeout: %s}
ratelimit: {config_dir: %s}
policies:
  - {name: open, match: {path_prefix: /}, auth: none}
`, resReadTimeout, resIdleTimeout, dir+"/rls"))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	pid := s.cmd.Process.Pid
	authc := dialCheck(t, s)
	rls := s.dial()
	capConns := config.DefaultHTTPMaxConnections

	baseline := openFDs(t, pid)
	t.Logf("sidecar fds at rest: %d; http max_connections (default): %d", baseline, capConns)

	t.Run("idle keep-alive connections", func(t *testing.T) {
		var peak atomic.Int64
		stopSampling := sampleFDs(t, pid, &peak)
		t0 := time.Now()
		conns, failed := openIdle(t, s.httpAddr, resIdleConns)
		opened := time.Since(t0)
		stopSampling()
		t.Cleanup(func() {
			for _, c := range conns {
				c.Close()
			}
		})
		if failed > 0 {
			t.Errorf("%d of %d requests on fresh connections failed while the cap evicted idle ones", failed, resIdleConns)
		}

		// The sidecar still answers a new HTTP client and Check at once.
		d, code := timedHTTP(t, s.httpAddr, "GET /envoy/ok HTTP/1.1\r\nHost: app.example\r\n\r\n")
		if code != http.StatusOK || d > time.Second {
			t.Errorf("HTTP with %d idle connections held: %d in %v, want 200 within 1s", resIdleConns, code, d)
		}
		t1 := time.Now()
		resp := check(t, authc, checkRequest("GET", "/ok", nil, ""))
		if d := time.Since(t1); resp.GetStatus().GetCode() != int32(codes.OK) || d > time.Second {
			t.Errorf("Check with %d idle connections held: %v in %v, want OK within 1s", resIdleConns, resp.GetStatus(), d)
		}

		now := openFDs(t, pid)
		evicted := metricValue(t, s, `extauthz_connections_limited_total{action="evicted_idle",listener="http"}`)
		t.Logf("opened %d keep-alive connections in %v: sidecar fds peak %d, now %d (cap %d + %d at rest); %v evicted idle",
			resIdleConns, opened.Round(time.Millisecond), peak.Load(), now, capConns, baseline, evicted)
		if limit := int64(capConns + baseline + 32); peak.Load() > limit {
			t.Errorf("sidecar fds peaked at %d, over the cap of %d connections plus %d at rest", peak.Load(), capConns, baseline)
		}
		if evicted < 1 {
			t.Errorf("no idle connection was evicted with %d opened against a cap of %d", resIdleConns, capConns)
		}

		// idle_timeout closes them all: the fd count returns to rest.
		t2 := time.Now()
		deadline := t2.Add(resIdleTimeout + 5*time.Second)
		for openFDs(t, pid) > baseline+8 {
			if time.Now().After(deadline) {
				t.Fatalf("sidecar fds still %d (at rest %d) %v after idle_timeout %v", openFDs(t, pid), baseline, time.Since(t2), resIdleTimeout)
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("idle connections closed: fds back to %d %v after the last was opened (idle_timeout %v)",
			openFDs(t, pid), time.Since(t2).Round(100*time.Millisecond), resIdleTimeout)
	})

	t.Run("slow bodies", func(t *testing.T) {
		const n = 50
		held := make([]time.Duration, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				held[i] = slowBody(t, s.httpAddr)
			}()
		}
		wg.Wait()
		var longest time.Duration
		for _, d := range held {
			longest = max(longest, d)
		}
		t.Logf("%d bodies at 1 byte/s: the longest connection was held %v (read_timeout %v)", n, longest.Round(10*time.Millisecond), resReadTimeout)
		if longest > resReadTimeout+1500*time.Millisecond {
			t.Errorf("a 1 byte/s body held its connection %v, past read_timeout %v", longest, resReadTimeout)
		}
	})

	t.Run("ten thousand duplicate headers over HTTP", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("GET /envoy/ok HTTP/1.1\r\nHost: app.example\r\n")
		for range 10000 {
			b.WriteString("A:1\r\n")
		}
		b.WriteString("\r\n")
		d, code := timedHTTP(t, s.httpAddr, b.String())
		t.Logf("10,000 duplicate headers over HTTP: %d in %v", code, d.Round(time.Millisecond))
		if code < 400 || code >= 500 || d > time.Second {
			t.Errorf("got %d in %v, want a 4xx denial within 1s", code, d)
		}
	})

	t.Run("ten thousand duplicate headers over Check", func(t *testing.T) {
		req := checkRequest("GET", "/ok", nil, "")
		hm := &corev3.HeaderMap{}
		for k, v := range req.Attributes.Request.Http.Headers {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
		}
		for range 10000 {
			hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "x-dup", RawValue: []byte("1")})
		}
		req.Attributes.Request.Http.Headers, req.Attributes.Request.Http.HeaderMap = nil, hm
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t0 := time.Now()
		resp, err := authc.Check(ctx, req)
		d := time.Since(t0)
		t.Logf("10,000 duplicate headers over Check (header_map): status %v, error %v, in %v", resp.GetStatus(), err, d.Round(time.Millisecond))
		switch {
		case d > time.Second:
			t.Errorf("answered in %v, want within 1s", d)
		case err != nil && status.Code(err) != codes.InvalidArgument:
			t.Errorf("error %v, want a denial", err)
		case err == nil && resp.GetStatus().GetCode() == int32(codes.OK):
			t.Errorf("allowed, want a denial")
		}
	})

	t.Run("ten thousand descriptors", func(t *testing.T) {
		req := &rlsv3.RateLimitRequest{Domain: "mesh"}
		for i := range 10000 {
			req.Descriptors = append(req.Descriptors, rlsRequest("mesh", "user", strconv.Itoa(i)).Descriptors[0])
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t0 := time.Now()
		_, err := rls.ShouldRateLimit(ctx, req)
		d := time.Since(t0)
		t.Logf("10,000 descriptors in one ShouldRateLimit: %v in %v", status.Code(err), d.Round(time.Millisecond))
		if status.Code(err) != codes.InvalidArgument || d > time.Second {
			t.Errorf("got %v in %v, want InvalidArgument within 1s", err, d)
		}
	})

	// Still healthy after all of it.
	if resp := check(t, authc, checkRequest("GET", "/ok", nil, "")); resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("Check after the resource tests: %v", resp.GetStatus())
	}
}

// raiseNoFile makes sure the test process may hold need file descriptors, raising its soft
// limit up to the hard one; it skips the test when the hard limit is too low.
func raiseNoFile(t *testing.T, need uint64) {
	t.Helper()
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatal(err)
	}
	if r.Cur >= need {
		return
	}
	if r.Max < need {
		t.Skipf("RLIMIT_NOFILE hard limit %d is under the %d this test needs", r.Max, need)
	}
	r.Cur = need
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Fatalf("raise RLIMIT_NOFILE to %d: %v", need, err)
	}
}

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatalf("read fds of %d: %v", pid, err)
	}
	return len(es)
}

// sampleFDs records the highest fd count of pid every 10 ms until the returned func is called.
func sampleFDs(t *testing.T, pid int, peak *atomic.Int64) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	go func() {
		defer close(finished)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if es, err := os.ReadDir(dir); err == nil && int64(len(es)) > peak.Load() {
				peak.Store(int64(len(es)))
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() { close(done); <-finished }
}

// openIdle opens n connections to addr, each answering one keep-alive request, and leaves
// them open. It returns the connections and how many requests failed.
func openIdle(t *testing.T, addr string, n int) ([]net.Conn, int) {
	t.Helper()
	const workers = 16
	var (
		mu     sync.Mutex
		conns  []net.Conn
		failed int
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err == nil {
					err = roundTrip(c, "GET /envoy/ok HTTP/1.1\r\nHost: app.example\r\n\r\n")
				}
				mu.Lock()
				if c != nil {
					conns = append(conns, c)
				}
				if err != nil {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, failed
}

// roundTrip sends raw on c and reads one 200 response, leaving c open.
func roundTrip(c net.Conn, raw string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, raw); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// timedHTTP sends raw on a new connection and returns how long the answer took and its status
// (0 when there was none).
func timedHTTP(t *testing.T, addr, raw string) (time.Duration, int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	t0 := time.Now()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	d := time.Since(t0)
	if err != nil {
		t.Logf("no answer: %v", err)
		return d, 0
	}
	resp.Body.Close()
	return d, resp.StatusCode
}

// slowBody sends a request that declares a 1,000-byte body and then sends it one byte a
// second, and returns how long the sidecar kept the connection open (at most 10 s).
func slowBody(t *testing.T, addr string) time.Duration {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Error(err)
		return 0
	}
	defer c.Close()
	t0 := time.Now()
	if _, err := io.WriteString(c, "POST /envoy/ok HTTP/1.1\r\nHost: app.example\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Error(err)
		return 0
	}
	closed := make(chan time.Duration, 1)
	go func() {
		_ = c.SetReadDeadline(t0.Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c)
		closed <- time.Since(t0)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range 10 {
		select {
		case d := <-closed:
			return d
		case <-tick.C:
			if _, err := c.Write([]byte("x")); err != nil && !errors.Is(err, net.ErrClosed) {
				// The sidecar closed its end; the reader sees it next.
				continue
			}
		}
	}
	return <-closed
}
