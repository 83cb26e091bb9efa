package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/redistest"
)

// Flood sizes: 128 concurrent callers from one address, 20 login attempts each, against 5
// per 15 minutes.
const (
	floodCallers  = 128
	floodRequests = 20
	floodLimit    = 5
	// floodSlack is how far over the limit a flood may get. Redis admits at most the limit
	// (one atomic script), and while Redis calls fail the sidecar's local counts admit at
	// most the limit per process (exact, under a lock); each side also counts what the other
	// let through (ratelimit.Guard), so the sum stays within the limit up to Redis replies
	// handled out of the order Redis decided them in, which can each add one. Every measured
	// run allowed exactly the limit; whatever the timing, the sum cannot pass twice the limit.
	floodSlack = 3
)

// floodResult counts the answers of one flood.
type floodResult struct {
	allowed, degraded, denied, errors atomic.Int64
	other                             sync.Map // unexpected answers, by description
}

// TestFloodLimitsHold floods a freshly started sidecar with login attempts from one client
// address, for each algorithm, on an idle Redis and while another client keeps Redis busy so
// that most limiter calls miss their 25 ms deadline (failure.limits: open). Before the
// over-limit cache and local fallback counts, hundreds passed cold and thousands while Redis
// was busy, all marked degraded.
func TestFloodLimitsHold(t *testing.T) {
	for _, algo := range []string{"sliding", "fixed", "gcra"} {
		for _, busy := range []bool{false, true} {
			name := algo + "/cold"
			if busy {
				name = algo + "/redis_busy"
			}
			t.Run(name, func(t *testing.T) { floodOnce(t, algo, busy) })
		}
	}
}

func floodOnce(t *testing.T, algo string, busy bool) {
	r := redistest.Start(t, "--enable-debug-command", "local")
	dir := t.TempDir()
	cfg := writeFile(t, dir, "extauthz.yaml", fmt.Sprintf(`redis: {url: %q}
policies:
  - name: login
    match: {path_prefix: /login}
    auth: none
    limits: [{by: ip, requests: %d, window: 15m, algorithm: %s}]
    failure: {limits: open}
`, r.URL(), floodLimit, algo))
	s := startSidecar(t, "--config", cfg)
	conns := make([]authv3.AuthorizationClient, 4)
	for i := range conns {
		conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns[i] = authv3.NewAuthorizationClient(conn)
	}
	if busy {
		// Warm up from another address (connection dialed, script loaded), so that only the
		// busy Redis explains what follows.
		for range 3 {
			if resp := check(t, conns[0], loginFrom("192.0.2.99")); resp.GetOkResponse() == nil {
				t.Fatalf("warm-up: %v", resp)
			}
		}
		stop := keepRedisBusy(t, r)
		defer stop()
	}

	var res floodResult
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range floodCallers {
		wg.Add(1)
		go func(c authv3.AuthorizationClient) {
			defer wg.Done()
			<-start
			for range floodRequests {
				res.add(c, loginFrom("198.51.100.7"))
			}
		}(conns[i%len(conns)])
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(t0)

	var other []string
	res.other.Range(func(k, v any) bool {
		other = append(other, fmt.Sprintf("%s x%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%s busy=%v: %d requests in %v: allowed %d (degraded %d), denied %d, errors %d %v; over-limit cache hits %v, fallback allow %v deny %v",
		algo, busy, floodCallers*floodRequests, took.Round(time.Millisecond),
		res.allowed.Load(), res.degraded.Load(), res.denied.Load(), res.errors.Load(), other,
		metricValue(t, s, "extauthz_policy_overlimit_cache_hits_total"),
		metricValue(t, s, `extauthz_policy_limit_fallback_total{result="allow"}`),
		metricValue(t, s, `extauthz_policy_limit_fallback_total{result="deny"}`))
	if got := res.allowed.Load(); got > floodLimit+floodSlack {
		t.Errorf("allowed %d of %d, want at most the limit %d plus %d", got, floodCallers*floodRequests, floodLimit, floodSlack)
	}
	if got := res.allowed.Load(); got < 1 {
		t.Errorf("allowed nothing: the flood was not let in at all")
	}
	if n := res.errors.Load(); n != 0 {
		t.Errorf("%d answers were errors, want none under failure.limits: open", n)
	}
	fallbacks := metricValue(t, s, `extauthz_policy_limit_fallback_total{result="allow"}`) +
		metricValue(t, s, `extauthz_policy_limit_fallback_total{result="deny"}`)
	if busy && fallbacks < 1 {
		t.Errorf("no limit check fell back to local counts: Redis was never too slow, so this run tested nothing")
	}
	if !busy && metricValue(t, s, "extauthz_policy_overlimit_cache_hits_total") < 1 {
		t.Errorf("no answer came from the over-limit cache")
	}
}

// loginFrom is a login attempt whose client address, as Envoy reports it, is ip.
func loginFrom(ip string) *authv3.CheckRequest {
	req := checkRequest("POST", "/login", nil, "")
	req.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{
		SocketAddress: &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40123}},
	}}
	return req
}

// add sends one Check and counts its answer.
func (res *floodResult) add(c authv3.AuthorizationClient, req *authv3.CheckRequest) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	switch {
	case err != nil:
		res.errors.Add(1)
		res.note("grpc " + status.Code(err).String())
	case resp.GetOkResponse() != nil:
		res.allowed.Add(1)
		if _, ok := headerValue(resp.GetOkResponse().GetHeaders(), "x-extauthz-degraded"); ok {
			res.degraded.Add(1)
		}
	case resp.GetDeniedResponse().GetStatus().GetCode() == 429:
		res.denied.Add(1)
	case resp.GetDeniedResponse() != nil:
		res.errors.Add(1)
		res.note(fmt.Sprintf("denied %d", resp.GetDeniedResponse().GetStatus().GetCode()))
	default:
		res.errors.Add(1)
		res.note(fmt.Sprintf("status %d", resp.GetStatus().GetCode()))
	}
}

func (res *floodResult) note(what string) {
	v, _ := res.other.LoadOrStore(what, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// keepRedisBusy blocks r in 50 ms DEBUG SLEEPs, back to back on a connection of its own,
// until the returned stop is called (or 20 s pass). It returns as soon as the first sleep
// has been sent, so that a flood started next meets a Redis that answers nothing for about
// 50 ms, twice the sidecar's 25 ms deadline, and again after every short gap.
func keepRedisBusy(t *testing.T, r *redistest.Server) (stop func()) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	const sleep = "*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$4\r\n0.05\r\n"
	// The first sleep's reply proves DEBUG is allowed (enable-debug-command).
	rd := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, sleep); err != nil {
		t.Fatal(err)
	}
	if line, err := rd.ReadString('\n'); err != nil || line != "+OK\r\n" {
		t.Fatalf("DEBUG SLEEP: %q %v", line, err)
	}
	var quit atomic.Bool
	sent := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		first := true
		for !quit.Load() {
			if _, err := io.WriteString(conn, sleep); err != nil {
				return
			}
			if first {
				close(sent)
				first = false
			}
			if _, err := rd.ReadString('\n'); err != nil {
				return
			}
		}
	}()
	select {
	case <-sent:
	case <-done:
		t.Fatal("could not keep redis busy")
	}
	return func() {
		quit.Store(true)
		<-done
		conn.Close()
	}
}
