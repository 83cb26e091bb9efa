// Package redisconn builds the one Redis client the sidecar uses, from a URL (redis://,
// rediss:// with TLS, unix://, redis-sentinel://, redis-cluster:// and their TLS forms) or,
// with no URL, an embedded in-memory store, and gives every caller the same small API, the
// same per-call deadline and the same reply types whatever the topology.
//
// Underneath is rueidis (see internal/redisclientcheck/REPORT.md for why, and for the options
// chosen here). rueidis.NewClient dials at once and fails while Redis is down, so New never
// calls it: the rueidis client is built in the background on first use and retried until it
// exists, and until then every call fails at once with ErrNotReady instead of waiting.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// EmbeddedWarning is logged at WARN level whenever New starts the embedded store.
const EmbeddedWarning = "embedded in-memory store: state is per-process and NOT shared between replicas; set redis.url for production"

// Defaults of the Options that are not deadlines (those live in redisurl).
const (
	// DefaultMaxInFlight bounds the commands admitted at once. It is far above what a healthy
	// Redis sees from one sidecar (a few hundred), so it only bites when Redis stalls and
	// callers pile up: then failing fast keeps goroutines and memory bounded.
	DefaultMaxInFlight = 10000
	// DefaultCacheBytes is the client-side cache per connection. rueidis's own default is
	// 128 MiB per connection, which a sidecar cannot afford on every node of a Cluster.
	DefaultCacheBytes = 16 << 20
)

var (
	// ErrNil is the reply to a GET of a missing key, or a script's nil.
	ErrNil = errors.New("redis: nil")
	// ErrNotReady means the client has not connected to Redis yet (Redis was down at start,
	// or the credentials are wrong). It is returned at once, not after a deadline.
	ErrNotReady = errors.New("redisconn: not connected to redis yet")
	// ErrBusy means Options.MaxInFlight commands are already running.
	ErrBusy = errors.New("redisconn: too many redis commands in flight")
	// ErrCrossSlot means one command (or one Tx) named keys in several Cluster slots. rueidis
	// panics on it before any I/O; this package turns the panic into this error so that a bug
	// in key naming cannot crash the sidecar.
	ErrCrossSlot = errors.New("redisconn: keys of one command in several cluster slots")
)

// Options is what the config file says about Redis. The caller maps its config into this, so
// this package does not depend on internal/config.
type Options struct {
	// URL is any URL redisurl.Parse accepts. Empty means the embedded in-memory store.
	URL string
	// EmbeddedAddr is where the embedded store listens when URL is empty: a loopback
	// IP:port (redisurl.ParseEmbeddedAddr). Empty means redisurl.DefaultEmbeddedAddr, a free
	// port; a fixed port lets CLI commands reach the store of a running sidecar.
	EmbeddedAddr string
	// Username and Password override the URL's credentials for the data nodes when non-empty,
	// so that the password can come from a secret while the URL sits in a ConfigMap. The
	// sentinels' own credentials come from the URL only.
	Username, Password string
	// Timeout is the per-call deadline (see WithTimeout), applied to a call whose ctx has no
	// deadline of its own. Zero means redisurl.DefaultTimeout.
	Timeout time.Duration
	// DialTimeout bounds one connection attempt, TLS handshake included, and then, once
	// more, the handshake commands (HELLO with AUTH, SELECT, CLIENT TRACKING): rueidis times
	// the two apart. Zero means redisurl.DefaultDialTimeout.
	DialTimeout time.Duration
	// PoolSize and MinIdleConns are accepted for compatibility with older configs and
	// ignored: rueidis multiplexes every call over one connection per node, so there is no
	// pool to size. Negative values are still rejected.
	PoolSize, MinIdleConns int
	// TLS applies to rediss:// URLs (and the rediss- Sentinel and Cluster forms) only; setting
	// it with any other URL is an error, so that nobody believes a plaintext connection is
	// encrypted.
	TLS TLSOptions
	// ConnsPerNode is how many pipelined connections the client keeps to each node, rounded
	// up to a power of two (rueidis multiplexes 2^n). Zero and one mean one connection, which
	// made the largest batches and the least Redis CPU per call in the client A/B.
	ConnsPerNode int
	// MaxInFlight is how many commands may run at once; past it a call fails at once with
	// ErrBusy. Zero means DefaultMaxInFlight.
	MaxInFlight int
	// CacheBytes is the client-side cache per connection (GetCached, HGetAllCached). Zero
	// means DefaultCacheBytes; negative turns caching off. The embedded store never caches:
	// it does not implement CLIENT TRACKING.
	CacheBytes int
	// OnBusy, when set, is called for every call refused with ErrBusy (a metric).
	OnBusy func()
	// OnInvalidation, when set, is called with the number of keys of every invalidation
	// message Redis pushes for the local cache (0 for "flush everything"). It runs on the
	// connection's reader goroutine, so it must be quick.
	OnInvalidation func(keys int)
	// OnConnFailure, when set, is called once for every failed attempt to connect: a dial, a
	// TLS handshake or a handshake command (AUTH, HELLO, SELECT). reason is one of "refused",
	// "timeout", "tls", "auth" or "error", so that it can be a metric label.
	OnConnFailure func(reason string)
}

