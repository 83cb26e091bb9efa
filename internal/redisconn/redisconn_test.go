package redisconn

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/extauthz/extauthz/internal/redistest"
)

// newClient builds a Client that is closed when the test ends.
// newPipe returns c's Pipe, closed at the end of the test (before c, whose cleanup ran
// earlier registered).
func newPipe(t *testing.T, c *Client, opts PipeOptions) *Pipe {
	t.Helper()
	p := c.NewPipe(opts)
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newClient(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
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

// peek reads key from database db of the server at addr with a client that is not the one
// under test.
func peek(t *testing.T, addr string, db int, key string) (string, error) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db, Password: "s3cret", MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return rdb.Get(ctx, key).Result()
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
			c := newClient(t, opts)
			ctx := context.Background()
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			cctx, cancel := c.WithTimeout(ctx)
			defer cancel()
			if err := c.Redis().Set(cctx, "variant", tt.name, 0).Err(); err != nil {
				t.Fatalf("SET: %v", err)
			}
			if got, err := peek(t, addr, tt.db, "variant"); err != nil || got != tt.name {
				t.Errorf("db %d holds %q (%v), want %q", tt.db, got, err, tt.name)
			}
			// The hot path's Pipe dials on its own: same server, database and user.
			p := newPipe(t, c, PipeOptions{})
			if err := p.Eval(cctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"pipe-variant"}, tt.name).Err(); err != nil {
				t.Fatalf("Pipe EVAL SET: %v", err)
			}
			if got, err := peek(t, addr, tt.db, "pipe-variant"); err != nil || got != tt.name {
				t.Errorf("Pipe: db %d holds %q (%v), want %q", tt.db, got, err, tt.name)
			}
			if tt.db != 0 {
				if got, err := peek(t, addr, 0, "pipe-variant"); !errors.Is(err, redis.Nil) {
					t.Errorf("Pipe: db 0 holds %q (%v), want nothing: the write went to the wrong db", got, err)
				}
				if got, err := peek(t, addr, 0, "variant"); !errors.Is(err, redis.Nil) {
					t.Errorf("db 0 holds %q (%v), want nothing: the write went to the wrong db", got, err)
				}
			}
			if tt.whoami != "" {
				got, err := c.Redis().Do(cctx, "ACL", "WHOAMI").Text()
				if err != nil || got != tt.whoami {
					t.Errorf("ACL WHOAMI = %q (%v), want %q", got, err, tt.whoami)
				}
				// Scripts may not run ACL WHOAMI: find the Pipe's connection, the one whose
				// last command was the EVAL above, in CLIENT LIST.
				list, err := c.Redis().ClientList(cctx).Result()
				if err != nil {
					t.Fatalf("CLIENT LIST: %v", err)
				}
				found := false
				for _, line := range strings.Split(list, "\n") {
					if strings.Contains(line, " cmd=eval") {
						found = true
						if !strings.Contains(line, " user="+tt.whoami+" ") {
							t.Errorf("Pipe connection %q is not authenticated as %s", line, tt.whoami)
						}
					}
				}
				if !found {
					t.Errorf("no connection ran EVAL in CLIENT LIST:\n%s", list)
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
			tt.opts.Timeout = time.Second
			c := newClient(t, tt.opts)
			ctx, cancel := c.WithTimeout(context.Background())
			defer cancel()
			err := c.Ping(ctx)
			if err == nil {
				t.Fatal("Ping succeeded, want an authentication error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Ping error = %q, want it to say %s", err, tt.want)
			}
			// The command path and the Pipe report the same error; none may carry a password.
			err2 := c.Redis().Get(ctx, "k").Err()
			err3 := newPipe(t, c, PipeOptions{}).Get(ctx, "k").Err()
			if err3 == nil || !strings.Contains(err3.Error(), tt.want) {
				t.Errorf("Pipe GET error = %v, want it to say %s", err3, tt.want)
			}
			for _, e := range []error{err, err2, err3} {
				if e != nil && (strings.Contains(e.Error(), "hunter2") || strings.Contains(e.Error(), "s3cret")) {
					t.Errorf("error %q repeats a password", e)
				}
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
		{"sentinel not yet", Options{URL: "rediss-sentinel://:s3cret@s1:26379,s2/mymaster/0?sentinel_password=s3cret"},
			"rediss-sentinel:// is parsed but the decision client does not support it yet (issue 11)"},
		{"cluster not yet", Options{URL: "redis-cluster://:s3cret@n1:6379,n2:6379"},
			"redis-cluster:// is parsed but the decision client does not support it yet (issue 11)"},
		{"negative timeout", Options{URL: "redis://127.0.0.1:6379/0", Timeout: -1}, "timeout must not be negative"},
		{"negative pool", Options{URL: "redis://127.0.0.1:6379/0", PoolSize: -1, MinIdleConns: -1}, "pool size must not be negative"},
		{"tls without rediss", Options{URL: "redis://127.0.0.1:6379/0", TLS: TLSOptions{CAFile: "ca.pem"}}, "need a rediss:// url"},
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
	// Nothing listens on this port: New must still succeed at once, even when asked to keep
	// idle connections, and Ping must say what is wrong.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(redistest.FreePort(t)))
	start := time.Now()
	c := newClient(t, Options{URL: "redis://:s3cret@" + addr + "/0", Timeout: 200 * time.Millisecond, MinIdleConns: 4})
	if elapsed := time.Since(start); elapsed > 100*time.Millisecond {
		t.Errorf("New took %v, want no waiting on the network", elapsed)
	}
	err := c.Ping(context.Background())
	if err == nil {
		t.Fatal("Ping succeeded with no server")
	}
	if !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Ping error = %q, want the address and no password", err)
	}
}

// TestHandshake pins the go-redis options that keep new connections cheap: RESP2, and no
// CLIENT SETINFO or CLIENT MAINT_NOTIFICATIONS round trips (which redis-server 7.0 would answer
// with errors, counted in total_error_replies).
func TestHandshake(t *testing.T) {
	s := redistest.Start(t)
	c := newClient(t, Options{URL: s.URL(), Timeout: time.Second})
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	ctx := context.Background()
	stats, err := s.Do(ctx, "INFO", "commandstats")
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(stats, "\n") {
		name, _, ok := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		switch name {
		case "hello", "ping", "info": // The handshake, the calls above, and this INFO.
		default:
			t.Errorf("the server ran %s: want only HELLO and PING from a new connection", name)
		}
	}
	if info, err := s.Do(ctx, "INFO", "stats"); err != nil || !strings.Contains(info, "total_error_replies:0\r") {
		t.Errorf("INFO stats shows error replies (%v):\n%s", err, info)
	}
	cctx, cancel := c.WithTimeout(ctx)
	defer cancel()
	if info, err := c.Redis().Do(cctx, "CLIENT", "INFO").Text(); err != nil || !slices.Contains(strings.Fields(info), "resp=2") {
		t.Errorf("CLIENT INFO = %q (%v), want resp=2", info, err)
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
