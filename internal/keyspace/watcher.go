// Package keyspace turns Redis keyspace notifications into cache invalidations.
//
// A Watcher subscribes (PSUBSCRIBE) to the notifications of the key prefixes whose values are
// cached locally, such as connect-redis's "sess:" and the API key records' "apikey:", and calls
// the prefix's Target with the rest of the key on every change: a logout (DEL), a session
// saved again (SET), a revoked key (HSET), an expiry or an eviction.
//
// A Target may serve cached values only while the Watcher says it is active, because only then
// is every change guaranteed to be heard. The Watcher says so after the subscription is
// confirmed and a probe has shown that the server really sends the notifications needed (Redis
// sends none unless notify-keyspace-events is set, and an ACL may forbid PSUBSCRIBE). Whenever
// the subscription breaks, every Target is deactivated at once, and reactivated (flushed) only
// after a fresh subscription and probe. Redis Cluster sends notifications per node and is not
// supported here.
package keyspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Target receives the invalidations of one key prefix; *localcache.Cache is one.
type Target interface {
	// Invalidate is called with the key minus its prefix.
	Invalidate(key string)
	// SetActive is true once every change is sure to be heard, false when that stops.
	SetActive(on bool)
}

// RequiredFlags are the notify-keyspace-events classes the Watcher needs: keyspace events (K),
// generic commands (g: DEL, RENAME), strings ($: SET), hashes (h: HSET), expired (x) and
// evicted (e) keys. "KA" includes them all.
const RequiredFlags = "Kg$hxe"

// ProbePrefix starts the keys the probe writes; each probe's key is gone within a second.
const ProbePrefix = "extauthz:probe:"

// Options tunes a Watcher; zero values take the defaults.
type Options struct {
	// ProbeTimeout is how long the probe waits for its own notifications (default 2s).
	ProbeTimeout time.Duration
	// Retry is the pause before subscribing again after a failure, and between probes while
	// notifications are off (default 30s).
	Retry time.Duration
	// Ping is the idle time after which the subscription is pinged (default 15s).
	Ping time.Duration
	// OnEvent, when set, is called for each invalidation with the prefix's name.
	OnEvent func(name string)
	// OnActive, when set, is called with the Watcher's state whenever it changes.
	OnActive func(on bool)
}

type watch struct {
	name    string
	prefix  string
	pattern string // the channel pattern, prefix escaped
	target  Target
}

// Watcher is created with New, given prefixes with Watch, and run with Run.
type Watcher struct {
	rdb  *redis.Client
	db   int
	log  *zap.Logger
	opts Options

	mu      sync.Mutex
	watches []watch
	active  bool
}

// New returns a Watcher over rdb, whose notifications for database rdb.Options().DB it reads.
func New(rdb *redis.Client, log *zap.Logger, opts Options) *Watcher {
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 2 * time.Second
	}
	if opts.Retry <= 0 {
		opts.Retry = 30 * time.Second
	}
	if opts.Ping <= 0 {
		opts.Ping = 15 * time.Second
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Watcher{rdb: rdb, db: rdb.Options().DB, log: log, opts: opts}
}

// Watch registers target for the keys that start with prefix; name labels it in logs and
// metrics. Call it before Run.
func (w *Watcher) Watch(name, prefix string, target Target) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches = append(w.watches, watch{name: name, prefix: prefix, pattern: w.channel(globEscape(prefix)) + "*", target: target})
}

// Active reports whether notifications are flowing.
func (w *Watcher) Active() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}

func (w *Watcher) channel(key string) string {
	return "__keyspace@" + strconv.Itoa(w.db) + "__:" + key
}

func (w *Watcher) setActive(on bool) {
	w.mu.Lock()
	changed := w.active != on
	w.active = on
	ws := w.watches
	w.mu.Unlock()
	if !on || changed {
		for _, x := range ws {
			x.target.SetActive(on)
		}
	}
	if changed && w.opts.OnActive != nil {
		w.opts.OnActive(on)
	}
}

// Run subscribes and dispatches until ctx ends, resubscribing after failures. Targets are
// deactivated when it returns.
func (w *Watcher) Run(ctx context.Context) {
	defer w.setActive(false)
	w.mu.Lock()
	ws := append([]watch(nil), w.watches...)
	w.mu.Unlock()
	if len(ws) == 0 {
		return
	}
	for ctx.Err() == nil {
		err := w.session(ctx, ws)
		w.setActive(false)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("keyspace notifications lost; local session/API key caches are bypassed until they are back",
			zap.Error(err), zap.Duration("retry_in", w.opts.Retry))
		select {
		case <-ctx.Done():
		case <-time.After(w.opts.Retry):
		}
	}
}