// Client is the Redis client plus what callers need to use it well: the deadline to put on
// each call and a description that is safe to log. All methods are safe for concurrent use.
type Client struct {
	ropt     rueidis.ClientOption
	topology redisurl.Topology
	timeout  time.Duration
	desc     string
	embedded *embeddedStore // nil unless the embedded store is in use
	cache    bool
	log      *zap.Logger

	maxInFlight   int64
	inFlight      atomic.Int64
	onBusy        func()
	onConnFailure func(reason string)

	// rc is the rueidis client once the background builder has made it.
	rc atomic.Pointer[rueidis.Client]
	// refused is set when a call or an attempt to build rc saw the connection refused, and
	// cleared by the next success: Ready reports it.
	refused atomic.Bool
	// lastErr is why the last attempt to build rc failed, for ErrNotReady's message.
	lastErr atomic.Pointer[error]
	// dialFailures counts failed dials, so that the builder does not report a failure
	// OnConnFailure already heard about from the dialer.
	dialFailures atomic.Int64

	// started is set once the builder runs; mu orders starting it against Close.
	started atomic.Bool
	mu      sync.Mutex
	closed  bool
	// stopCtx is cancelled by Close: it stops the builder's back-off and any dial in flight.
	stopCtx context.Context
	stop    context.CancelFunc
	done    chan struct{} // closed when connect returns
	ready   chan struct{} // closed when rc is set

	closeOnce sync.Once
}

// New builds a Client from opts. It does no network I/O: Redis may be down when the sidecar
// starts, and config validation calls New too. With an empty URL it starts the embedded store
// in-process and logs EmbeddedWarning. A nil log discards the warnings.
func New(opts Options, log *zap.Logger) (*Client, error) {
	if log == nil {
		log = zap.NewNop()
	}
	opts, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	if opts.URL == "" {
		return newEmbedded(opts, log)
	}
	u, err := redisurl.Parse(opts.URL)
	if err != nil {
		// Its message never quotes a credential.
		return nil, err
	}
	if opts.Username != "" {
		u.Username = opts.Username
	}
	if opts.Password != "" {
		u.Password = opts.Password
	}
	var tlsConf *tls.Config
	switch {
	case u.TLS:
		if tlsConf, err = newTLSConfig(opts.TLS); err != nil {
			return nil, err
		}
		if opts.TLS.InsecureSkipVerify {
			log.Warn("redis tls certificate verification is disabled: anyone on the path can read and change traffic",
				zap.String("redis", u.Redacted()))
		}
	case !opts.TLS.isZero():
		return nil, fmt.Errorf("redisconn: tls options need a rediss:// url, not %s://", u.Scheme())
	}
	return assemble(u, opts, tlsConf, u.Redacted(), nil, log), nil
}

// assemble makes a Client for u; nothing is dialled until the first call.
func assemble(u redisurl.URL, opts Options, tlsConf *tls.Config, desc string, emb *embeddedStore, log *zap.Logger) *Client {
	c := &Client{
		topology:      u.Topology,
		timeout:       opts.Timeout,
		desc:          desc,
		embedded:      emb,
		cache:         opts.CacheBytes >= 0 && emb == nil,
		log:           log,
		maxInFlight:   int64(opts.MaxInFlight),
		onBusy:        opts.OnBusy,
		onConnFailure: opts.OnConnFailure,
		done:          make(chan struct{}),
		ready:         make(chan struct{}),
	}
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	c.ropt = clientOption(u, opts, tlsConf, c.cache)
	c.ropt.DialCtxFn = c.dial
	if f := opts.OnInvalidation; f != nil {
		c.ropt.OnInvalidations = func(keys []rueidis.RedisMessage) { f(len(keys)) }
	}
	return c
}

