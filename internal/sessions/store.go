package sessions

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// Limits on hostile or broken input.
const (
	// MaxCookieHeader is the longest Cookie header Resolve looks at; a longer one is treated
	// as carrying no session, so that parsing it and hashing its value stay cheap.
	MaxCookieHeader = 16 << 10
	// MaxSessionBytes is the largest session value Resolve parses; a larger one is corrupt.
	MaxSessionBytes = 1 << 20
	// maxTouchSeconds caps a touch TTL at 100 years, past which nothing practical changes
	// and beyond which a Duration could overflow.
	maxTouchSeconds = 100 * 365 * 24 * 60 * 60
)

// ErrNoSession means the request carries no valid session: no cookie, an unsigned or
// malformed one, a bad signature, or a sid that Redis does not know. It is the client's
// problem, and the answer is to treat the request as anonymous.
var ErrNoSession = errors.New("no session")

// ErrCorrupt means the session's key exists but its value is not a session (not a JSON
// object, too large, or not a string). Errors that wrap it satisfy errors.Is(err,
// ErrNoSession) too: the client can do nothing about it and is treated as anonymous, but the
// operator should hear about it, so callers that log may test for ErrCorrupt first.
var ErrCorrupt = fmt.Errorf("%w: corrupt session data", ErrNoSession)

// The reasons behind ErrNoSession, as fixed values: distinct texts for logs, no allocation on
// the paths that hostile traffic takes, and nothing from the request in them.
var (
	errHeaderTooLong = fmt.Errorf("%w: cookie header over %d bytes", ErrNoSession, MaxCookieHeader)
	errNoCookie      = fmt.Errorf("%w: no session cookie", ErrNoSession)
	errUnsigned      = fmt.Errorf("%w: cookie not signed", ErrNoSession)
	errBadSignature  = fmt.Errorf("%w: bad cookie signature", ErrNoSession)
	errNotFound      = fmt.Errorf("%w: not in redis", ErrNoSession)
	errTooLarge      = fmt.Errorf("%w: value over %d bytes", ErrCorrupt, MaxSessionBytes)
	errNotJSON       = fmt.Errorf("%w: not a JSON object", ErrCorrupt)
	errWrongType     = fmt.Errorf("%w: key holds a non-string value", ErrCorrupt)
)

// Redis is the part of the Redis client that Store uses. *redisconn.Client fits on every
// topology; it is an interface so that tests can count the calls that reach Redis.
//
// Get must return redisconn.ErrNil for a missing key. GetCached is the same read served from
// the client-side cache when it can be (hit true), for at most ttl; Store calls it only when
// Options.Cache is set.
type Redis interface {
	Get(ctx context.Context, key string) (string, error)
	GetCached(ctx context.Context, key string, ttl time.Duration) (val string, hit bool, err error)
	Expire(ctx context.Context, key string, ttl time.Duration) error
}

var _ Redis = (*redisconn.Client)(nil)

// Session is a resolved, valid session.
type Session struct {
	// ID is the session id, the secret that names the session in Redis: never log it.
	ID string
	// Subject is the text of the value at Options.Subject, "" when it is missing, not a
	// string, number or boolean, or unfit for a header (CR, LF or NUL). The caller treats ""
	// as no identity.
	Subject string
	// Roles holds the role at Options.Roles, or the strings of the list there; non-string
	// elements, empty strings and strings with CR, LF or NUL are left out.
	Roles []string
	// Scopes holds the scope at Options.Scopes, or the strings of the list there, filtered as
	// Roles is; nil when Options.Scopes is "".
	Scopes []string
	// Headers lists, in header-name order, one Header per configured path present in the
	// session whose value is a string, number or boolean without CR, LF or NUL.
	Headers []Header

	// mark is the session index's note (recorder.go); nil when the store has no Recorder.
	mark *indexMark
}

// Header is one upstream header taken from the session.
type Header struct{ Name, Value string }

// String describes the session with its ID redacted, so that logging it is safe.
func (s Session) String() string {
	return fmt.Sprintf("sessions.Session{ID:[redacted] Subject:%q Roles:%q Scopes:%q Headers:%v}", s.Subject, s.Roles, s.Scopes, s.Headers)
}

// GoString is String, so that %#v does not print the ID either.
func (s Session) GoString() string { return s.String() }

// Store resolves session cookies against connect-redis data. It is safe for concurrent use.
type Store struct {
	rdb   Redis
	cfg   config
	touch *touchMemory // nil when touching is off
	memo  *memo
	now   func() time.Time
	// cache is Options.Cache, validated; nil when reads bypass the client-side cache.
	cache *CacheOptions
	// rec is Options.Recorder; nil when no session index is kept.
	rec *Recorder
}

// memoSize bounds each generation of parsed sessions kept (about 1 KiB an entry).
const memoSize = 1 << 14

// New validates opts and returns a Store that reads sessions from rdb. It reports every
// problem with opts at once.
func New(rdb Redis, opts Options) (*Store, error) {
	cfg, err := opts.validate()
	if rdb == nil {
		err = errors.Join(errors.New("sessions: nil redis client"), err)
	}
	if err != nil {
		return nil, err
	}
	s := &Store{rdb: rdb, cfg: cfg, now: time.Now, memo: newMemo(memoSize), rec: opts.Recorder}
	if opts.Cache != nil {
		c := *opts.Cache
		s.cache = &c
	}
	if cfg.touchTTL > 0 {
		s.touch = newTouchMemory(cfg.touchEvery, s.now())
	}
	return s, nil
}

