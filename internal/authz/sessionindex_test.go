package authz

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/sessions"
)

// seeingSessions is fakeSessions that also keeps count of the sessions handed to the index.
type seeingSessions struct {
	fakeSessions
	seen   *atomic.Int64
	lastIP *atomic.Pointer[string]
}

func (f seeingSessions) Seen(s *sessions.Session, ip, ua string) {
	f.seen.Add(1)
	v := ip + "|" + ua + "|" + s.Subject
	f.lastIP.Store(&v)
}

// TestEngineTellsSessionIndex: a decision identified by a session hands it, with the client's
// address and user agent, to the resolver's Seen; no other decision does.
func TestEngineTellsSessionIndex(t *testing.T) {
	cfg, err := config.Parse("test.yaml", []byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	f := seeingSessions{
		fakeSessions: fakeSessions{table: map[string]*sessions.Session{
			"alice": {ID: "a", Subject: "alice", Roles: []string{"admin"}},
			"anon":  {ID: "n"},
		}},
		seen: new(atomic.Int64), lastIP: new(atomic.Pointer[string]),
	}
	e, err := newEngine(t, cfg, Options{
		Sessions: f,
		Keys:     fakeKeys{},
		Limiter:  nopLimiter{},
		Timeout:  time.Second,
		Headers:  ratelimit.FormatDraft7,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		r    *Request
		seen int64
	}{
		{"session", req("GET", "/admin/x", "cookie", "sid=alice", "user-agent", "phone/1"), 1},
		{"optional session", req("GET", "/maybe/x", "cookie", "sid=alice", "user-agent", "phone/1"), 1},
		{"unknown session", req("GET", "/admin/x", "cookie", "sid=mallory"), 0},
		{"session without subject", req("GET", "/admin/x", "cookie", "sid=anon"), 0},
		{"open route", req("GET", "/healthz", "cookie", "sid=alice"), 0},
		{"optional anonymous", req("GET", "/maybe/x"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.seen.Load()
			e.Decide(ctx, tc.r)
			if got := f.seen.Load() - before; got != tc.seen {
				t.Fatalf("Seen called %d times, want %d", got, tc.seen)
			}
			if tc.seen > 0 {
				if got := *f.lastIP.Load(); got != "192.0.2.7|phone/1|alice" {
					t.Errorf("Seen got %q, want the client address, user agent and session", got)
				}
			}
		})
	}
}

// TestEngineKeepsSessionIndex runs the real store and recorder on redis-server: a decision's
// session ends up in its user's index, with the client's address and user agent.
func TestEngineKeepsSessionIndex(t *testing.T) {
	srv := redistest.Start(t)
	rc := redisClient(t, srv)
	ix, err := sessions.NewIndex(rc, sessions.IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writes := make(chan error, 4)
	rec := sessions.NewRecorder(ix, sessions.RecorderOptions{OnWrite: func(err error) { writes <- err }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { rec.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	st, err := sessions.New(rc, sessions.Options{Secrets: []string{"s"}, Subject: "userId", Roles: "role", Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("test.yaml", []byte(engineConfig))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{Sessions: st, Keys: fakeKeys{}, Limiter: nopLimiter{}, Timeout: time.Second, Headers: ratelimit.FormatDraft7})
	if err != nil {
		t.Fatal(err)
	}
	serverDo(t, srv, "SET", "sess:sid-1", `{"cookie":{},"userId":"alice","role":"admin"}`, "EX", "600")
	r := req("GET", "/admin/x", "cookie", sessions.CookiePair("connect.sid", "sid-1", "s"), "user-agent", "laptop/2")
	for i := 0; i < 5; i++ {
		if d := e.Decide(ctx, r); !d.Allow {
			t.Fatalf("denied: %+v", d)
		}
	}
	select {
	case err := <-writes:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no index write")
	}
	entries, err := ix.List(ctx, "alice")
	if err != nil || len(entries) != 1 {
		t.Fatalf("List = %+v, %v", entries, err)
	}
	if e := entries[0]; e.ID != sessions.PublicID("sid-1") || e.IP != "192.0.2.7" || e.UserAgent != "laptop/2" {
		t.Errorf("entry = %+v", e)
	}
	select {
	case err := <-writes:
		t.Fatalf("a second write (%v) for five requests within seen_every", err)
	default:
	}
}

// countingSessions is fakeSessions whose Seen only counts, as cheaply as sessions.Recorder's
// (an atomic operation).
type countingSessions struct {
	fakeSessions
	seen *atomic.Int64
}

func (f countingSessions) Seen(*sessions.Session, string, string) { f.seen.Add(1) }

// BenchmarkDecideSessionSeen is BenchmarkDecide's session-role case with a resolver that keeps
// the session index: the hook must add no allocation to a decision.
func BenchmarkDecideSessionSeen(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(engineConfig))
	if err != nil {
		b.Fatal(err)
	}
	e, err := newEngine(b, cfg, Options{
		Sessions: countingSessions{fakeSessions: fakeSessions{table: map[string]*sessions.Session{
			"alice": {ID: "a", Subject: "alice", Roles: []string{"admin"}, Headers: []sessions.Header{{Name: "x-user-id", Value: "alice"}, {Name: "x-user-role", Value: "admin"}}},
		}}, seen: new(atomic.Int64)},
		Keys:    fakeKeys{},
		Limiter: nopLimiter{},
		Timeout: time.Second,
		Headers: ratelimit.FormatDraft7,
	})
	if err != nil {
		b.Fatal(err)
	}
	r := req("GET", "/admin/x", "cookie", "sid=alice", "user-agent", "phone/1")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Decide(ctx, r); !d.Allow {
			b.Fatalf("denied: %+v", d)
		}
	}
}
