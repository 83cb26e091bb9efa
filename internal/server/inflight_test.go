package server

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/metrics"
)

// gate holds every call that reaches it until open is closed, and counts the calls inside.
type gate struct {
	open    chan struct{}
	mu      sync.Mutex
	entered int
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) wait(ctx context.Context) {
	g.mu.Lock()
	g.entered++
	g.mu.Unlock()
	select {
	case <-g.open:
	case <-ctx.Done():
	}
}

func (g *gate) inside() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered
}

type gatedAuth struct {
	authv3.UnimplementedAuthorizationServer
	g *gate
}

func (a gatedAuth) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.g.wait(ctx)
	return &authv3.CheckResponse{}, nil
}

type gatedRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
	g *gate
}

func (r gatedRLS) ShouldRateLimit(ctx context.Context, _ *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	r.g.wait(ctx)
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}, nil
}

// The cap is shared by every transport: with two decisions held (one Check, one HTTP), the
// next Check, ShouldRateLimit and HTTP request are each answered at once, health checks still
// answer, and the slots come back when the held calls end.
func TestInflightCapSheds(t *testing.T) {
	g := newGate()
	m := metrics.New()
	s := start(t, Options{
		MaxInflight:   2,
		Authorization: gatedAuth{g: g},
		RateLimit:     gatedRLS{g: g},
		HTTPHandler:   http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.wait(r.Context()); w.WriteHeader(http.StatusOK) }),
		Metrics:       m,
	})
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	auth, rls := authv3.NewAuthorizationClient(conn), rlsv3.NewRateLimitServiceClient(conn)
	httpURL := "http://" + s.HTTPAddr().String() + "/forward"

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held := make(chan error, 2)
	go func() { _, err := auth.Check(ctx, &authv3.CheckRequest{}); held <- err }()
	go func() {
		resp, err := http.Get(httpURL)
		if err == nil {
			resp.Body.Close()
		}
		held <- err
	}()
	waitFor(t, 5*time.Second, "two held decisions", func() bool { return g.inside() == 2 })

	t0 := time.Now()
	_, err = auth.Check(ctx, &authv3.CheckRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Check past the cap = %v, want Unavailable", err)
	}
	_, err = rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: "d"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("ShouldRateLimit past the cap = %v, want Unavailable", err)
	}
	resp, err := http.Get(httpURL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("X-Extauthz-Status") != "503" || oneLine(string(body)) != `{"error":"overloaded"}` {
		t.Fatalf("HTTP past the cap = %d %q %s, want 503 with X-Extauthz-Status: 503 and {\"error\":\"overloaded\"}",
			resp.StatusCode, resp.Header.Get("X-Extauthz-Status"), body)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("three shed answers took %v; shedding must answer at once", d)
	}
	if h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check shed while overloaded: %v %v", h, err)
	}
	for _, tr := range []string{transportCheck, transportRateLimit, transportHTTP} {
		if got := counter(t, m, "shed", tr); got != 1 {
			t.Errorf("extauthz_shed_total{transport=%q} = %v, want 1", tr, got)
		}
	}
	if got := g.inside(); got != 2 {
		t.Fatalf("%d calls reached the services, want the 2 held ones only", got)
	}

	close(g.open)
	for range 2 {
		if err := <-held; err != nil {
			t.Fatalf("held call: %v", err)
		}
	}
	if _, err := auth.Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Fatalf("Check after the held calls ended = %v, want a slot free", err)
	}
}

// With no cap, nothing is counted and nothing is shed.
func TestInflightNoCap(t *testing.T) {
	f := newInflight(0, nil)
	for range 10 {
		if !f.acquire(nil) {
			t.Fatal("acquire failed without a cap")
		}
	}
	if got := f.n.Load(); got != 0 {
		t.Fatalf("counter moved without a cap: %d", got)
	}
}
