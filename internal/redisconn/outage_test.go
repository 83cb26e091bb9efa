package redisconn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// timeoutKind says which kind of timeout err is, for the test log.
func timeoutKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "context.DeadlineExceeded"
	case errors.As(err, &ne) && ne.Timeout():
		return "net.Error timeout"
	default:
		return ""
	}
}

func TestDeadlineOnSlowServer(t *testing.T) {
	const timeout = 50 * time.Millisecond
	const slack = 150 * time.Millisecond
	s := redistest.Start(t)
	c := newClient(t, Options{URL: s.URL(), Timeout: timeout})
	// A pooled connection first, so that the pause hits a command and not the handshake.
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want time.Duration
	}{
		{
			name: "per-call timeout",
			ctx:  func() (context.Context, context.CancelFunc) { return c.WithTimeout(context.Background()) },
			want: timeout,
		},
		{
			name: "earlier caller deadline wins",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 10*time.Millisecond)
			},
			want: 10 * time.Millisecond,
		},
		{
			// Without a deadline on ctx, ReadTimeout (= Timeout) still bounds the call.
			name: "no deadline on ctx",
			ctx:  func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			want: timeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// CLIENT PAUSE holds every client's commands, the way a Redis stuck in a slow
			// script or a fork stall does, while the socket stays open.
			if _, err := s.Do(context.Background(), "CLIENT", "PAUSE", "500", "ALL"); err != nil {
				t.Fatalf("CLIENT PAUSE: %v", err)
			}
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			err := c.Redis().Get(ctx, "k").Err()
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("GET succeeded on a paused server")
			}
			if elapsed > tt.want+slack {
				t.Errorf("GET took %v, want at most %v + %v", elapsed, tt.want, slack)
			}
			if !IsTimeout(err) {
				t.Errorf("IsTimeout(%q) = false, want true", err)
			}
			t.Logf("GET failed after %v with %s: %v", elapsed.Round(time.Millisecond), timeoutKind(err), err)
			// Under PAUSE ALL this PING waits for the pause to end, so that the next case
			// starts on a server that answers again.
			if _, err := s.Do(context.Background(), "PING"); err != nil {
				t.Fatalf("PING after the pause: %v", err)
			}
		})
	}

	// The timed-out connections were dropped, not returned with a reply still in flight: the
	// next call reads its own reply.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.Redis().Set(ctx, "after", "pause", 0).Err(); err != nil {
		t.Fatalf("SET after the pause: %v", err)
	}
	if got, err := c.Redis().Get(ctx, "after").Result(); err != nil || got != "pause" {
		t.Errorf("GET after the pause = %q (%v), want %q", got, err, "pause")
	}
}

func TestServerDownThenUp(t *testing.T) {
	s := redistest.Start(t)
	c := newClient(t, Options{URL: s.URL(), Timeout: 100 * time.Millisecond, DialTimeout: 200 * time.Millisecond})
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}

	s.Stop()
	// Many calls during the outage, as a loaded sidecar makes them: each must fail fast, and
	// together they trip go-redis's dial back-off, which recovery below must get past.
	for i := range 50 {
		start := time.Now()
		err := c.Ping(context.Background())
		if elapsed := time.Since(start); elapsed > time.Second {
			t.Fatalf("Ping %d with the server down took %v, want under 1s", i, elapsed)
		}
		if err == nil {
			t.Fatalf("Ping %d succeeded with the server down", i)
		}
		if IsTimeout(err) {
			t.Errorf("IsTimeout(%q) = true for a server that is down", err)
		}
		if i == 0 {
			t.Logf("server down: %v", err)
		}
	}

	s.Restart()
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	for {
		err := c.Ping(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the same Client still fails 5s after the server came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the same Client recovered %v after the restart", time.Since(start).Round(time.Millisecond))
}
