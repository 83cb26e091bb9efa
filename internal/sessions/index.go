package sessions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// The session index's defaults and bounds.
const (
	// DefaultIndexPrefix starts every key of the index.
	DefaultIndexPrefix = "extauthz:sessions:"
	// DefaultIndexMaxPerUser caps the sessions indexed per subject.
	DefaultIndexMaxPerUser = 50
	// MaxIndexPerUser bounds sessions.index.max_per_user, so that listing or revoking one
	// subject stays a few hundred small calls at most.
	MaxIndexPerUser = 1000
	// DefaultIndexSeenEvery is the least time between two writes of one session's last_seen
	// by one process.
	DefaultIndexSeenEvery = time.Minute
	// MaxUserAgent is the most bytes of a user agent the index keeps.
	MaxUserAgent = 256
	// maxIndexIP bounds the client address kept (an IPv6 address with a zone fits).
	maxIndexIP = 64
	// defaultIndexLife scores a session whose key has no TTL and whose cookie has no expiry
	// (connect-redis with disableTTL): the entry then lasts a day past its last write.
	defaultIndexLife = 24 * time.Hour
	// PublicIDLen is the length of the id a session is listed under.
	PublicIDLen = 16
)

// ErrUnknownID means no indexed session has the given public id (it never existed, was
// revoked, or expired).
var ErrUnknownID = errors.New("sessions: no indexed session with that id")

// IndexRedis is the part of the Redis client the index uses; *redisconn.Client fits on every
// topology. Eval must run EVALSHA and fall back to EVAL; Do runs one command and returns
// redisconn.ErrNil for a nil reply.
type IndexRedis interface {
	Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error)
	Do(ctx context.Context, name string, keys []string, args ...string) (any, error)
}

var _ IndexRedis = (*redisconn.Client)(nil)

// IndexOptions configures an Index.
type IndexOptions struct {
	// Prefix starts the index keys, DefaultIndexPrefix when empty. It may not hold "{" or
	// "}", which would move the keys' Cluster slot.
	Prefix string
	// SessionPrefix is connect-redis's prefix (Options.Prefix), DefaultPrefix when empty:
	// revocation deletes SessionPrefix + sid.
	SessionPrefix string
	// MaxPerUser caps the sessions kept per subject, DefaultIndexMaxPerUser when 0; past it
	// the soonest-expiring are dropped from the index (not from Redis).
	MaxPerUser int
	// Subject is the dotted path of the subject in the session JSON (Options.Subject). When
	// set, List and the revocations read each session and pass over one that holds another
	// subject there now (an app that gave a session id to another user without regenerating
	// it): that entry leaves the index, and the session is not deleted. A session without a
	// subject at the path still counts. When empty, they only check that the session exists.
	Subject string
}

// Index is the per-subject index of sessions that "sign out everywhere" works from. Its
// layout is public, so that an app may keep it itself (docs/authz.md, "Sign out
// everywhere"):
//
//   - Prefix + "{" + EscapeSubject(subject) + "}": a sorted set of session ids scored by the
//     session's expiry in Unix milliseconds;
//   - the same key + ":meta": a hash from session id to a JSON object {"first_seen",
//     "last_seen" (Unix ms), "ip", "ua"};
//   - Prefix + "id:" + PublicID(sid): the subject, so that a session can be revoked by its
//     public id alone. It is optional; without it a revocation by id needs the subject.
//
// The first two share their hash tag, so one script keeps them on a Cluster. Every write
// prunes entries whose score has passed, caps the set at MaxPerUser and sets both keys to
// expire with the latest session, so that the index of a user who left vanishes.
//
// An Index is safe for concurrent use.
type Index struct {
	rdb        IndexRedis
	prefix     string
	sessPrefix string
	max        int
	subject    []string // nil: sessions are not read
}

