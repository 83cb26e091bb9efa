package sessions

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults of a Recorder.
const (
	// DefaultRecorderQueue bounds the visits waiting to be written. A visit is queued once
	// per session per seen_every at most, so even a busy sidecar fills it only when Redis
	// stalls; then visits are dropped, not the decisions slowed.
	DefaultRecorderQueue = 4096
	// DefaultRecorderTimeout bounds the Redis work of one write.
	DefaultRecorderTimeout = 2 * time.Second
)

// RecorderOptions configures a Recorder.
type RecorderOptions struct {
	// Every is the least time between two writes of one session's last_seen by this
	// process, DefaultIndexSeenEvery when zero.
	Every time.Duration
	// Queue bounds the visits waiting to be written, DefaultRecorderQueue when zero.
	Queue int
	// Timeout bounds one write, DefaultRecorderTimeout when zero.
	Timeout time.Duration
	// OnWrite, when set, is called after every write with its error (nil on success). The
	// error never names a sid.
	OnWrite func(err error)
	// OnDrop, when set, is called for every visit dropped because the queue was full.
	OnDrop func()
}

// Recorder keeps the session index from the decisions, off their path: Seen, called by the
// decision with a resolved session, costs an atomic load and, at most once per session per
// Every, a non-blocking send on a bounded queue; Run writes the queue to the index. A session
// is written when this process first resolves it (a Session the store built, not one its
// memo handed out again) and then at most every Every; a visit that finds the queue full is
// dropped and counted, and the next request for that session queues it again.
type Recorder struct {
	ix    *Index
	every int64 // nanoseconds
	queue chan visit
	opts  RecorderOptions
	base  time.Time
	// now returns the nanoseconds since base (monotonic), never 0.
	now func() int64
}

// visit is one queued use of a session. It holds the shared Session, not a copy: Seen must
// not allocate.
type visit struct {
	sess    *Session
	ip, ua  string
	expires time.Time
}

// indexMark is a Session's note of its last queued visit. It lives as long as the Session,
// which the memo keeps: a session built anew (first resolved here, or changed in Redis) is
// written again.
type indexMark struct {
	// seen is the Recorder's clock at the last queued visit; 0 means never.
	seen atomic.Int64
	// expires is the session's cookie.expires, zero when it has none.
	expires time.Time
}

// NewRecorder returns a Recorder writing to ix. Nothing is written until Run runs.
func NewRecorder(ix *Index, opts RecorderOptions) *Recorder {
	if opts.Every <= 0 {
		opts.Every = DefaultIndexSeenEvery
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultRecorderQueue
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRecorderTimeout
	}
	r := &Recorder{ix: ix, every: int64(opts.Every), queue: make(chan visit, opts.Queue), opts: opts, base: time.Now()}
	r.now = func() int64 { return int64(time.Since(r.base)) + 1 }
	return r
}

// Seen notes that sess was used by a client at ip with user agent ua. It never blocks and
// never touches Redis. Sessions that a Store with this Recorder did not build, and sessions
// without a subject, are ignored.
func (r *Recorder) Seen(sess *Session, ip, ua string) {
	m := sess.mark
	if m == nil || sess.Subject == "" {
		return
	}
	last := m.seen.Load()
	now := r.now()
	if last != 0 && now-last < r.every {
		return
	}
	// Of concurrent requests for one session, one queues the visit.
	if !m.seen.CompareAndSwap(last, now) {
		return
	}
	select {
	case r.queue <- visit{sess: sess, ip: boundedText(ip, maxIndexIP), ua: boundedText(ua, MaxUserAgent), expires: m.expires}:
	default:
		// Forget the claim, so that the next request tries again: a session never written
		// could not be revoked by its user's name.
		m.seen.CompareAndSwap(now, last)
		if r.opts.OnDrop != nil {
			r.opts.OnDrop()
		}
	}
}

// boundedText returns s, or a copy of its first n bytes (cut between characters) when it is
// longer: a queued visit must not keep a request's whole 64 KiB header alive. Only an
// oversized value costs an allocation.
func boundedText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.Clone(s[:i])
}

// Run writes queued visits until ctx ends; visits still queued then are dropped. Each write
// has its own deadline (RecorderOptions.Timeout) under ctx.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-r.queue:
			wctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
			err := r.ix.Record(wctx, Visit{SID: v.sess.ID, Subject: v.sess.Subject, IP: v.ip, UserAgent: v.ua, CookieExpires: v.expires})
			cancel()
			if r.opts.OnWrite != nil {
				r.opts.OnWrite(err)
			}
		}
	}
}

// cookieExpires reads cookie.expires (an ISO 8601 date, as Date.toJSON writes it), or
// returns the zero time.
func cookieExpires(obj map[string]any) time.Time {
	v, ok := lookup(obj, []string{"cookie", "expires"})
	if !ok {
		return time.Time{}
	}
	s, ok := v.(string)
	if !ok {
		if n, isNum := v.(json.Number); isNum {
			if ms, err := n.Int64(); err == nil && ms > 0 {
				return time.UnixMilli(ms)
			}
		}
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
