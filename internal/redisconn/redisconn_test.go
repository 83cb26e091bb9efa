package redisconn

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap/zaptest"

	"github.com/extauthz/extauthz/internal/redistest"
)

// newClient builds a Client that is closed when the test ends. It does not wait for Redis.
func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readyClient is newClient plus WaitReady, for tests about calls rather than connecting.
func readyClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c := newClient(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	return c
}

// startWithPassword starts a redis-server whose default user needs the password "s3cret",
// after running setup (an ACL SETUSER, say) if given. The password is set once the server is
// up, because redistest's readiness check is an unauthenticated PING that --requirepass
// would answer with NOAUTH.
func startWithPassword(t *testing.T, setup ...string) *redistest.Server {
	t.Helper()
	s := redistest.Start(t)
	ctx := context.Background()
	if len(setup) > 0 {
		if reply, err := s.Do(ctx, setup...); err != nil || reply != "+OK" {
			t.Fatalf("%s: %q %v", strings.Join(setup[:2], " "), reply, err)
		}
	}
	if reply, err := s.Do(ctx, "CONFIG", "SET", "requirepass", "s3cret"); err != nil || reply != "+OK" {
		t.Fatalf("CONFIG SET requirepass: %q %v", reply, err)
	}
	return s
}

// peek reads key from database db of the server at addr with a plain rueidis client, not the
// one under test.
func peek(t *testing.T, addr string, db int, key string) (string, error) {
	t.Helper()
	rc, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress: []string{addr}, SelectDB: db, Password: "s3cret",
		ForceSingleClient: true, DisableCache: true, ClientSetInfo: []string{},
	})
	if err != nil {
		t.Fatalf("peek client: %v", err)
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return rc.Do(ctx, rc.B().Get().Key(key).Build()).ToString()
}

// ctxFor is a context with a generous deadline for a setup or check call.
func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestURLVariants(t *testing.T) {
	tests := []struct {
		name string
		// start starts a server and returns the options to reach it and its TCP address.
		start func(t *testing.T) (Options, string)
		db    int
		// whoami, when set, is the ACL user the connection must be authenticated as.
		whoami string
	}{
		{
			name: "plain",
			start: func(t *testing.T) (Options, string) {
				s := redistest.Start(t)
				return Options{URL: s.URL()}, s.Addr()
			},
		},
		{
			name: "db number",
			start: func(t *testing.T) (Options, string) {
				s := redistest.Start(t)
				return Options{URL: "redis://" + s.Addr() + "/3"}, s.Addr()
			},
			db: 3,
		},
		{
			name: "password in url",
			start: func(t *testing.T) (Options, string) {
				s := startWithPassword(t)
				return Options{URL: "redis://:s3cret@" + s.Addr() + "/0"}, s.Addr()
			},
		},
		{
			name: "password option overrides url",
			start: func(t *testing.T) (Options, string) {
				s := startWithPassword(t)
				return Options{URL: "redis://:stale@" + s.Addr() + "/1", Password: "s3cret"}, s.Addr()
			},
			db: 1,
		},
		{
			name: "username option overrides url",
			start: func(t *testing.T) (Options, string) {
				s := startWithPassword(t, "ACL", "SETUSER", "alice", "on", ">alice-pw", "~*", "&*", "+@all")
				return Options{URL: "redis://bob:nope@" + s.Addr() + "/0", Username: "alice", Password: "alice-pw"}, s.Addr()
			},
			whoami: "alice",
		},
		{
			name: "unix socket",
			start: func(t *testing.T) (Options, string) {
				sock := filepath.Join(t.TempDir(), "redis.sock")
				s := redistest.Start(t, "--unixsocket", sock, "--unixsocketperm", "700")
				return Options{URL: "unix://" + sock + "?db=2"}, s.Addr()
			},
			db: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, addr := tt.start(t)
			opts.Timeout = time.Second
			c := readyClient(t, opts)
			ctx := ctxFor(t)
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if !c.Ready() {
				t.Error("Ready() = false after a successful Ping")
			}
			if _, err := c.Do(ctx, "SET", []string{"variant"}, tt.name); err != nil {
				t.Fatalf("SET: %v", err)
			}
			if got, err := peek(t, addr, tt.db, "variant"); err != nil || got != tt.name {
				t.Errorf("db %d holds %q (%v), want %q", tt.db, got, err, tt.name)
			}
			if tt.db != 0 {
				if got, err := peek(t, addr, 0, "variant"); !rueidis.IsRedisNil(err) {
					t.Errorf("db 0 holds %q (%v), want nothing: the write went to the wrong db", got, err)
				}
			}
			if tt.whoami != "" {
				got, err := c.Do(ctx, "ACL WHOAMI", nil)
				if err != nil || got != tt.whoami {
					t.Errorf("ACL WHOAMI = %v (%v), want %q", got, err, tt.whoami)
				}
			}
			if d := c.Describe(); strings.Contains(d, "s3cret") || strings.Contains(d, "alice") || strings.Contains(d, "nope") {
				t.Errorf("Describe() = %q shows credentials", d)
			}
		})
	}
}

