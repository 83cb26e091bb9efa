// Package redisconntest gives tests the sidecar's Redis client ready to use. The client
// connects in the background and fails fast (redisconn.ErrNotReady) until it has, which a test
// about answers must not mistake for an outage; Ready waits for the first PING.
package redisconntest

import (
	"context"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// readyWithin bounds the wait for the first PING: a Cluster or Sentinel client asks several
// nodes first, and a -race run on a busy machine is slow.
const readyWithin = 20 * time.Second

// Ready builds a client from opts, closes it when the test ends, and returns it once it has
// answered a PING. A zero opts.Timeout becomes 5 s, not the sidecar's 25 ms: tests about
// answers must not fail on a slow reply under -race; tests about deadlines set their own.
func Ready(t testing.TB, opts redisconn.Options) *redisconn.Client {
	t.Helper()
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Second
	}
	rc, err := redisconn.New(opts, nil)
	if err != nil {
		t.Fatalf("redisconn.New: %v", err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), readyWithin)
	defer cancel()
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := rc.Ping(pctx)
		pcancel()
		if err == nil {
			return rc
		}
		if ctx.Err() != nil {
			t.Fatalf("redis at %s not ready within %v: %v", rc.Describe(), readyWithin, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