// session runs one subscription until it fails or ctx ends.
func (w *Watcher) session(ctx context.Context, ws []watch) error {
	probeKey := ProbePrefix + randomID()
	patterns := make([]string, 0, len(ws)+1)
	for _, x := range ws {
		patterns = append(patterns, x.pattern)
	}
	probeChan := w.channel(probeKey)
	patterns = append(patterns, w.channel(globEscape(probeKey))+"*")

	ps := w.rdb.PSubscribe(ctx, patterns...)
	defer ps.Close()
	// go-redis watches only deadlines while it reads, so closing is what ends a wait at once.
	defer context.AfterFunc(ctx, func() { _ = ps.Close() })()

	confirmed := 0
	var (
		probeSeen     map[string]bool
		probeDeadline time.Time
		nextProbe     time.Time
		lastMsg       = time.Now()
		pingSent      time.Time // of a PING not answered yet
		warned        bool
	)
	startProbe := func() error {
		probeSeen = map[string]bool{}
		probeDeadline = time.Now().Add(w.opts.ProbeTimeout)
		return w.probe(ctx, probeKey)
	}
	for {
		wait := w.opts.Ping
		if !probeDeadline.IsZero() {
			wait = min(wait, time.Until(probeDeadline))
		} else if !nextProbe.IsZero() {
			wait = min(wait, time.Until(nextProbe))
		}
		msg, err := ps.ReceiveTimeout(ctx, max(wait, time.Millisecond))
		now := time.Now()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne interface{ Timeout() bool }
			if !errors.As(err, &ne) || !ne.Timeout() {
				return fmt.Errorf("keyspace: receive: %w", err)
			}
		} else {
			lastMsg, pingSent = now, time.Time{}
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "psubscribe" {
				confirmed++
				if confirmed == len(patterns) {
					if err := startProbe(); err != nil {
						return err
					}
				}
			}
		case *redis.Message:
			if m.Channel == probeChan {
				if probeSeen != nil {
					probeSeen[m.Payload] = true
					if probeSeen["set"] && probeSeen["hset"] && probeSeen["del"] {
						// Probe again later: notify-keyspace-events can be changed at run time.
						probeSeen, probeDeadline, nextProbe = nil, time.Time{}, now.Add(w.opts.Retry)
						if !w.Active() {
							w.log.Info("keyspace notifications on; local session/API key caches active")
							warned = false
						}
						w.setActive(true)
					}
				}
				continue
			}
			w.dispatch(ws, m)
		}
		if !probeDeadline.IsZero() && !now.Before(probeDeadline) {
			probeSeen, probeDeadline = nil, time.Time{}
			nextProbe = now.Add(w.opts.Retry)
			wasActive := w.Active()
			w.setActive(false)
			if !warned {
				// Off from the start is Redis's default and only costs speed: info. Notifications
				// that stopped while in use are a change someone should hear about: a warning.
				logf := w.log.Info
				if wasActive {
					logf = w.log.Warn
				}
				logf("Redis sends no keyspace notifications, so the local session/API key caches are off: set notify-keyspace-events to include "+RequiredFlags+" (for example \"KA\") to turn them on",
					zap.Duration("probe_again_in", w.opts.Retry))
				warned = true
			}
		}
		if !nextProbe.IsZero() && !now.Before(nextProbe) {
			nextProbe = time.Time{}
			if err := startProbe(); err != nil {
				return err
			}
		}
		if err != nil && now.Sub(lastMsg) >= w.opts.Ping {
			// A connection that died without a reset (a NAT or a node gone) accepts writes and
			// never answers: a PING unanswered for a whole interval ends the subscription.
			if !pingSent.IsZero() {
				return errors.New("keyspace: the subscription did not answer PING")
			}
			if err := ps.Ping(ctx); err != nil {
				return fmt.Errorf("keyspace: ping: %w", err)
			}
			lastMsg, pingSent = now, now
		}
	}
}

// dispatch hands one notification to the Target of its prefix.
func (w *Watcher) dispatch(ws []watch, m *redis.Message) {
	// "expire" only changes a key's TTL (a touch, or the EX of a SET that also sends "set");
	// deleting a key by EXPIRE with a past time sends "del".
	if m.Payload == "expire" {
		return
	}
	key, ok := strings.CutPrefix(m.Channel, w.channel(""))
	if !ok {
		return
	}
	for _, x := range ws {
		if rest, ok := strings.CutPrefix(key, x.prefix); ok {
			x.target.Invalidate(rest)
			if w.opts.OnEvent != nil {
				w.opts.OnEvent(x.name)
			}
		}
	}
}

// probe writes a string and a hash under key's name and deletes them, which sends "set",
// "hset" and "del" notifications when the server is configured for them.
func (w *Watcher) probe(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, w.opts.ProbeTimeout)
	defer cancel()
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, key, "1", time.Second)
		p.Del(ctx, key)
		p.HSet(ctx, key, "probe", "1")
		p.PExpire(ctx, key, time.Second)
		p.Del(ctx, key)
		return nil
	})
	if err != nil {
		return fmt.Errorf("keyspace: probe: %w", err)
	}
	return nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// globEscape escapes the characters PSUBSCRIBE patterns treat specially.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