// NewIndex returns an Index over rdb.
func NewIndex(rdb IndexRedis, opts IndexOptions) (*Index, error) {
	ix := &Index{rdb: rdb, prefix: opts.Prefix, sessPrefix: opts.SessionPrefix, max: opts.MaxPerUser}
	if ix.prefix == "" {
		ix.prefix = DefaultIndexPrefix
	}
	if ix.sessPrefix == "" {
		ix.sessPrefix = DefaultPrefix
	}
	if ix.max == 0 {
		ix.max = DefaultIndexMaxPerUser
	}
	var errs []error
	if rdb == nil {
		errs = append(errs, errors.New("sessions: index: nil redis client"))
	}
	if strings.ContainsAny(ix.prefix, "{}") {
		errs = append(errs, fmt.Errorf("sessions: index: prefix %q holds a brace, which would move its Cluster slot", ix.prefix))
	}
	if opts.Subject != "" {
		if ix.subject = splitPath(opts.Subject); ix.subject == nil {
			errs = append(errs, fmt.Errorf("sessions: index: subject path %q has an empty key", opts.Subject))
		}
	}
	if ix.max < 1 || ix.max > MaxIndexPerUser {
		errs = append(errs, fmt.Errorf("sessions: index: max per user %d is not from 1 to %d", ix.max, MaxIndexPerUser))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ix, nil
}

// PublicID is the id a session is listed and revoked by: the first 16 hex digits of the
// SHA-256 of its sid. It names the session without being able to stand in for it.
func PublicID(sid string) string {
	sum := sha256.Sum256([]byte(sid))
	return hex.EncodeToString(sum[:PublicIDLen/2])
}

// EscapeSubject makes a subject safe inside a hash tag: "%" becomes "%25", "{" "%7B" and
// "}" "%7D", so that a subject can neither end the tag early nor be mistaken for another.
func EscapeSubject(subject string) string {
	if !strings.ContainsAny(subject, "%{}") {
		return subject
	}
	var b strings.Builder
	for i := 0; i < len(subject); i++ {
		switch c := subject[i]; c {
		case '%':
			b.WriteString("%25")
		case '{':
			b.WriteString("%7B")
		case '}':
			b.WriteString("%7D")
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Key returns the sorted set of subject's sessions.
func (ix *Index) Key(subject string) string { return ix.prefix + "{" + EscapeSubject(subject) + "}" }

// MetaKey returns the hash of subject's session details.
func (ix *Index) MetaKey(subject string) string { return ix.Key(subject) + ":meta" }

// IDKey returns the reverse entry of a public id.
func (ix *Index) IDKey(id string) string { return ix.prefix + "id:" + id }

// Visit is one use of a session, as Record writes it.
type Visit struct {
	// SID is the session id: it names the entry and is never listed.
	SID     string
	Subject string
	// IP and UserAgent describe the client; they are cleaned and bounded before they are
	// stored.
	IP, UserAgent string
	// CookieExpires is the session's cookie.expires, zero when it has none.
	CookieExpires time.Time
}

// Record adds v's session to its subject's index, or refreshes its last_seen, client and
// expiry. The expiry is the later of the cookie's expires and the session key's TTL (a touch
// extends the key past the stored expires); a session whose key is already gone is not
// recorded. A Visit without a subject or sid is ignored. Errors never name the sid.
func (ix *Index) Record(ctx context.Context, v Visit) error {
	if v.SID == "" || v.Subject == "" {
		return nil
	}
	pttl, err := ix.rdb.Do(ctx, "PTTL", []string{ix.sessPrefix + v.SID})
	if err != nil {
		return fmt.Errorf("sessions: index: session ttl: %w", err)
	}
	ms, ok := pttl.(int64)
	if !ok {
		return fmt.Errorf("sessions: index: PTTL replied %T", pttl)
	}
	if ms == -2 {
		return nil // logged out or expired since it was resolved
	}
	var cexp int64
	if !v.CookieExpires.IsZero() {
		cexp = max(v.CookieExpires.UnixMilli(), 0)
	}
	keys := []string{ix.Key(v.Subject), ix.MetaKey(v.Subject)}
	res, err := ix.rdb.Eval(ctx, recordSHA, recordScript, keys, v.SID, ms, cexp,
		cleanText(v.IP, maxIndexIP), cleanText(v.UserAgent, MaxUserAgent), ix.max, defaultIndexLife.Milliseconds())
	if err != nil {
		return fmt.Errorf("sessions: index: record: %w", err)
	}
	life, ok := res.(int64)
	if !ok {
		return fmt.Errorf("sessions: index: record script replied %T", res)
	}
	// The reverse entry lives in its own slot, so it is a call of its own; it expires with
	// the session.
	life = max(life, 1000)
	if _, err := ix.rdb.Do(ctx, "SET", []string{ix.IDKey(PublicID(v.SID))}, v.Subject, "PX", strconv.FormatInt(life, 10)); err != nil {
		return fmt.Errorf("sessions: index: id entry: %w", err)
	}
	return nil
}

// cleanText makes s fit to list: valid UTF-8, control characters as spaces, at most n bytes
// (cut at a character boundary).
func cleanText(s string, n int) string {
	if len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, s)
}
