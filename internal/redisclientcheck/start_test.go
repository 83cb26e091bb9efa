package redisclientcheck

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// TestRueidisNeedsRedisAtStart records that rueidis.NewClient dials at once and fails when
// no node answers: a sidecar that must start while Redis is down (issue 11, section 5) has
// to build the rueidis client in the background and report not-ready until it exists.
func TestRueidisNeedsRedisAtStart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	began := time.Now()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err == nil {
		c.Close()
		t.Fatalf("rueidis.NewClient(%s) with nothing listening succeeded: it no longer dials at once", addr)
	}
	t.Logf("rueidis.NewClient with nothing listening: %v after %s", err, ms(time.Since(began)))
}

// TestClientStartsWithoutRedis holds redisconn.Client to what the sidecar builds on that:
// New succeeds with nothing listening, every call meanwhile fails fast with ErrNotReady
// (well inside its deadline), and once Redis is up the client connects by itself.
func TestClientStartsWithoutRedis(t *testing.T) {
	t.Parallel()
	port := redistest.FreePort(t)
	url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
	began := time.Now()
	c, err := redisconn.New(redisconn.Options{URL: url}, nil)
	if err != nil {
		t.Fatalf("redisconn.New(%s) with nothing listening: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	t.Logf("redisconn.New with nothing listening: %s", ms(time.Since(began)))
	var lat dist
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		began := time.Now()
		_, err := count(ctx, c, "{start}", fmt.Sprint(i))
		lat = append(lat, time.Since(began))
		cancel()
		if !errors.Is(err, redisconn.ErrNotReady) {
			t.Fatalf("call %d with nothing listening: %v, want ErrNotReady", i, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("20 calls with nothing listening: ErrNotReady after p50 %s, max %s; Ready() %v", ms(lat.pct(50)), ms(lat.max()), c.Ready())
	// Fast: no dial, no wait for the deadline. The box's scheduler can add milliseconds to
	// one call, not to half of them.
	if lat.pct(50) > 2*time.Millisecond || lat.max() >= callTimeout {
		t.Errorf("ErrNotReady after p50 %s, max %s: want a fast failure (p50 at most 2 ms, none waiting out the %s deadline)", ms(lat.pct(50)), ms(lat.max()), callTimeout)
	}
	if c.Ready() {
		t.Errorf("Ready() with nothing listening")
	}
	redistest.StartOn(t, port)
	up := time.Now()
	// A call refused with ErrNotReady never reaches Redis; one that failed otherwise (it
	// timed out on a server that had just started) may have run.
	var notReady, sent int
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		n, err := count(ctx, c, "{start}", "up")
		cancel()
		if err == nil {
			t.Logf("connected %s after Redis came up; count %d after %d ErrNotReady and %d other failures (the last: %v)",
				ms(time.Since(up)), n, notReady, sent, lastErr)
			if n < 1 || n > int64(1+sent) {
				t.Errorf("first count %d after %d failed calls that may have reached Redis: want 1 to %d", n, sent, 1+sent)
			}
			break
		}
		if errors.Is(err, redisconn.ErrNotReady) {
			notReady++
		} else {
			sent++
			lastErr = err
		}
		if time.Since(up) > 10*time.Second {
			t.Fatalf("not connected 10 s after Redis came up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !c.Ready() {
		t.Errorf("Ready() is false after a call succeeded")
	}
}
