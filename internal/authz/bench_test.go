package authz

import (
	"context"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/sessions"
)

// nopLimiter allows everything without Redis, so the benchmarks measure the decision itself.
type nopLimiter struct{}

func (nopLimiter) Allow(_ context.Context, reqs []ratelimit.Request) (time.Time, []ratelimit.Decision, error) {
	ds := make([]ratelimit.Decision, len(reqs))
	for i, r := range reqs {
		ds[i] = ratelimit.Decision{Allowed: true, Limit: r.Limit.Requests, Remaining: r.Limit.Requests - 1, Reset: 30 * time.Second}
	}
	return time.Unix(1_800_000_000, 0), ds, nil
}

func benchEngine(b *testing.B) *Engine {
	b.Helper()
	cfg, err := config.Parse("bench.yaml", []byte(engineConfig))
	if err != nil {
		b.Fatal(err)
	}
	e, err := newEngine(b, cfg, Options{
		Sessions: fakeSessions{table: map[string]*sessions.Session{
			"alice": {ID: "a", Subject: "alice", Roles: []string{"admin"}, Headers: []sessions.Header{{Name: "x-user-id", Value: "alice"}, {Name: "x-user-role", Value: "admin"}}},
		}},
		Keys:    fakeKeys{table: map[string]apikeys.Record{"k-basic": {ID: "k_basic", Scopes: []string{"read"}}}},
		Limiter: nopLimiter{},
		Timeout: time.Second,
		Headers: ratelimit.FormatDraft7,
	})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkPolicyMatch finds the policy of a request that matches the fourth of five.
func BenchmarkPolicyMatch(b *testing.B) {
	st := benchEngine(b).state.Load()
	r := req("GET", "/api/items")
	b.ReportAllocs()
	for b.Loop() {
		if st.Match(r.Method, r.Host, r.Path) == nil {
			b.Fatal("no policy")
		}
	}
}

// BenchmarkRead is what every transport does before a decision: the raw target, host and
// method read into the canonical request.
func BenchmarkRead(b *testing.B) {
	e := benchEngine(b)
	raw := Raw{Method: "GET", Target: "/api/items/42?page=2", Host: "Example.com:8080", Peer: PeerAddr("192.0.2.7"),
		Headers: map[string]string{"cookie": "sid=alice", "user-agent": "bench"}, HeaderCount: 2}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Read(raw); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecide is one whole decision (session route with a role, then an API key route
// with a limit) without Redis: the CPU the sidecar adds around its round trips.
func BenchmarkDecide(b *testing.B) {
	e := benchEngine(b)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    *Request
	}{
		{"session-role", req("GET", "/admin/x", "cookie", "sid=alice")},
		{"apikey-limit", req("GET", "/api/x", "x-api-key", "k-basic")},
		{"open-limit", req("POST", "/login")},
		{"optional-session", req("GET", "/maybe/x", "cookie", "sid=alice")},
		{"optional-anonymous", req("GET", "/maybe/x", "cookie", "sid=mallory", "x-user-id", "root")},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := e.Decide(ctx, tc.r); !d.Allow {
					b.Fatalf("denied: %+v", d)
				}
			}
		})
	}
}

// BenchmarkCheckResponse builds Envoy's answer for an allowed request with identity and
// RateLimit headers.
func BenchmarkCheckResponse(b *testing.B) {
	d := benchEngine(b).Decide(context.Background(), req("GET", "/api/x", "x-api-key", "k-basic"))
	b.ReportAllocs()
	for b.Loop() {
		if checkResponse(d).GetOkResponse() == nil {
			b.Fatal("not ok")
		}
	}
}

// BenchmarkLimitKey builds one limit key.
func BenchmarkLimitKey(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = limitKey("rl:", "api", "per-user", "session:alice")
	}
}