// CookieName returns the configured cookie name, for instance to strip the cookie before
// the request goes upstream.
func (s *Store) CookieName() string { return s.cfg.cookieName }

// String describes the store without its secrets.
func (s *Store) String() string {
	return fmt.Sprintf("sessions.Store{cookie:%q prefix:%q secrets:[%d redacted] touch:%v}",
		s.cfg.cookieName, s.cfg.prefix, len(s.cfg.verifiers), s.cfg.touchTTL > 0)
}

// GoString is String, so that %#v does not print the secrets either.
func (s *Store) GoString() string { return s.String() }

// Resolve finds the session named by the request's Cookie header. The Session returned may be
// shared with other calls for the same session: callers must not modify it.
//
// It returns an error wrapping ErrNoSession for any client-side problem, and then makes no
// Redis call unless the cookie's signature verified. Corrupt data in Redis wraps ErrCorrupt,
// which is also ErrNoSession. When Redis fails (including ctx's deadline), the error wraps
// the client's or context's error and is not ErrNoSession, so that the caller can apply its
// failure policy. No error says anything about the cookie or the sid.
//
// With Options.Cache, the GET goes through the client-side cache (see CacheOptions): a session
// or an unknown sid it holds is answered without a round trip, and Redis invalidates the entry
// on any change of the key, so a logout is seen by the next request.
//
// When touching is on and this process has not touched the session within TouchEvery,
// Resolve also sends EXPIRE under ctx after the GET; its failure is not Resolve's.
func (s *Store) Resolve(ctx context.Context, cookieHeader string) (*Session, error) {
	if len(cookieHeader) > MaxCookieHeader {
		return nil, errHeaderTooLong
	}
	raw, ok := CookieValue(cookieHeader, s.cfg.cookieName)
	if !ok || raw == "" {
		return nil, errNoCookie
	}
	if !strings.HasPrefix(raw, signedPrefix) {
		return nil, errUnsigned
	}
	sid, ok := unsignWith(raw, s.cfg.verifiers)
	if !ok {
		return nil, errBadSignature
	}
	key := s.cfg.prefix + sid
	data, err := s.get(ctx, key)
	switch {
	case errors.Is(err, redisconn.ErrNil):
		return nil, errNotFound
	case redisconn.HasErrorPrefix(err, "WRONGTYPE"):
		// Someone else's data under the session prefix: a server problem, but no reason to
		// apply the Redis failure policy to a request that simply has no session.
		return nil, errWrongType
	case err != nil:
		return nil, fmt.Errorf("sessions: redis get: %w", err)
	}
	if len(data) > MaxSessionBytes {
		return nil, errTooLarge
	}
	e, ok := s.memo.get(sid, data)
	if !ok {
		obj, ok := parseSession(data)
		if !ok {
			return nil, errNotJSON
		}
		sess := s.session(sid, obj)
		if s.rec != nil {
			sess.mark = &indexMark{expires: cookieExpires(obj)}
		}
		e = memoEntry{data: data, sess: sess, touchSec: touchSeconds(obj)}
		s.memo.put(sid, e)
	}
	s.maybeTouch(ctx, key, sid, e.touchSec)
	return e.sess, nil
}

// Seen hands a session Resolve returned, used by a client at ip with user agent ua, to the
// session index (Options.Recorder); without one it does nothing. It never blocks: see
// Recorder.Seen.
func (s *Store) Seen(sess *Session, ip, ua string) {
	if s.rec != nil {
		s.rec.Seen(sess, ip, ua)
	}
}

// ReadsScopes reports whether the store reads scopes from sessions (Options.Scopes is set), so
// that a caller whose policies expect session scopes can tell a store built without them.
func (s *Store) ReadsScopes() bool { return s.cfg.scopes != nil }

// maybeTouch sends the session's EXPIRE when touching is on and this process has not touched
// it within TouchEvery. A failed touch leaves the session as valid as it was; the next
// interval retries.
func (s *Store) maybeTouch(ctx context.Context, key, sid string, sec int64) {
	if s.touch == nil || !s.touch.claim(sid, s.now()) {
		return
	}
	ttl := s.cfg.touchTTL
	if sec > 0 {
		ttl = time.Duration(sec) * time.Second
	}
	_ = s.rdb.Expire(ctx, key, ttl)
}

// session builds the Session for sid from its parsed value.
func (s *Store) session(sid string, obj map[string]any) *Session {
	sess := &Session{ID: sid}
	if v, ok := lookup(obj, s.cfg.subject); ok {
		if t, ok := text(v); ok && headerSafe(t) {
			sess.Subject = t
		}
	}
	if s.cfg.roles != nil {
		sess.Roles = roles(obj, s.cfg.roles)
	}
	if s.cfg.scopes != nil {
		sess.Scopes = roles(obj, s.cfg.scopes)
	}
	for _, h := range s.cfg.headers {
		v, ok := lookup(obj, h.path)
		if !ok {
			continue
		}
		if t, ok := text(v); ok && headerSafe(t) {
			sess.Headers = append(sess.Headers, Header{Name: h.name, Value: t})
		}
	}
	return sess
}

// roles reads a role string or a list of them (or, at Options.Scopes, scopes).
func roles(obj map[string]any, path []string) []string {
	v, _ := lookup(obj, path)
	ok := func(r string) bool { return r != "" && headerSafe(r) }
	switch v := v.(type) {
	case string:
		if ok(v) {
			return []string{v}
		}
	case []any:
		var out []string
		for _, e := range v {
			if r, isStr := e.(string); isStr && ok(r) {
				out = append(out, r)
			}
		}
		return out
	}
	return nil
}
