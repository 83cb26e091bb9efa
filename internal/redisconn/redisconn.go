// Package redisconn builds the one Redis client the sidecar uses, from a URL (redis://,
// rediss:// with TLS, unix://) or, with no URL, an embedded in-memory store, and gives every
// caller the same per-call deadline.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// EmbeddedWarning is logged at WARN level whenever New starts the embedded store.
const EmbeddedWarning = "embedded in-memory store: state is per-process and NOT shared between replicas; set redis.url for production"

// Options is what the config file says about Redis. The caller maps its config into this, so
// this package does not depend on internal/config.
type Options struct {
	// URL is redis://[user:pass@]host:port/db, rediss://... for TLS, or unix:///path?db=N.
	// Empty means the embedded in-memory store.
	URL string
	// Username and Password override the URL's credentials when non-empty, so that the
	// password can come from a secret while the URL sits in a ConfigMap.
	Username, Password string
	// Timeout is the per-call deadline (see WithTimeout) and the socket read/write timeout.
	// Zero means redisurl.DefaultTimeout.
	Timeout time.Duration
	// DialTimeout bounds one connection attempt, TLS handshake included. go-redis dials in
	// the background, detached from the request that asked, so this is how long a dial may
	// keep trying after that request has given up. Zero means redisurl.DefaultDialTimeout.
	DialTimeout time.Duration
	// PoolSize and MinIdleConns size the connection pool; zero means go-redis's defaults
	// (10 per GOMAXPROCS, and none kept idle).
	PoolSize, MinIdleConns int
	// TLS applies to rediss:// URLs only; setting it with any other URL is an error, so that
	// nobody believes a plaintext connection is encrypted.
	TLS TLSOptions
}

// Client is a configured Redis client plus what callers need to use it well: the deadline to
// put on each call and a description that is safe to log.
type Client struct {
	rdb      redis.UniversalClient
	timeout  time.Duration
	desc     string
	embedded *embeddedStore // nil unless the embedded store is in use

	// For NewPipe: the server and how to reach it.
	ep          endpoint
	dialer      func(ctx context.Context) (net.Conn, error)
	dialTimeout time.Duration

	closeOnce sync.Once
	closeErr  error
}

// New builds a Client from opts. It does no network I/O: Redis may be down when the sidecar
// starts, and readiness (Ping) is what reports it. With an empty URL it starts the embedded
// store in-process and logs EmbeddedWarning. A nil log discards the warnings.
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

	ep, err := parseURL(opts.URL)
	if err != nil {
		return nil, err
	}
	if opts.Username != "" {
		ep.username = opts.Username
	}
	if opts.Password != "" {
		ep.password = opts.Password
	}
	var tlsConf *tls.Config
	switch {
	case ep.scheme == "rediss":
		if tlsConf, err = newTLSConfig(opts.TLS); err != nil {
			return nil, err
		}
		if opts.TLS.InsecureSkipVerify {
			log.Warn("redis tls certificate verification is disabled: anyone on the path can read and change traffic",
				zap.String("redis", ep.describe()))
		}
	case !opts.TLS.isZero():
		return nil, fmt.Errorf("redisconn: tls options need a rediss:// url, not %s://", ep.scheme)
	}
	return &Client{
		rdb:         redis.NewUniversalClient(universalOptions(ep, opts, tlsConf)),
		timeout:     opts.Timeout,
		desc:        ep.describe(),
		ep:          ep,
		dialer:      newDialer(ep, opts.DialTimeout, tlsConf),
		dialTimeout: opts.DialTimeout,
	}, nil
}

// newDialer connects to ep the way go-redis does: TCP (or a unix socket for a path) with
// keep-alives, then TLS when tlsConf is set, its server name defaulting to the host.
func newDialer(ep endpoint, timeout time.Duration, tlsConf *tls.Config) func(ctx context.Context) (net.Conn, error) {
	network, addr := "tcp", ep.addrs[0]
	if strings.HasPrefix(addr, "/") {
		network = "unix"
	}
	nd := &net.Dialer{Timeout: timeout}
	if tlsConf != nil {
		td := &tls.Dialer{NetDialer: nd, Config: tlsConf}
		return func(ctx context.Context) (net.Conn, error) { return td.DialContext(ctx, network, addr) }
	}
	return func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, network, addr) }
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
		{"min idle conns", opts.MinIdleConns < 0},
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
	return opts, nil
}

