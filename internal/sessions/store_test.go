package sessions

import (
	"context"
	"errors"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
	"github.com/extauthz/extauthz/internal/redistest"
)

// backend is one Redis the store must work against, through the real client. The setup and
// the observers go around the store (and, for redis-server, around the client too, on a
// connection of their own), so that they cannot share its bugs.
type backend struct {
	rdb  *redisconn.Client
	set  func(t *testing.T, key, value string)         // SET with a 100s TTL
	hset func(t *testing.T, key string)                // a hash, the wrong type for a session
	del  func(t *testing.T, key string)                // DEL, as connect-redis's destroy
	ttl  func(t *testing.T, key string) int64          // TTL in seconds
	exp  func(t *testing.T, key string, seconds int64) // EXPIRE
	stop func()                                        // an outage; nil when there can be none
}

var backends = []struct {
	name  string
	start func(t testing.TB) *backend
}{
	{"redis-server", startRedisServer},
	{"embedded", startEmbedded},
}

// newClient returns the sidecar's client for url once it has connected, with a generous
// per-call deadline (redisconntest.Ready): these tests are about answers, not latency.
func newClient(t testing.TB, url string) *redisconn.Client {
	t.Helper()
	return redisconntest.Ready(t, redisconn.Options{URL: url})
}

// serverDo runs a command on srv over a connection of its own and fails the test on an error
// reply; it returns the reply line.
func serverDo(t testing.TB, srv *redistest.Server, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line, err := srv.Do(ctx, args...)
	if err != nil || strings.HasPrefix(line, "-") {
		t.Fatalf("%s: %q, %v", args[0], line, err)
	}
	return line
}

func startRedisServer(t testing.TB) *backend {
	s := redistest.Start(t)
	return &backend{
		rdb:  newClient(t, s.URL()),
		set:  func(t *testing.T, key, value string) { serverDo(t, s, "SET", key, value, "EX", "100") },
		hset: func(t *testing.T, key string) { serverDo(t, s, "HSET", key, "f", "v") },
		del:  func(t *testing.T, key string) { serverDo(t, s, "DEL", key) },
		ttl: func(t *testing.T, key string) int64 {
			n, err := strconv.ParseInt(strings.TrimPrefix(serverDo(t, s, "TTL", key), ":"), 10, 64)
			if err != nil {
				t.Fatalf("TTL: %v", err)
			}
			return n
		},
		exp:  func(t *testing.T, key string, sec int64) { serverDo(t, s, "EXPIRE", key, strconv.FormatInt(sec, 10)) },
		stop: s.Stop,
	}
}