// withDefaults fills zero values and rejects negative ones, reporting every problem at once.
func withDefaults(opts Options) (Options, error) {
	var errs []error
	for _, f := range []struct {
		name string
		bad  bool
	}{
		{"timeout", opts.Timeout < 0},
		{"dial timeout", opts.DialTimeout < 0},
		{"pool size", opts.PoolSize < 0},
		{"connections per node", opts.ConnsPerNode < 0},
		{"min idle conns", opts.MinIdleConns < 0},
		{"max in flight", opts.MaxInFlight < 0},
	} {
		if f.bad {
			errs = append(errs, fmt.Errorf("redisconn: %s must not be negative", f.name))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	if opts.Timeout == 0 {
		opts.Timeout = redisurl.DefaultTimeout
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = redisurl.DefaultDialTimeout
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	return opts, nil
}

// client returns the rueidis client, starting the builder on first use. Until the client
// exists it returns ErrNotReady, with the reason of the last failed attempt when there is one.
func (c *Client) client() (rueidis.Client, error) {
	if rc := c.rc.Load(); rc != nil {
		return *rc, nil
	}
	c.start()
	if rc := c.rc.Load(); rc != nil { // The builder may have finished in between.
		return *rc, nil
	}
	if p := c.lastErr.Load(); p != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotReady, *p)
	}
	return nil, ErrNotReady
}

// start runs connect once, unless the Client is closed.
func (c *Client) start() {
	if c.started.Load() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.started.Load() {
		return
	}
	c.started.Store(true)
	go c.connect()
}

// Back-off between attempts to build the rueidis client: short at first, so that a sidecar
// that started a moment before its Redis is ready a moment after it, and capped, so that a
// long outage costs Redis one dial a second per sidecar at most.
const (
	minBackoff = 25 * time.Millisecond
	maxBackoff = time.Second
)

// connect makes the rueidis client, retrying with jittered exponential back-off until it
// succeeds or Close stops it. Failures are logged at the first attempt and then every
// 30 s, so that an outage does not flood the log.
func (c *Client) connect() {
	defer close(c.done)
	backoff := minBackoff
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		dialFailures := c.dialFailures.Load()
		rc, err := rueidis.NewClient(c.ropt)
		if err == nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				rc.Close()
				return
			}
			c.rc.Store(&rc)
			c.refused.Store(false)
			close(c.ready)
			c.mu.Unlock()
			c.log.Info("connected to redis", zap.String("redis", c.desc), zap.Int("attempts", attempt))
			return
		}
		if c.stopCtx.Err() != nil {
			return
		}
		c.lastErr.Store(&err)
		if isRefused(err) {
			c.refused.Store(true)
		}
		// A failed dial was reported by dial itself; anything else (AUTH, HELLO, SELECT,
		// CLUSTER SLOTS, the sentinels not knowing the master) is reported here.
		if c.onConnFailure != nil && c.dialFailures.Load() == dialFailures {
			c.onConnFailure(failureReason(err))
		}
		if now := time.Now(); now.Sub(lastLog) >= 30*time.Second {
			lastLog = now
			c.log.Warn("cannot connect to redis yet; retrying in the background",
				zap.String("redis", c.desc), zap.Int("attempt", attempt), zap.Error(err))
		}
		// Full jitter, so that sidecars restarted together do not dial in step.
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-c.stopCtx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// dial is rueidis's DialCtxFn: TCP, or a unix socket for an address that is a path, then TLS
// when tlsConf is set (its server name defaulting to the host). Close cancels it, so that
// closing a Client never waits a dial timeout out. It observes every dial, including the
// redials rueidis makes on its own after a connection broke, for OnConnFailure.
func (c *Client) dial(ctx context.Context, addr string, d *net.Dialer, tlsConf *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.stopCtx, cancel)()
	network := "tcp"
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	var conn net.Conn
	var err error
	if tlsConf != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsConf}).DialContext(ctx, network, addr)
	} else {
		conn, err = d.DialContext(ctx, network, addr)
	}
	if err != nil {
		// Ready is not changed here: rueidis also dials in the background (a sentinel, a
		// replica, a Cluster node no call needs right now), and a refusal there says nothing
		// about the calls. A call that needed this dial gets its error and sets refused.
		c.dialFailures.Add(1)
		if c.onConnFailure != nil && c.stopCtx.Err() == nil {
			c.onConnFailure(failureReason(err))
		}
		return nil, err
	}
	return conn, nil
}