func TestAuthErrorsHideThePassword(t *testing.T) {
	s := startWithPassword(t)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"wrong password in url", Options{URL: "redis://:hunter2@" + s.Addr() + "/0"}, "WRONGPASS"},
		{"wrong password option", Options{URL: "redis://:s3cret@" + s.Addr() + "/0", Password: "hunter2"}, "WRONGPASS"},
		{"unknown user", Options{URL: "redis://mallory:hunter2@" + s.Addr() + "/0"}, "WRONGPASS"},
		{"no password", Options{URL: s.URL()}, "NOAUTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var reasons []string
			tt.opts.Timeout = time.Second
			tt.opts.OnConnFailure = func(reason string) {
				mu.Lock()
				defer mu.Unlock()
				reasons = append(reasons, reason)
			}
			c := newClient(t, tt.opts)
			// The first call starts connecting and fails at once; the handshake's error shows
			// up in the calls after it.
			var err error
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if err = c.Ping(context.Background()); err != nil && strings.Contains(err.Error(), tt.want) {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Ping error = %v, want it to say %s", err, tt.want)
			}
			if !errors.Is(err, ErrNotReady) {
				t.Errorf("Ping error = %v, want it to wrap ErrNotReady", err)
			}
			_, err2 := c.Get(context.Background(), "k")
			for _, e := range []error{err, err2} {
				if e != nil && (strings.Contains(e.Error(), "hunter2") || strings.Contains(e.Error(), "s3cret")) {
					t.Errorf("error %q repeats a password", e)
				}
			}
			if c.Ready() {
				t.Error("Ready() = true with a failing handshake")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(reasons) == 0 || reasons[0] != "auth" {
				t.Errorf("OnConnFailure reasons = %v, want auth", reasons)
			}
			t.Logf("error: %v", err)
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"bad scheme", Options{URL: "http://:s3cret@127.0.0.1:6379"}, "not supported"},
		{"bad port", Options{URL: "redis://:s3cret@127.0.0.1:99999/0"}, "not in 1-65535"},
		{"sentinel without master", Options{URL: "redis-sentinel://:s3cret@s1:26379?sentinel_password=s3cret"}, "no master name"},
		{"cluster with a db", Options{URL: "redis-cluster://:s3cret@n1:6379/2"}, "database 0 only"},
		{"negative timeout", Options{URL: "redis://127.0.0.1:6379/0", Timeout: -1}, "timeout must not be negative"},
		{"negative pool", Options{URL: "redis://127.0.0.1:6379/0", PoolSize: -1, MinIdleConns: -1}, "pool size must not be negative"},
		{"negative max in flight", Options{URL: "redis://127.0.0.1:6379/0", MaxInFlight: -1}, "max in flight must not be negative"},
		{"tls without rediss", Options{URL: "redis://127.0.0.1:6379/0", TLS: TLSOptions{CAFile: "ca.pem"}}, "need a rediss:// url"},
		{"tls without rediss cluster", Options{URL: "redis-cluster://127.0.0.1:6379", TLS: TLSOptions{CAFile: "ca.pem"}}, "not redis-cluster://"},
		{"tls with embedded", Options{TLS: TLSOptions{InsecureSkipVerify: true}}, "need a rediss:// url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.opts, zaptest.NewLogger(t))
			if err == nil {
				_ = c.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("New error = %q, want it to contain %q and no password", err, tt.want)
			}
		})
	}
}

