package keyspace

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
)

// recorder is a Target that remembers what it was told.
type recorder struct {
	mu          sync.Mutex
	invalidated []string
	active      bool
	flips       int
}

func (r *recorder) Invalidate(k string) {
	r.mu.Lock()
	r.invalidated = append(r.invalidated, k)
	r.mu.Unlock()
}

func (r *recorder) SetActive(on bool) {
	r.mu.Lock()
	if r.active != on {
		r.flips++
	}
	r.active = on
	r.mu.Unlock()
}

func (r *recorder) state() (bool, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active, append([]string(nil), r.invalidated...)
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.invalidated = nil
	r.mu.Unlock()
}

func do(t *testing.T, s *redistest.Server, args ...string) string {
	t.Helper()
	line, err := s.Do(t.Context(), args...)
	if err != nil || strings.HasPrefix(line, "-") {
		t.Fatalf("%v: %q, %v", args, line, err)
	}
	return line
}

func eventually(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func run(t *testing.T, s *redistest.Server, db int, opts Options, watches map[string]Target) *Watcher {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), DB: db, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	w := New(rdb, nil, opts)
	for prefix, tg := range watches {
		w.Watch(prefix, prefix, tg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Error("Run did not return within 2s of its context ending")
		}
	})
	return w
}

func TestInvalidations(t *testing.T) {
	s := redistest.Start(t, "--notify-keyspace-events", "KA")
	sess, keys := &recorder{}, &recorder{}
	// Database 3 and a prefix with glob characters: only exact prefix matches may arrive.
	w := run(t, s, 3, Options{}, map[string]Target{"sess:": sess, "ap[i]*:": keys})
	eventually(t, "watcher active", 3*time.Second, w.Active)
	if on, _ := sess.state(); !on {
		t.Fatal("target not activated")
	}

	cmds := [][]string{
		{"SET", "sess:abc", "{}", "EX", "100"}, // set (+ expire, ignored)
		{"EXPIRE", "sess:abc", "200"},          // a touch: ignored
		{"DEL", "sess:abc"},                    // logout
		{"SET", "sessX", "1"},                  // another prefix
		{"HSET", "ap[i]*:h1", "disabled", "1"}, // revoke
		{"HSET", "apix:h2", "disabled", "1"},   // would match an unescaped pattern
	}
	for _, c := range cmds {
		// SELECT does not carry over between Do calls: run each in db 3 through a script.
		args := append([]string{"EVAL", "redis.call('SELECT', 3) return redis.call(unpack(ARGV))", "0"}, c...)
		do(t, s, args...)
	}
	eventually(t, "session invalidations", 2*time.Second, func() bool {
		_, got := sess.state()
		return len(got) >= 2
	})
	eventually(t, "key invalidation", 2*time.Second, func() bool {
		_, got := keys.state()
		return len(got) >= 1
	})
	time.Sleep(100 * time.Millisecond) // let stray events arrive, if any
	if _, got := sess.state(); strings.Join(got, ",") != "abc,abc" {
		t.Errorf("session invalidations = %q, want [abc abc] (set, del; expire ignored)", got)
	}
	if _, got := keys.state(); strings.Join(got, ",") != "h1" {
		t.Errorf("key invalidations = %q, want [h1]", got)
	}
	// The same commands in db 0 are not this watcher's business.
	sess.reset()
	do(t, s, "DEL", "sess:abc")
	do(t, s, "SET", "sess:zzz", "{}")
	time.Sleep(100 * time.Millisecond)
	if _, got := sess.state(); len(got) != 0 {
		t.Errorf("events of another database reached the target: %q", got)
	}
}

func TestNoNotificationsStaysInactiveUntilEnabled(t *testing.T) {
	s := redistest.Start(t) // notify-keyspace-events is "" by default
	tg := &recorder{}
	w := run(t, s, 0, Options{ProbeTimeout: 200 * time.Millisecond, Retry: 300 * time.Millisecond}, map[string]Target{"sess:": tg})
	time.Sleep(700 * time.Millisecond)
	if w.Active() {
		t.Fatal("active without keyspace notifications")
	}
	if on, _ := tg.state(); on {
		t.Fatal("target activated without keyspace notifications")
	}
	do(t, s, "CONFIG", "SET", "notify-keyspace-events", "K$gh")
	eventually(t, "active once notifications are on", 3*time.Second, w.Active)
	// Turned off at run time: the periodic probe notices and the caches go off.
	do(t, s, "CONFIG", "SET", "notify-keyspace-events", "")
	eventually(t, "inactive once notifications are off", 3*time.Second, func() bool { return !w.Active() })
	if on, _ := tg.state(); on {
		t.Fatal("target still active after notifications were turned off")
	}
}

func TestRestartDeactivatesThenRecovers(t *testing.T) {
	s := redistest.Start(t, "--notify-keyspace-events", "KA")
	tg := &recorder{}
	w := run(t, s, 0, Options{Retry: 200 * time.Millisecond, Ping: 100 * time.Millisecond}, map[string]Target{"sess:": tg})
	eventually(t, "active", 3*time.Second, w.Active)
	s.Stop()
	eventually(t, "inactive after Redis went away", 2*time.Second, func() bool { on, _ := tg.state(); return !on })
	s.Restart()
	eventually(t, "active again after Redis came back", 5*time.Second, w.Active)
	do(t, s, "DEL", "sess:k")
	do(t, s, "SET", "sess:k", "{}")
	eventually(t, "events after the restart", 2*time.Second, func() bool { _, got := tg.state(); return len(got) > 0 })
}

// A subscription whose server stops answering without closing the connection (a hung node, a
// NAT that forgot the flow) is noticed by its unanswered PING, and the caches go off.
func TestSilentConnectionDeactivates(t *testing.T) {
	s := redistest.Start(t, "--notify-keyspace-events", "KA")
	tg := &recorder{}
	// Retry is long, so that only the PING can notice: no re-probe, no reconnect during the test.
	w := run(t, s, 0, Options{Retry: time.Minute, Ping: 100 * time.Millisecond}, map[string]Target{"sess:": tg})
	eventually(t, "active", 3*time.Second, w.Active)
	s.Pause()
	defer s.Resume()
	eventually(t, "inactive after the server fell silent", 2*time.Second, func() bool { on, _ := tg.state(); return !on })
}

func TestGlobEscape(t *testing.T) {
	for in, want := range map[string]string{"sess:": "sess:", "a*b?c[d]e\\": `a\*b\?c\[d\]e\\`} {
		if got := globEscape(in); got != want {
			t.Errorf("globEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
