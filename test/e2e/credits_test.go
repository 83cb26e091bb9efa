package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"

	"github.com/extauthz/extauthz/internal/redistest"
)

// Credits are exact across sidecars: two sidecar processes share one Redis, a key created by
// the CLI with creditsN credits is hammered by creditsCallers concurrent callers through both
// over real gRPC sockets, and exactly creditsN requests are allowed in total; every other one
// is a 429 (ResourceExhausted) and none fails. The policy also has a rate limit, decided in
// the same script: it counts only the allowed requests, so the RateLimit header of a request
// denied for credits shows exactly creditsN spent. Then the CLI reads the balance (0) and
// adds credits, which the very next request may spend. It runs on a single redis-server, on a
// Sentinel-managed one, and on a Redis Cluster, where the balance and the limit sit in
// different slots.
const (
	creditsN       = 500
	creditsCallers = 64
	creditsSent    = 4 * creditsN
	creditsBudget  = 60 * time.Second
	creditsLimit   = 100000
)

func TestCreditsExactAcrossSidecars(t *testing.T) {
	topologies := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"redis", func(t *testing.T) string { return redistest.Start(t).URL() }},
		{"sentinel", func(t *testing.T) string { return redistest.StartSentinel(t).URL(0) }},
		{"cluster", func(t *testing.T) string { return redistest.StartCluster(t).URL() }},
	}
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) {
			url := topo.url(t)
			cfg := writeFile(t, t.TempDir(), "extauthz.yaml", fmt.Sprintf(`redis: {url: %q, timeout: 2s}
policies:
  - name: metered
    match: {path_prefix: /api/}
    auth: apikey
    limits: [{name: hourly, by: apikey, requests: %d, window: 1h}]
`, url, creditsLimit))
			a := startSidecar(t, "--config", cfg)
			b := startSidecar(t, "--config", cfg)
			a.waitReady()
			b.waitReady()
			clients := []authv3.AuthorizationClient{dialCheck(t, a), dialCheck(t, b)}

			out := apikeyCLI(t, "create", "--owner", "e2e-credits", "--credits", fmt.Sprint(creditsN), "--redis-url", url)
			key := firstLine(out)
			id := strings.Fields(strings.Split(out, "\n")[1])[3]

			var allowed, over, failed, next atomic.Int64
			var firstErr atomic.Value
			began := time.Now()
			var wg sync.WaitGroup
			for range creditsCallers {
				wg.Go(func() {
					for time.Since(began) < creditsBudget {
						n := next.Add(1) - 1
						if n >= creditsSent {
							return
						}
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						resp, err := clients[n%2].Check(ctx, checkRequest("GET", "/api/x", map[string]string{"x-api-key": key}, ""))
						cancel()
						code := codes.Code(resp.GetStatus().GetCode())
						switch {
						case err != nil:
							failed.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
						case code == codes.OK:
							allowed.Add(1)
						case code == codes.ResourceExhausted && resp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_TooManyRequests:
							over.Add(1)
						default:
							failed.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprintf("status %v, http %v", code, resp.GetDeniedResponse().GetStatus().GetCode()))
						}
					}
				})
			}
			wg.Wait()
			took := time.Since(began)
			sent := allowed.Load() + over.Load() + failed.Load()
			if sent != creditsSent {
				t.Fatalf("sent %d of %d requests within %v", sent, creditsSent, creditsBudget)
			}
			if failed.Load() != 0 {
				t.Fatalf("%d requests failed, the first with %v", failed.Load(), firstErr.Load())
			}
			if allowed.Load() != creditsN || over.Load() != creditsSent-creditsN {
				t.Fatalf("allowed %d, denied %d; want exactly %d allowed and %d denied", allowed.Load(), over.Load(), creditsN, creditsSent-creditsN)
			}
			t.Logf("CREDITS %s: %d requests from %d callers through 2 sidecars in %v: exactly %d allowed",
				topo.name, sent, creditsCallers, took.Round(time.Millisecond), creditsN)

			// Over HTTP: the status, the body, and the limit's header, which counted the
			// allowed requests only.
			code, body, hdr := forwardGet(t, b, "/api/x", key)
			if code != 429 || strings.TrimSpace(body) != `{"error":"credits exhausted"}` {
				t.Errorf("over HTTP: %d %q, want 429 credits exhausted", code, body)
			}
			if want := fmt.Sprintf("limit=%d, remaining=%d, ", creditsLimit, creditsLimit-creditsN); !strings.HasPrefix(hdr.Get("RateLimit"), want) {
				t.Errorf("RateLimit %q, want %q...: a request denied for credits counted against the limit", hdr.Get("RateLimit"), want)
			}

			if out := apikeyCLI(t, "credits", id, "--redis-url", url); !strings.HasPrefix(out, id+": 0 credits remaining, no refill") {
				t.Errorf("credits after the run: %q", out)
			}
			apikeyCLI(t, "credits", id, "--add", "1", "--redis-url", url)
			if resp := check(t, clients[0], checkRequest("GET", "/api/x", map[string]string{"x-api-key": key}, "")); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				t.Errorf("after --add 1: %v, want allowed", resp.GetStatus())
			}
			if resp := check(t, clients[1], checkRequest("GET", "/api/x", map[string]string{"x-api-key": key}, "")); codes.Code(resp.GetStatus().GetCode()) != codes.ResourceExhausted {
				t.Errorf("the added credit was spent twice: %v", resp.GetStatus())
			}
			for _, s := range []*sidecar{a, b} {
				if exited(s) {
					t.Errorf("a sidecar exited:\n%s", s.logs.String())
				}
				if strings.Contains(s.logs.String(), key) {
					t.Errorf("a sidecar logged the key")
				}
			}
		})
	}
}

// apikeyCLI runs "extauthz apikey ARGS..." and returns its stdout, failing the test on a
// non-zero exit.
func apikeyCLI(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, append([]string{"apikey"}, args...)...)
	cmd.Env = append(os.Environ(), "EXTAUTHZ_REDIS_URL=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("extauthz apikey %s: %v\n%s%s", args[0], err, out, stderr.String())
	}
	return string(out)
}

// forwardGet asks s's forward_auth endpoint about GET path with the API key.
func forwardGet(t *testing.T, s *sidecar, path, key string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+s.httpAddr+"/forward", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Forwarded-Method", "GET")
	req.Header.Set("X-Forwarded-Uri", path)
	req.Header.Set("X-Api-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}