// isRefused reports whether err means nothing listens at the address: the server is down,
// not slow. A unix socket whose file is missing counts too.
func isRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}

// failureReason sorts a connection failure into the few labels OnConnFailure promises.
func failureReason(err error) string {
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	switch {
	case isRefused(err):
		return "refused"
	case IsTimeout(err):
		return "timeout"
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alert):
		return "tls"
	case HasErrorPrefix(err, "WRONGPASS"), HasErrorPrefix(err, "NOAUTH"), HasErrorPrefix(err, "NOPERM"):
		return "auth"
	}
	return "error"
}

// Cluster reports whether the URL names a Redis Cluster, where every command's keys must
// share one slot: consumers use it to split their work per slot.
func (c *Client) Cluster() bool { return c.topology == redisurl.Cluster }

// Embedded reports whether the client talks to the in-process store.
func (c *Client) Embedded() bool { return c.embedded != nil }

// Timeout is the per-call deadline.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Describe names the server for logs: scheme, addresses, master name and database, never
// credentials.
func (c *Client) Describe() string { return c.desc }

// WithTimeout returns ctx bounded by the per-call deadline. An earlier deadline already on ctx
// stays in force: a deadline is never extended.
func (c *Client) WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// Ready reports whether the rueidis client exists and the last call or dial did not find the
// connection refused. It does no I/O (it starts the background builder if nothing has), so
// a readiness probe can call it as often as it likes; Ping is the probe that asks Redis.
func (c *Client) Ready() bool {
	if c.rc.Load() == nil {
		c.start()
		return false
	}
	return !c.refused.Load()
}

// WaitReady starts connecting if nothing has and waits until the rueidis client exists, ctx
// ends or the Client is closed. Calls never wait like this (they fail with ErrNotReady); it is
// for a process that prefers to start once Redis is there, within a bound it chooses, and for
// tests.
func (c *Client) WaitReady(ctx context.Context) error {
	if _, err := c.client(); err == nil {
		return nil
	}
	select {
	case <-c.ready:
		return nil
	case <-c.stopCtx.Done():
		return fmt.Errorf("redisconn: %s: %w: client closed", c.desc, ErrNotReady)
	case <-ctx.Done():
		_, err := c.client()
		return fmt.Errorf("redisconn: waited for %s until %w: %w", c.desc, ctx.Err(), err)
	}
}

// Ping checks that Redis answers within the per-call deadline derived from ctx. Its error
// names the server (never a credential) and, while the client is not ready, says why.
func (c *Client) Ping(ctx context.Context) error {
	if _, err := c.Do(ctx, "PING", nil); err != nil {
		return fmt.Errorf("redisconn: ping %s: %w", c.desc, err)
	}
	return nil
}

// IsTimeout reports whether err means a call ran out of time rather than failed: Redis is
// slow, not broken. rueidis returns the ctx's error when the deadline passes first, but a
// socket deadline (a dial, a TLS handshake, rueidis's ConnWriteTimeout) shows up as a
// net.Error whose Timeout() is true. A refused connection, ErrNotReady, ErrBusy or a Redis
// error reply is not a timeout, even when ErrNotReady carries a dial that timed out: the call
// itself never waited.
func IsTimeout(err error) bool {
	if errors.Is(err, ErrNotReady) || errors.Is(err, ErrBusy) {
		return false
	}
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Close stops the background builder, closes the rueidis client once its calls in flight have
// finished, then stops the embedded store, if any. A dial in progress is cancelled, but a
// handshake in progress against a stalled server may hold Close for up to DialTimeout. It is
// safe to call more than once; calls made after it fail.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		started := c.started.Load()
		c.mu.Unlock()
		c.stop()
		if started {
			<-c.done
		}
		if rc := c.rc.Load(); rc != nil {
			(*rc).Close()
		}
		if c.embedded != nil {
			c.embedded.close()
		}
	})
	return nil
}
