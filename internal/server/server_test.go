package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/metrics"
)

// fakeBackend fails its pings with err while down, an error that names an address the way a
// Redis dial error does.
type fakeBackend struct {
	down atomic.Bool
	err  error
}

func (f *fakeBackend) Ping(context.Context) error {
	if f.down.Load() {
		if f.err != nil {
			return f.err
		}
		return errors.New("redisconn: ping redis://10.1.2.3:6379/0: dial tcp 10.1.2.3:6379: connect: connection refused")
	}
	return nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadinessAndShutdown(t *testing.T) {
	be := &fakeBackend{}
	s, err := New(Options{
		GRPCAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Backend: be, Grace: time.Second, Drain: 300 * time.Millisecond, Metrics: metrics.New(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	admin := "http://" + s.AdminAddr().String()

	if code, _ := get(t, admin+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, body := get(t, admin+"/readyz"); code != 503 {
		t.Fatalf("/readyz before the config is loaded = %d %s", code, body)
	}
	s.SetLoaded(true)
	if code, _ := get(t, admin+"/readyz"); code != 200 {
		t.Fatalf("/readyz when loaded = %d", code)
	}
	be.down.Store(true)
	if code, body := get(t, admin+"/readyz"); code != 503 || body != "not ready: redis unreachable\n" {
		t.Fatalf("/readyz with Redis down = %d %q, want 503 with a fixed phrase", code, body)
	}
	be.down.Store(false)

	// gRPC health follows readiness.
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && r.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gRPC health never SERVING: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := get(t, admin+"/metrics"); code != 200 {
		t.Fatalf("/metrics = %d", code)
	}
	if code, _ := get(t, admin+"/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/ without admin.pprof = %d, want 404", code)
	}
	if code, _ := get(t, "http://"+s.HTTPAddr().String()+"/anything"); code != 404 {
		t.Fatalf("HTTP listener without a handler = %d, want 404", code)
	}

	// Shutdown: readiness turns 503 during the drain, then Run returns nil.
	cancel()
	time.Sleep(100 * time.Millisecond)
	if code, _ := get(t, admin+"/readyz"); code != 503 {
		t.Fatalf("/readyz during drain = %d", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after shutdown")
	}
}

func TestBusyPortFailsNew(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = New(Options{GRPCAddr: l.Addr().String(), HTTPAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("New bound a busy port")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "10.0.0.1:1": false, "0.0.0.0:1": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != want {
			t.Errorf("isLoopback(%s) = %v, want %v", addr, got, want)
		}
	}
}