// universalOptions maps an endpoint and Options onto go-redis. NewUniversalClient picks a
// single-node client for one address; Sentinel (MasterName) and Cluster (several addresses)
// will pick the other client types from the same struct, which is why New does not call
// redis.NewClient directly.
func universalOptions(ep endpoint, opts Options, tlsConf *tls.Config) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		// One address that starts with '/' makes go-redis dial a unix socket.
		Addrs:    ep.addrs,
		DB:       ep.db,
		Username: ep.username,
		Password: ep.password,

		// RESP2: the scripts' replies stay plain integers, strings and arrays, and RESP3-only
		// machinery (push notifications, the CLIENT MAINT_NOTIFICATIONS handshake, client-side
		// caching) is never set up. HELLO 2 is still sent; it carries AUTH in the same round trip.
		Protocol: 2,
		// No CLIENT SETINFO pipeline on every new connection: one round trip saved per dial,
		// and the embedded store does not know the command anyway.
		DisableIdentity: true,
		// Off regardless of the protocol, so that moving to RESP3 later cannot turn it on by
		// default (go-redis's default mode is "auto").
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},

		// Deadlines: the caller's ctx bounds socket I/O and the wait for a pooled connection,
		// and Timeout bounds them when the ctx has no deadline of its own.
		ContextTimeoutEnabled: true,
		ReadTimeout:           opts.Timeout,
		WriteTimeout:          opts.Timeout,
		PoolTimeout:           opts.Timeout,
		DialTimeout:           opts.DialTimeout,

		// No command retries: an EVALSHA that timed out may already have incremented a counter,
		// and running it again would count one request twice.
		MaxRetries: -1,
		// One dial attempt per connection. go-redis dials in the background, and its default
		// (five attempts 100ms apart) keeps a dial going long after the request that wanted it
		// has given up: during an outage that is only load on a Redis coming back. The next
		// request, or readiness, dials again.
		DialerRetries: 1,

		PoolSize:     opts.PoolSize,
		MinIdleConns: opts.MinIdleConns,
		// Pipelines (INCRBY+EXPIRE) share the main pool instead of a second pool that is
		// never pre-dialed: the connections MinIdleConns keeps warm serve them, and one pool
		// is one PoolSize to reason about.
		PipelinePoolSize: -1,

		TLSConfig: tlsConf,
	}
}

// Redis returns the client callers use. It is a UniversalClient so that Sentinel and Cluster
// can slot in without changing them.
func (c *Client) Redis() redis.UniversalClient { return c.rdb }

// Embedded reports whether the client talks to the in-process store.
func (c *Client) Embedded() bool { return c.embedded != nil }

// Timeout is the per-call deadline.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Describe names the server for logs: scheme, address and database, never credentials.
func (c *Client) Describe() string { return c.desc }

// WithTimeout returns ctx bounded by the per-call deadline. An earlier deadline already on ctx
// stays in force: a deadline is never extended.
func (c *Client) WithTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// Ping checks that Redis answers within the per-call deadline derived from ctx.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := c.WithTimeout(ctx)
	defer cancel()
	if err := c.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisconn: ping %s: %w", c.desc, err)
	}
	return nil
}

// IsTimeout reports whether err means a call ran out of time rather than failed: Redis is
// slow, not broken. The check is needed because the same deadline shows up three ways. With
// ContextTimeoutEnabled, go-redis copies the ctx deadline onto the socket, so a reply that
// comes too late fails as a net.Error whose Timeout() is true (os.ErrDeadlineExceeded), not as
// context.DeadlineExceeded; waiting for a pooled connection fails as context.DeadlineExceeded
// or redis.ErrPoolTimeout. A refused connection or a Redis error reply is not a timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, redis.ErrPoolTimeout) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Close closes the client and then the embedded store, if any. Calls after the first return
// the first call's result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closeErr = c.rdb.Close()
		if c.embedded != nil {
			c.embedded.close()
		}
	})
	return c.closeErr
}