// startEmbedded is the store with no redis.url: the in-process store, reached only through the
// client itself.
func startEmbedded(t testing.TB) *backend {
	rc := newClient(t, "")
	do := func(t *testing.T, name, key string, args ...string) any {
		t.Helper()
		v, err := rc.Do(t.Context(), name, []string{key}, args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return v
	}
	return &backend{
		rdb:  rc,
		set:  func(t *testing.T, key, value string) { do(t, "SET", key, value, "EX", "100") },
		hset: func(t *testing.T, key string) { do(t, "HSET", key, "f", "v") },
		del:  func(t *testing.T, key string) { do(t, "DEL", key) },
		ttl: func(t *testing.T, key string) int64 {
			n, ok := do(t, "TTL", key).(int64)
			if !ok {
				t.Fatal("TTL: not an integer")
			}
			return n
		},
		exp: func(t *testing.T, key string, sec int64) { do(t, "EXPIRE", key, strconv.FormatInt(sec, 10)) },
	}
}

// countingRedis counts the commands that reach the client, to prove that some requests make
// none.
type countingRedis struct {
	Redis
	gets, expires atomic.Int32
}

func (c *countingRedis) Get(ctx context.Context, key string) (string, error) {
	c.gets.Add(1)
	return c.Redis.Get(ctx, key)
}

func (c *countingRedis) GetCached(ctx context.Context, key string, ttl time.Duration) (string, bool, error) {
	c.gets.Add(1)
	return c.Redis.GetCached(ctx, key, ttl)
}

func (c *countingRedis) Expire(ctx context.Context, key string, ttl time.Duration) error {
	c.expires.Add(1)
	return c.Redis.Expire(ctx, key, ttl)
}

// richSession exercises every kind of field. Its cookie.expires is long past: connect-redis
// never looks at it, and neither may the store.
const richSession = `{"cookie":{"originalMaxAge":3600000,"expires":"2001-01-01T00:00:00.000Z","httpOnly":true,"path":"/"},` +
	`"userId":"u1","passport":{"user":42},"roles":["admin","editor",3],` +
	`"tenant":{"id":7,"ratio":1.5,"paid":true},"evil":"x\r\nx-admin: true","nul":"a\u0000b","obj":{"a":1},"nil":null,"list":[1]}`

var richOptions = Options{
	Secrets: []string{"new-secret", "old-secret"},
	Subject: "passport.user",
	Roles:   "roles",
	Headers: map[string]string{
		"X-User-Id": "userId", "x-tenant": "tenant.id", "x-ratio": "tenant.ratio", "x-paid": "tenant.paid",
		"x-evil": "evil", "x-nul": "nul", "x-obj": "obj", "x-nil": "nil", "x-list": "list", "x-missing": "nope.nope",
	},
}

// cookieHeader is what a browser sends for a session express-session signed with secret.
// QueryEscape encodes the characters of these sids as encodeURIComponent does.
func cookieHeader(sid, secret string) string {
	return "theme=dark; connect.sid=" + url.QueryEscape(Sign(sid, secret)) + "; lang=en"
}

func newStore(t *testing.T, rdb Redis, opts Options) *Store {
	t.Helper()
	s, err := New(rdb, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Run("express-session cookie", func(t *testing.T) { testExpressCookie(t, b.start(t)) })
			t.Run("fields", func(t *testing.T) { testFields(t, b.start(t)) })
			t.Run("no session", func(t *testing.T) { testNoSession(t, b.start(t)) })
			t.Run("corrupt", func(t *testing.T) { testCorrupt(t, b.start(t)) })
			t.Run("touch", func(t *testing.T) { testTouch(t, b.start(t)) })
			t.Run("redis down", func(t *testing.T) {
				b := b.start(t)
				if b.stop == nil {
					t.Skip("the embedded store cannot go down")
				}
				testRedisDown(t, b)
			})
			t.Run("concurrent", func(t *testing.T) { testConcurrent(t, b.start(t)) })
		})
	}
}

