package redisconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// minExpiryInterval is the finest step by which the embedded store's TTLs advance: a key
// expires, and PTTL counts down, up to this late.
const minExpiryInterval = 50 * time.Millisecond

// embeddedStore is a miniredis plus the goroutine that moves its TTLs on the wall clock.
type embeddedStore struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

// newEmbedded starts a miniredis on a loopback port (opts.EmbeddedAddr) and connects to it over TCP, so that
// callers run the same client code (scripts, transactions, deadlines) against it as against
// a real Redis. Caching is off: miniredis rejects CLIENT TRACKING.
func newEmbedded(opts Options, log *zap.Logger) (*Client, error) {
	if !opts.TLS.isZero() {
		return nil, errors.New("redisconn: tls options need a rediss:// url, not the embedded store")
	}
	addr := opts.EmbeddedAddr
	if addr == "" {
		addr = redisurl.DefaultEmbeddedAddr
	}
	// Checked here as well as in config: the store has no password, so no caller may put it
	// where another host can reach it.
	ap, err := redisurl.ParseEmbeddedAddr(addr)
	if err != nil {
		return nil, fmt.Errorf("redisconn: embedded store address: %w", err)
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(ap.String()); err != nil {
		if ap.Port() != 0 {
			return nil, fmt.Errorf("redisconn: start embedded store on %s (redis.embedded_addr): %w; is another extauthz serve using it?", ap, err)
		}
		return nil, fmt.Errorf("redisconn: start embedded store: %w", err)
	}
	s := &embeddedStore{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go s.expire()

	// Credentials are not passed on: the embedded store has no users, and a password meant for
	// a real Redis must not make it fail.
	u := redisurl.URL{Topology: redisurl.Single, Addrs: []string{m.Addr()}}
	log.Warn(EmbeddedWarning, zap.String("addr", m.Addr()))
	c := assemble(u, opts, nil, "embedded in-memory store at "+m.Addr(), s, log)
	// The store is in this process and cannot be down, so connect now: the first call must
	// not fail with ErrNotReady. A failure here is a bug, not an outage.
	c.start()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("redisconn: connect to the embedded store: %w", err)
	}
	return c, nil
}

// expire advances every TTL by the wall-clock time elapsed, until close. Left alone, miniredis
// expires keys only when told to (FastForward), so every rate-limit window would stay open
// forever. Its ClockTTL mode would do this on every command instead, but each advance sorts
// and visits every key under the store's one lock (about 0.7µs a key: 7ms at 10,000 keys),
// which would put that cost on every request. Here it runs at most every minExpiryInterval,
// and further apart as the store grows, so that the lock stays free 95% of the time.
func (s *embeddedStore) expire() {
	defer close(s.done)
	last := time.Now()
	timer := time.NewTimer(minExpiryInterval)
	defer timer.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-timer.C:
		}
		now := time.Now()
		s.m.FastForward(now.Sub(last))
		last = now
		timer.Reset(max(minExpiryInterval, 20*time.Since(now)))
	}
}

// close stops the expiry goroutine, then the server.
func (s *embeddedStore) close() {
	close(s.stop)
	<-s.done
	s.m.Close()
}
