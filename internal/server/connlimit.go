package server

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauthz/extauthz/internal/metrics"
)

// The action label values of the connections-limited counter.
const (
	actionEvictedIdle = "evicted_idle"
	actionRefused     = "refused"
)

// connLimiter is a listener that holds at most max connections open, so that a flood of
// connections cannot exhaust the process's file descriptors. At the cap a new connection
// closes the connection that has been idle longest (an HTTP keep-alive connection between
// requests, or one that has not sent its first request yet): the new one may be a proxy that
// needs an answer, the idle one costs its client a reconnect at most. When none is idle, or
// for a listener whose idleness is unknown (gRPC), the new connection is closed at once.
//
// Unlike netutil.LimitListener it never blocks Accept: a connection past the cap is answered
// (by closing it) rather than left in the kernel's backlog until the client gives up.
type connLimiter struct {
	net.Listener
	max int
	// evictIdle is set for listeners whose server reports idle connections (http.Server's
	// ConnState hook); without it a connection is never taken for idle.
	evictIdle bool

	mu    sync.Mutex
	conns map[*limitedConn]struct{}

	open             prometheus.Gauge
	evicted, refused prometheus.Counter
}

// limitedConn is one accepted connection. idleSince is the Unix nanosecond time it last
// became idle, or 0 while it serves a request; it is written by the http.Server's ConnState
// hook and read when a victim is chosen.
type limitedConn struct {
	net.Conn
	l         *connLimiter
	idleSince atomic.Int64
}

func newConnLimiter(l net.Listener, max int, evictIdle bool, listener string, m *metrics.Metrics) *connLimiter {
	c := &connLimiter{Listener: l, max: max, evictIdle: evictIdle, conns: map[*limitedConn]struct{}{}}
	if m != nil {
		c.open = m.Connections.WithLabelValues(listener)
		c.evicted = m.ConnectionsLimited.WithLabelValues(listener, actionEvictedIdle)
		c.refused = m.ConnectionsLimited.WithLabelValues(listener, actionRefused)
	}
	return c
}

// Accept returns the next connection within the cap. A connection refused at the cap is
// closed here and Accept waits for the next one, so the server never sees it.
func (l *connLimiter) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := &limitedConn{Conn: nc, l: l}
		c.idleSince.Store(time.Now().UnixNano())
		victim, ok := l.add(c)
		if victim != nil {
			_ = victim.Conn.Close()
			inc(l.evicted)
		}
		if ok {
			return c, nil
		}
		_ = nc.Close()
		inc(l.refused)
	}
}

// add registers c, making room by evicting the longest idle connection when at the cap. It
// returns the evicted connection (closed by the caller, outside the lock) and whether c was
// admitted.
func (l *connLimiter) add(c *limitedConn) (victim *limitedConn, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.max > 0 && len(l.conns) >= l.max {
		if l.evictIdle {
			victim = l.oldestIdleLocked()
		}
		if victim == nil {
			return nil, false
		}
		delete(l.conns, victim)
		dec(l.open)
	}
	l.conns[c] = struct{}{}
	inc(l.open)
	return victim, true
}

// oldestIdleLocked returns the connection idle the longest, or nil. It walks every
// connection, which happens only at the cap.
func (l *connLimiter) oldestIdleLocked() *limitedConn {
	var oldest *limitedConn
	var since int64
	for c := range l.conns {
		if t := c.idleSince.Load(); t != 0 && (oldest == nil || t < since) {
			oldest, since = c, t
		}
	}
	return oldest
}

func (l *connLimiter) remove(c *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; ok {
		delete(l.conns, c)
		dec(l.open)
	}
}

// count is the number of connections held open.
func (l *connLimiter) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// Close closes the connection and frees its place.
func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.l.remove(c)
	return err
}

// connState is the http.Server hook that tells the limiter which connections are idle.
func (l *connLimiter) connState(nc net.Conn, st http.ConnState) {
	c, ok := nc.(*limitedConn)
	if !ok {
		return
	}
	switch st {
	case http.StateActive, http.StateHijacked:
		c.idleSince.Store(0)
	case http.StateIdle:
		c.idleSince.Store(time.Now().UnixNano())
	}
}

func inc(c interface{ Inc() }) {
	if c != nil {
		c.Inc()
	}
}

func dec(g interface{ Dec() }) {
	if g != nil {
		g.Dec()
	}
}