// testExpressCookie replays the cookie and the stored session that express-session itself
// produced (see the vectors in sign_test.go).
func testExpressCookie(t *testing.T, b *backend) {
	b.set(t, "sess:"+expressSID, expressSession)
	s := newStore(t, b.rdb, Options{Secrets: []string{"new-secret", "old-secret"}, Subject: "userId",
		Headers: map[string]string{"x-passport-user": "passport.user"}})
	got, err := s.Resolve(t.Context(), "other=1; "+expressCookieHeader())
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := &Session{ID: expressSID, Subject: "u1", Headers: []Header{{"x-passport-user", "42"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve = %#v (ID ok: %v), want %#v", got, got.ID == want.ID, want)
	}
}

func testFields(t *testing.T, b *backend) {
	b.set(t, "sess:rich", richSession)
	s := newStore(t, b.rdb, richOptions)
	// Signed with the second secret: a cookie from before a rotation.
	got, err := s.Resolve(t.Context(), cookieHeader("rich", "old-secret"))
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := &Session{
		ID:      "rich",
		Subject: "42",
		Roles:   []string{"admin", "editor"},
		Headers: []Header{{"x-paid", "true"}, {"x-ratio", "1.5"}, {"x-tenant", "7"}, {"x-user-id", "u1"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve = %#v, want %#v", got, want)
	}
}

func testNoSession(t *testing.T, b *backend) {
	b.set(t, "sess:known", richSession)
	c := &countingRedis{Redis: b.rdb}
	s := newStore(t, c, richOptions)
	tests := []struct {
		name     string
		header   string
		wantGets int32
	}{
		{"no cookie header", "", 0},
		{"no session cookie", "theme=dark", 0},
		{"empty cookie", "connect.sid=", 0},
		{"unsigned", "connect.sid=known", 0},
		{"bad signature", cookieHeader("known", "wrong-secret"), 0},
		{"tampered sid", strings.Replace(cookieHeader("known", "new-secret"), "known", "known2", 1), 0},
		{"signed empty sid", cookieHeader("", "new-secret"), 0},
		{"oversized header", cookieHeader("known", "new-secret") + "; pad=" + strings.Repeat("x", MaxCookieHeader), 0},
		{"unknown sid", cookieHeader("unknown", "new-secret"), 1},
		{"known sid under another cookie name", "sid=" + url.QueryEscape(Sign("known", "new-secret")), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := c.gets.Load()
			sess, err := s.Resolve(t.Context(), tt.header)
			if !errors.Is(err, ErrNoSession) || sess != nil {
				t.Fatalf("Resolve = %v, %v; want nil, ErrNoSession", sess, err)
			}
			if errors.Is(err, ErrCorrupt) {
				t.Errorf("error %v is ErrCorrupt", err)
			}
			if got := c.gets.Load() - before; got != tt.wantGets {
				t.Errorf("%d GETs, want %d", got, tt.wantGets)
			}
			if strings.Contains(err.Error(), "known") {
				t.Errorf("error %q mentions the sid", err)
			}
		})
	}
}

func testCorrupt(t *testing.T, b *backend) {
	s := newStore(t, b.rdb, richOptions)
	tests := []struct {
		name  string
		setup func(t *testing.T, key string)
	}{
		{"not JSON", func(t *testing.T, key string) { b.set(t, key, "{not json") }},
		{"JSON array", func(t *testing.T, key string) { b.set(t, key, `["userId"]`) }},
		{"empty string", func(t *testing.T, key string) { b.set(t, key, "") }},
		{"too large", func(t *testing.T, key string) {
			b.set(t, key, `{"userId":"u1","pad":"`+strings.Repeat("x", MaxSessionBytes)+`"}`)
		}},
		{"wrong type", func(t *testing.T, key string) { b.hset(t, key) }},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sid := "corrupt" + strconv.Itoa(i)
			tt.setup(t, "sess:"+sid)
			sess, err := s.Resolve(t.Context(), cookieHeader(sid, "new-secret"))
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrNoSession) || sess != nil {
				t.Errorf("Resolve = %v, %v; want nil and an error that is ErrCorrupt and ErrNoSession", sess, err)
			}
		})
	}
}

func testTouch(t *testing.T, b *backend) {
	c := &countingRedis{Redis: b.rdb}
	opts := richOptions
	opts.TouchTTL = time.Hour + time.Minute
	opts.TouchEvery = 200 * time.Millisecond
	s := newStore(t, c, opts)
	now := time.Now()
	s.now = func() time.Time { return now }
	resolve := func(sid string) {
		t.Helper()
		if _, err := s.Resolve(t.Context(), cookieHeader(sid, "new-secret")); err != nil {
			t.Fatalf("Resolve(%s): %v", sid, err)
		}
	}
	near := func(got, want int64) bool { return got <= want && got >= want-2 }

	b.set(t, "sess:t", richSession) // originalMaxAge 3600000: an hour
	resolve("t")
	if got := b.ttl(t, "sess:t"); !near(got, 3600) || c.expires.Load() != 1 {
		t.Fatalf("after the first resolve: TTL %d, %d EXPIREs; want 3600 from originalMaxAge, 1", got, c.expires.Load())
	}
	b.exp(t, "sess:t", 100)
	now = now.Add(opts.TouchEvery - time.Millisecond)
	resolve("t")
	if got := b.ttl(t, "sess:t"); got > 100 || c.expires.Load() != 1 {
		t.Fatalf("within TouchEvery: TTL %d, %d EXPIREs; want untouched", got, c.expires.Load())
	}
	now = now.Add(time.Millisecond)
	resolve("t")
	if got := b.ttl(t, "sess:t"); !near(got, 3600) || c.expires.Load() != 2 {
		t.Fatalf("after TouchEvery: TTL %d, %d EXPIREs; want 3600, 2", got, c.expires.Load())
	}

	// Without a positive originalMaxAge (a browser-session cookie) TouchTTL applies.
	b.set(t, "sess:u", `{"cookie":{"originalMaxAge":null,"expires":null},"userId":"u2"}`)
	resolve("u")
	if got := b.ttl(t, "sess:u"); !near(got, 3660) {
		t.Errorf("TTL %d, want TouchTTL 3660", got)
	}

	// A failed touch does not fail the request.
	failing := &failingExpire{Redis: b.rdb}
	s2 := newStore(t, failing, opts)
	if sess, err := s2.Resolve(t.Context(), cookieHeader("t", "new-secret")); err != nil || sess == nil || !failing.called.Load() {
		t.Errorf("Resolve with a failing EXPIRE = %v, %v (EXPIRE sent: %v); want the session", sess, err, failing.called.Load())
	}
}