func TestNewDoesNoNetworkIO(t *testing.T) {
	// Nothing listens on this port: New must still succeed at once, and every call until a
	// connection exists must fail at once with ErrNotReady, saying why.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t)))
	var refusals sync.WaitGroup
	refusals.Add(1)
	var once sync.Once
	start := time.Now()
	c := newClient(t, Options{
		URL: "redis://:s3cret@" + addr + "/0", Timeout: time.Second, MinIdleConns: 4,
		OnConnFailure: func(reason string) {
			if reason == "refused" {
				once.Do(refusals.Done)
			}
		},
	})
	if elapsed := time.Since(start); elapsed > 100*time.Millisecond {
		t.Errorf("New took %v, want no waiting on the network", elapsed)
	}
	for i := range 20 {
		start := time.Now()
		err := c.Ping(context.Background())
		// At once means far under the 1 s deadline; the margin is for a loaded box.
		if elapsed := time.Since(start); elapsed > 100*time.Millisecond {
			t.Errorf("Ping %d took %v with Redis down, want it at once", i, elapsed)
		}
		if !errors.Is(err, ErrNotReady) || IsTimeout(err) {
			t.Fatalf("Ping = %v, want ErrNotReady, not a timeout", err)
		}
		if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), addr) {
			t.Errorf("Ping error = %q, want the address and no password", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	refusals.Wait()
	if _, err := c.Eval(context.Background(), "0", "return 1", nil); !errors.Is(err, ErrNotReady) {
		t.Errorf("Eval = %v, want ErrNotReady", err)
	}
	if c.Ready() {
		t.Error("Ready() = true with Redis down")
	}
}

// TestHandshake pins what a new connection costs Redis: HELLO (with AUTH in it) and CLIENT
// TRACKING for the cache, and nothing Redis 7.0 answers with an error (CLIENT SETINFO).
func TestHandshake(t *testing.T) {
	s := redistest.Start(t)
	c := readyClient(t, Options{URL: s.URL(), Timeout: time.Second})
	if err := c.Ping(ctxFor(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ctx := context.Background()
	stats, err := s.Do(ctx, "INFO", "commandstats")
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	var ran []string
	for _, line := range strings.Split(stats, "\n") {
		name, _, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		ran = append(ran, name)
		switch name {
		case "hello", "client|tracking", "ping", "info": // The handshake, the calls above, and this INFO.
		default:
			t.Errorf("the server ran %s: want only HELLO and CLIENT TRACKING from a new connection", name)
		}
	}
	t.Logf("commands: %v", ran)
	if info, err := s.Do(ctx, "INFO", "stats"); err != nil || !strings.Contains(info, "total_error_replies:0\r") {
		t.Errorf("INFO stats shows error replies (%v):\n%s", err, info)
	}
	info, err := c.Do(ctxFor(t), "CLIENT INFO", nil)
	if s, _ := info.(string); err != nil || !strings.HasPrefix(s, "id=") || !slices.Contains(strings.Fields(s), "resp=3") {
		t.Errorf("CLIENT INFO = %q (%v), want resp=3: tracking needs RESP3", info, err)
	}
}

func TestWithTimeout(t *testing.T) {
	c := newClient(t, Options{URL: "redis://127.0.0.1:6379/0", Timeout: time.Second})
	t.Run("bounds a context without deadline", func(t *testing.T) {
		ctx, cancel := c.WithTimeout(context.Background())
		defer cancel()
		dl, ok := ctx.Deadline()
		if !ok || time.Until(dl) > time.Second {
			t.Errorf("deadline in %v (set %v), want at most 1s", time.Until(dl), ok)
		}
	})
	t.Run("keeps an earlier deadline", func(t *testing.T) {
		parent, cancelParent := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancelParent()
		want, _ := parent.Deadline()
		ctx, cancel := c.WithTimeout(parent)
		defer cancel()
		if got, _ := ctx.Deadline(); !got.Equal(want) {
			t.Errorf("deadline %v, want the parent's %v", got, want)
		}
	})
	t.Run("shortens a later deadline", func(t *testing.T) {
		parent, cancelParent := context.WithTimeout(context.Background(), time.Hour)
		defer cancelParent()
		ctx, cancel := c.WithTimeout(parent)
		defer cancel()
		if dl, _ := ctx.Deadline(); time.Until(dl) > time.Second {
			t.Errorf("deadline in %v, want at most 1s", time.Until(dl))
		}
	})
}
