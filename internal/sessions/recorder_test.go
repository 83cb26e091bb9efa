package sessions

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// recorderFixture is a Store with a Recorder on a fresh redis-server. The recorder's clock is
// the returned counter (nanoseconds), and Run is not started: tests look at the queue itself,
// so that "nothing was queued" is a fact, not a wait.
type recorderFixture struct {
	st     *Store
	rec    *Recorder
	ix     *Index
	o      observer
	clock  *atomic.Int64
	drops  *atomic.Int64
	writes chan error
}

func newRecorderFixture(t *testing.T, queue int, cache bool) *recorderFixture {
	t.Helper()
	srv := redistest.Start(t)
	rc := newClient(t, srv.URL())
	ix, err := NewIndex(rc, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f := &recorderFixture{ix: ix, clock: new(atomic.Int64), drops: new(atomic.Int64), writes: make(chan error, 100),
		o: observer{t: t, addr: func(string) string { return srv.Addr() }}}
	f.clock.Store(1)
	f.rec = NewRecorder(ix, RecorderOptions{
		Every:   time.Minute,
		Queue:   queue,
		OnDrop:  func() { f.drops.Add(1) },
		OnWrite: func(err error) { f.writes <- err },
	})
	f.rec.now = f.clock.Load
	opts := Options{Secrets: []string{"secret"}, Subject: "userId", Recorder: f.rec}
	if cache {
		opts.Cache = &CacheOptions{TTL: time.Minute}
	}
	if f.st, err = New(rc, opts); err != nil {
		t.Fatal(err)
	}
	return f
}

// login stores a session for user and returns its Cookie header.
func (f *recorderFixture) login(sid, user string) string {
	f.o.do("SET", "sess:"+sid, `{"cookie":{"originalMaxAge":600000,"expires":"2099-01-01T00:00:00.000Z"},"userId":"`+user+`"}`, "EX", "600")
	return "connect.sid=" + url.PathEscape(Sign(sid, "secret"))
}

func (f *recorderFixture) resolveAndSee(t *testing.T, cookie, ua string) *Session {
	t.Helper()
	s, err := f.st.Resolve(context.Background(), cookie)
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	f.st.Seen(s, "192.0.2.1", ua)
	return s
}

// run starts the writer until the test ends.
func (f *recorderFixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.rec.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (f *recorderFixture) waitWrite(t *testing.T) {
	t.Helper()
	select {
	case err := <-f.writes:
		if err != nil {
			t.Fatalf("index write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no index write")
	}
}

// TestRecorderFirstResolveThenEvery: a session is queued when this process first resolves it,
// not on every request; then again once Every has passed, or when its data changed (a new
// Session is built).
func TestRecorderFirstResolveThenEvery(t *testing.T) {
	f := newRecorderFixture(t, 16, false)
	cookie := f.login("sid-a", "alice")
	for i := 0; i < 100; i++ {
		f.resolveAndSee(t, cookie, "phone")
	}
	if n := len(f.rec.queue); n != 1 {
		t.Fatalf("100 requests queued %d visits, want 1", n)
	}
	f.clock.Add(int64(59 * time.Second))
	f.resolveAndSee(t, cookie, "phone")
	if n := len(f.rec.queue); n != 1 {
		t.Fatalf("a request within seen_every queued a visit (%d queued)", n)
	}
	f.clock.Add(int64(time.Second))
	f.resolveAndSee(t, cookie, "phone")
	if n := len(f.rec.queue); n != 2 {
		t.Fatalf("a request after seen_every queued %d visits in all, want 2", n)
	}
	// The app saved the session: its data changed, so the store builds a new Session, which
	// is queued at once.
	f.o.do("SET", "sess:sid-a", `{"cookie":{},"userId":"alice","cart":1}`, "EX", "600")
	f.resolveAndSee(t, cookie, "phone")
	if n := len(f.rec.queue); n != 3 {
		t.Fatalf("a changed session queued %d visits in all, want 3", n)
	}

	f.run(t)
	for i := 0; i < 3; i++ {
		f.waitWrite(t)
	}
	entries, err := f.ix.List(context.Background(), "alice")
	if err != nil || len(entries) != 1 || entries[0].ID != PublicID("sid-a") || entries[0].UserAgent != "phone" || entries[0].IP != "192.0.2.1" {
		t.Fatalf("List = %+v, %v", entries, err)
	}
}

// TestRecorderDropsWhenFull: a full queue drops the visit, counts it, and lets the next
// request for that session queue it again; Seen never blocks.
func TestRecorderDropsWhenFull(t *testing.T) {
	f := newRecorderFixture(t, 1, false)
	a, b := f.login("sid-a", "alice"), f.login("sid-b", "bob")
	f.resolveAndSee(t, a, "x")
	done := make(chan struct{})
	go func() { f.resolveAndSee(t, b, "x"); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Seen blocked on a full queue")
	}
	if d := f.drops.Load(); d != 1 {
		t.Fatalf("drops = %d, want 1", d)
	}
	<-f.rec.queue // the writer catches up
	f.resolveAndSee(t, b, "x")
	if n := len(f.rec.queue); n != 1 {
		t.Fatalf("after a drop the next request queued %d, want 1", n)
	}
}

// TestRecorderBoundsQueuedText: a queued visit keeps at most MaxUserAgent bytes of the user
// agent (cut between characters), not the request's whole header.
func TestRecorderBoundsQueuedText(t *testing.T) {
	f := newRecorderFixture(t, 4, false)
	huge := strings.Repeat("a", MaxUserAgent-1) + "é" + strings.Repeat("b", 60<<10)
	f.resolveAndSee(t, f.login("sid-h", "hugo"), huge)
	v := <-f.rec.queue
	if v.ua != strings.Repeat("a", MaxUserAgent-1) {
		t.Errorf("queued ua of %d bytes, want the %d bytes before the cut character", len(v.ua), MaxUserAgent-1)
	}
	if got := boundedText("short", 10); got != "short" {
		t.Errorf("boundedText(short) = %q", got)
	}
}

// TestRecorderIgnores: sessions the store did not build (no mark) and sessions without a
// subject are not indexed.
func TestRecorderIgnores(t *testing.T) {
	f := newRecorderFixture(t, 4, false)
	f.rec.Seen(&Session{ID: "forged", Subject: "alice"}, "", "")
	f.o.do("SET", "sess:anon", `{"cookie":{}}`, "EX", "600")
	s, err := f.st.Resolve(context.Background(), "connect.sid="+url.PathEscape(Sign("anon", "secret")))
	if err != nil {
		t.Fatal(err)
	}
	f.st.Seen(s, "", "")
	if n := len(f.rec.queue); n != 0 {
		t.Fatalf("queued %d visits, want 0", n)
	}
	// A store without a recorder takes Seen as a no-op.
	plain, err := New(newClient(t, "redis://"+f.o.addr("")+"/0"), Options{Secrets: []string{"secret"}, Subject: "userId"})
	if err != nil {
		t.Fatal(err)
	}
	plain.Seen(&Session{ID: "x", Subject: "y"}, "", "")
}

// TestRecorderSeenAllocs: the decision's part costs no allocation, queued or not.
func TestRecorderSeenAllocs(t *testing.T) {
	f := newRecorderFixture(t, 1<<12, false)
	s := f.resolveAndSee(t, f.login("sid-a", "alice"), "x")
	if n := testing.AllocsPerRun(1000, func() { f.rec.Seen(s, "192.0.2.1", "ua") }); n != 0 {
		t.Errorf("Seen within seen_every: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		f.clock.Add(int64(time.Hour))
		f.rec.Seen(s, "192.0.2.1", "ua")
		<-f.rec.queue
	}); n != 0 {
		t.Errorf("Seen that queues: %v allocs, want 0", n)
	}
}

// TestRevokedSessionNotServed: after a revocation, neither this store (its memo, its client's
// cache) nor another process's serves the session: Redis's invalidation reaches both caches.
func TestRevokedSessionNotServed(t *testing.T) {
	f := newRecorderFixture(t, 4, true)
	cookie := f.login("sid-r", "rita")
	other, err := New(newClient(t, "redis://"+f.o.addr("")+"/0"), Options{Secrets: []string{"secret"}, Subject: "userId", Cache: &CacheOptions{TTL: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	f.run(t)
	f.resolveAndSee(t, cookie, "x")
	f.waitWrite(t)
	for i := 0; i < 3; i++ { // memo and client cache warm in both
		f.resolveAndSee(t, cookie, "x")
		if _, err := other.Resolve(context.Background(), cookie); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := f.ix.Revoke(context.Background(), "rita", ""); err != nil || n != 1 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	for name, st := range map[string]*Store{"this": f.st, "other": other} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, err := st.Resolve(context.Background(), cookie)
			if errors.Is(err, ErrNoSession) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s store still resolves the revoked session: %v", name, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// BenchmarkResolveSeen is BenchmarkResolve's "valid, cached" with a session index kept: Resolve
// and Seen together must cost what Resolve alone does (no queued visit within seen_every).
func BenchmarkResolveSeen(b *testing.B) {
	srv := redistest.Start(b)
	serverDo(b, srv, "SET", "sess:"+expressSID, expressSession)
	rc := newClient(b, srv.URL())
	ix, err := NewIndex(rc, IndexOptions{})
	if err != nil {
		b.Fatal(err)
	}
	rec := NewRecorder(ix, RecorderOptions{Every: time.Hour})
	st, err := New(rc, Options{Secrets: []string{"new-secret", "old-secret"}, Subject: "userId",
		Headers: map[string]string{"x-passport-user": "passport.user"}, Cache: &CacheOptions{TTL: time.Minute}, Recorder: rec})
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	b.ReportAllocs()
	for b.Loop() {
		s, err := st.Resolve(ctx, benchHeader)
		if err != nil {
			b.Fatal(err)
		}
		st.Seen(s, "192.0.2.1", "Mozilla/5.0")
	}
	if n := len(rec.queue); n != 1 {
		b.Fatalf("%d visits queued, want 1", n)
	}
}
