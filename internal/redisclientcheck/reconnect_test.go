package redisclientcheck

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// TestDeadlineDuringReconnect stops the server, makes one lone call and then concurrent
// ones, and counts the connections the client opens meanwhile. This is the situation in
// which rueidis with its defaults broke the deadline (REPORT.md, (a)): a lone call that
// times out closes its connection, and the next calls wait for a redial to the stalled
// server past their own deadline. redisconn.Client sets AlwaysPipelining, with which a
// timed-out call leaves its connection open, so every call must give up within the budget.
func TestDeadlineDuringReconnect(t *testing.T) {
	s := redistest.Start(t)
	c := newClient(t, s.URL())
	warm(t, c, "rc")
	before := dials(t, s)
	stopCanaries := canaries(4)
	s.Pause()
	// A lone call first: on rueidis's default path it times out on the socket and closes the
	// connection.
	var mu sync.Mutex
	var lat dist
	var timeouts, other int
	var firstOther error
	call := func(key, nonce string) {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		defer cancel()
		began := time.Now()
		_, err := count(ctx, c, key, nonce)
		took := time.Since(began)
		mu.Lock()
		defer mu.Unlock()
		lat = append(lat, took)
		switch {
		case err == nil:
			// Counted below: the server is stopped, so no call can succeed.
		case redisconn.IsTimeout(err):
			timeouts++
		default:
			other++
			if firstOther == nil {
				firstOther = err
			}
		}
	}
	call("{rc}:lone", "lone")
	// Then concurrent calls, one of which would dial again while the server is stopped.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				call(fmt.Sprintf("{rc}:%d", w), fmt.Sprintf("%d-%d", w, i))
			}
		}()
	}
	wg.Wait()
	canary := stopCanaries()
	s.Resume()
	waitIdle(t, s)
	redials := clientDials(t, s, before, 1) // 1: waitIdle's
	t.Logf("redisconn.Client: %d calls against a stopped server: p50 %s p99 %s max %s (canaries' 25 ms waits: p99 %s max %s); %d timed out, %d other errors; %d new connections",
		len(lat), ms(lat.pct(50)), ms(lat.pct(99)), ms(lat.max()), ms(canary.pct(99)), ms(canary.max()), timeouts, other, redials)
	if other > 0 {
		t.Logf("first error that is not a timeout: %v", firstOther)
	}
	if redials > maxRedials {
		t.Errorf("the client opened %d new connections to a stopped server, want at most %d", redials, maxRedials)
	}
	if _, maxLat := budget(canary); lat.max() > maxLat {
		t.Errorf("slowest call %s, want at most %s", ms(lat.max()), ms(maxLat))
	}
	if timeouts+other != len(lat) {
		t.Errorf("%d of %d calls succeeded against a stopped server", len(lat)-timeouts-other, len(lat))
	}
	// And the client is usable again once the server is.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := count(ctx, c, "{rc}:after", "after"); err != nil {
		t.Errorf("first call after the server resumed: %v", err)
	}
}
