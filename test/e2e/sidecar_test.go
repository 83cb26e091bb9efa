// Package e2e runs the extauthz binary as its own process against real redis-server
// processes and talks to it over real sockets, the way Envoy and operators do.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/redistest"
)

// binPath is the extauthz binary built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "extauthz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "extauthz")
	build := exec.Command("go", "build", "-o", binPath, "../../cmd/extauthz")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build extauthz:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// sidecar is one running extauthz process.
type sidecar struct {
	t         *testing.T
	cmd       *exec.Cmd
	logs      *syncBuffer
	grpcAddr  string
	adminAddr string
	httpAddr  string
	done      chan struct{}
	exitErr   error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
}

// startSidecar runs `extauthz serve` with args plus free listen addresses and waits until
// /healthz answers. It is stopped with SIGTERM at cleanup.
func startSidecar(t *testing.T, args ...string) *sidecar {
	t.Helper()
	s := &sidecar{t: t, logs: &syncBuffer{}, done: make(chan struct{})}
	s.grpcAddr, s.httpAddr, s.adminAddr = freeAddr(t), freeAddr(t), freeAddr(t)
	all := append([]string{"serve", "--grpc-addr", s.grpcAddr, "--http-addr", s.httpAddr, "--admin-addr", s.adminAddr}, args...)
	s.cmd = exec.Command(binPath, all...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.Env = append(os.Environ(), "EXTAUTHZ_REDIS_URL=", "EXTAUTHZ_GRPC_ADDR=", "EXTAUTHZ_HTTP_ADDR=", "EXTAUTHZ_ADMIN_ADDR=")
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start extauthz: %v", err)
	}
	go func() {
		s.exitErr = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() { s.stop() })
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, _ := s.get("/healthz")
		if code == http.StatusOK {
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("extauthz exited early: %v\n%s", s.exitErr, s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("extauthz did not answer /healthz\n%s", s.logs.String())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// get fetches an admin path and returns the status code and body.
func (s *sidecar) get(path string) (int, string) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.adminAddr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady waits for /readyz to answer 200.
func (s *sidecar) waitReady() {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := s.get("/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("not ready: %d %s\n%s", code, body, s.logs.String())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// signal sends sig to the process.
func (s *sidecar) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
}

// stop sends SIGTERM and waits for the exit, killing the process if it hangs.
func (s *sidecar) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("extauthz ignored SIGTERM for 15s\n%s", s.logs.String())
	}
}

// waitExit waits for the process to exit and returns its exit code.
func (s *sidecar) waitExit(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("extauthz did not exit within %v\n%s", timeout, s.logs.String())
	}
	if s.exitErr == nil {
		return 0
	}
	if ee, ok := s.exitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// dial opens a gRPC client connection to the sidecar.
func (s *sidecar) dial() rlsv3.RateLimitServiceClient {
	s.t.Helper()
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		s.t.Fatalf("dial %s: %v", s.grpcAddr, err)
	}
	s.t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

// writeFile writes content to dir/name, creating dir.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitForWindowRoom sleeps past the next window boundary when fewer than need seconds are
// left in the current window of size window, by Redis's clock, so a test's requests all land
// in one window.
func waitForWindowRoom(t *testing.T, r *redistest.Server, window, need int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	now := redisNow(t, ctx, r)
	left := window - now%window
	if left < need {
		time.Sleep(time.Duration(left)*time.Second + 100*time.Millisecond)
	}
}

func redisNow(t *testing.T, ctx context.Context, r *redistest.Server) int64 {
	t.Helper()
	// TIME returns an array; Do gives the first line, so read the seconds with a tiny Lua call.
	out, err := r.Do(ctx, "EVAL", "return redis.call('TIME')[1]", "0")
	if err != nil {
		t.Fatalf("redis TIME: %v", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("redis TIME reply %q: %v", out, err)
	}
	return n
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