// failingExpire answers EXPIRE with an error, as an outage between GET and EXPIRE would.
type failingExpire struct {
	Redis
	called atomic.Bool
}

func (f *failingExpire) Expire(context.Context, string, time.Duration) error {
	f.called.Store(true)
	return errors.New("connection reset")
}

func testRedisDown(t *testing.T, b *backend) {
	s := newStore(t, b.rdb, richOptions)
	b.stop()
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	sess, err := s.Resolve(ctx, cookieHeader("known", "new-secret"))
	if err == nil || errors.Is(err, ErrNoSession) || sess != nil {
		t.Fatalf("Resolve = %v, %v; want a backend error that is not ErrNoSession", sess, err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Resolve took %v with a 500ms deadline", took)
	}
	if strings.Contains(err.Error(), "known") {
		t.Errorf("error %q mentions the sid", err)
	}
}

// TestResolveHonoursDeadline freezes a connected server (SIGSTOP: the connection stays open
// and nothing answers): only the ctx deadline ends the call.
func TestResolveHonoursDeadline(t *testing.T) {
	srv := redistest.Start(t)
	s := newStore(t, newClient(t, srv.URL()), richOptions)
	srv.Pause()
	defer srv.Resume()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.Resolve(ctx, cookieHeader("known", "new-secret"))
	if err == nil || errors.Is(err, ErrNoSession) {
		t.Fatalf("Resolve error = %v; want a backend error that is not ErrNoSession", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > time.Second {
		t.Errorf("Resolve took %v with a 200ms deadline on a frozen server", took)
	}
}

func testConcurrent(t *testing.T, b *backend) {
	for i := range 10 {
		b.set(t, "sess:c"+strconv.Itoa(i), richSession)
	}
	opts := richOptions
	opts.TouchTTL = time.Hour
	opts.TouchEvery = time.Millisecond
	s := newStore(t, b.rdb, opts)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				sid := "c" + strconv.Itoa((g+i)%10)
				if sess, err := s.Resolve(t.Context(), cookieHeader(sid, "new-secret")); err != nil || sess.Subject != "42" {
					t.Errorf("Resolve(%s) = %v, %v", sid, sess, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// The parsed-session memo saves CPU only: a changed or deleted session is seen at once.
func TestMemoNeverHidesAChange(t *testing.T) {
	b := startRedisServer(t)
	s := newStore(t, b.rdb, Options{Secrets: []string{"k"}, Subject: "userId", Roles: "role"})
	ctx := t.Context()
	cookie := "connect.sid=" + url.QueryEscape(Sign("memo-sid", "k"))
	b.set(t, "sess:memo-sid", `{"cookie":{},"userId":"u1","role":"user"}`)
	a, err := s.Resolve(ctx, cookie)
	if err != nil || a.Subject != "u1" {
		t.Fatalf("first resolve: %v %v", a, err)
	}
	c, err := s.Resolve(ctx, cookie)
	if err != nil || c != a {
		t.Fatalf("unchanged session was parsed again (or failed): %v", err)
	}
	b.set(t, "sess:memo-sid", `{"cookie":{},"userId":"u1","role":"admin"}`)
	c, err = s.Resolve(ctx, cookie)
	if err != nil || len(c.Roles) != 1 || c.Roles[0] != "admin" {
		t.Fatalf("changed session not seen: %+v %v", c, err)
	}
	b.del(t, "sess:memo-sid")
	if _, err := s.Resolve(ctx, cookie); !errors.Is(err, ErrNoSession) {
		t.Fatalf("deleted session still resolves: %v", err)
	}
}
