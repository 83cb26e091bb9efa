package sessions

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
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

// recordScript adds or refreshes one session. KEYS: the sorted set, the meta hash. ARGV: sid,
// the session key's PTTL (ms; -1 when it has none), cookie.expires (Unix ms, 0 when none), ip,
// user agent, max per user, the life of a session with neither (ms). The score is the later of
// now + PTTL and cookie.expires. It keeps first_seen from an earlier entry, prunes what has
// expired, drops the soonest-expiring past the cap, lets both keys expire with the latest
// session, and returns the session's remaining life in ms. Redis's clock is the one that counts.
const recordScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sid, pttl, cexp, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local exp
if pttl >= 0 then
  exp = now + pttl
elseif cexp > now then
  exp = cexp
else
  exp = now + tonumber(ARGV[7])
end
if cexp > exp then
  exp = cexp
end
local function drop(list)
  for _, m in ipairs(list) do
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[2], m)
  end
end
drop(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now))
local first = now
local old = redis.call('HGET', KEYS[2], sid)
if old then
  local ok, m = pcall(cjson.decode, old)
  if ok and type(m) == 'table' and tonumber(m.first_seen) then
    first = tonumber(m.first_seen)
  end
end
redis.call('ZADD', KEYS[1], exp, sid)
redis.call('HSET', KEYS[2], sid, cjson.encode({first_seen = first, last_seen = now, ip = ARGV[4], ua = ARGV[5]}))
local n = redis.call('ZCARD', KEYS[1])
if n > max then
  drop(redis.call('ZRANGE', KEYS[1], 0, n - max - 1))
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  local at = math.floor(tonumber(last[2]))
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[2], at)
end
return exp - now
`

// readScript prunes what has expired and returns the rest as flat triples of sid, score and
// meta JSON (false when a session has none). KEYS: the sorted set, the meta hash.
const readScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #z, 2 do
  out[#out + 1] = z[i]
  out[#out + 1] = z[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], z[i])
end
return out
`

// removeScript removes the sids in ARGV from the index. KEYS: the sorted set, the meta hash.
const removeScript = `
local n = 0
for _, m in ipairs(ARGV) do
  n = n + redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
return n
`

// The scripts' SHA-1s, which EVALSHA names them by.
var (
	recordSHA = scriptSHA(recordScript)
	readSHA   = scriptSHA(readScript)
	removeSHA = scriptSHA(removeScript)
)

func scriptSHA(src string) string {
	sum := sha1.Sum([]byte(src))
	return hex.EncodeToString(sum[:])
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

// Entry is one indexed session as it is listed: never its sid.
type Entry struct {
	// ID is PublicID(sid).
	ID string
	// FirstSeen and LastSeen are when a sidecar first and last wrote the entry (zero when the
	// entry has no details).
	FirstSeen, LastSeen time.Time
	// IP and UserAgent are the client's at LastSeen.
	IP, UserAgent string
	// Expires is when the session expires, as far as the index knows.
	Expires time.Time

	sid string
}

// entryMeta is the JSON of a meta hash field.
type entryMeta struct {
	FirstSeen json.Number `json:"first_seen"`
	LastSeen  json.Number `json:"last_seen"`
	IP        string      `json:"ip"`
	UA        string      `json:"ua"`
}

// read returns subject's indexed sessions, pruning those whose score has passed.
func (ix *Index) read(ctx context.Context, subject string) ([]Entry, error) {
	res, err := ix.rdb.Eval(ctx, readSHA, readScript, []string{ix.Key(subject), ix.MetaKey(subject)})
	if err != nil {
		return nil, fmt.Errorf("sessions: index: read: %w", err)
	}
	flat, ok := res.([]any)
	if !ok || len(flat)%3 != 0 {
		return nil, fmt.Errorf("sessions: index: read script replied %T of %d", res, len(flat))
	}
	out := make([]Entry, 0, len(flat)/3)
	for i := 0; i < len(flat); i += 3 {
		sid, ok1 := flat[i].(string)
		score, ok2 := flat[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("sessions: index: read script replied %T, %T", flat[i], flat[i+1])
		}
		e := Entry{ID: PublicID(sid), sid: sid}
		if f, err := strconv.ParseFloat(score, 64); err == nil {
			e.Expires = time.UnixMilli(int64(f))
		}
		// A missing or unreadable meta (an app that keeps only the sorted set) leaves the
		// details empty; the session is listed all the same.
		if meta, ok := flat[i+2].(string); ok {
			var m entryMeta
			if json.Unmarshal([]byte(meta), &m) == nil {
				e.FirstSeen, e.LastSeen = unixMilli(m.FirstSeen), unixMilli(m.LastSeen)
				e.IP, e.UserAgent = cleanText(m.IP, maxIndexIP), cleanText(m.UA, MaxUserAgent)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

func unixMilli(n json.Number) time.Time {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(f))
}

// List returns subject's sessions whose key still exists (and, with IndexOptions.Subject, still
// belongs to subject), most recently seen first. Other entries (a logout the app did itself,
// say) are removed from the index on the way. It costs one call for the index and one per
// session, since each session key sits in a slot of its own.
func (ix *Index) List(ctx context.Context, subject string) ([]Entry, error) {
	all, err := ix.read(ctx, subject)
	if err != nil {
		return nil, err
	}
	live := all[:0]
	var gone []string
	for _, e := range all {
		ok, err := ix.owned(ctx, subject, e.sid)
		if err != nil {
			return nil, err
		}
		if !ok {
			gone = append(gone, e.sid)
			continue
		}
		live = append(live, e)
	}
	if len(gone) > 0 {
		if err := ix.remove(ctx, subject, gone); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(live, func(i, j int) bool { return live[i].LastSeen.After(live[j].LastSeen) })
	return live, nil
}

// owned reports whether sid's session exists and, with IndexOptions.Subject, is not provably
// another subject's: a session whose value at the path is a different subject is not, while
// one without a subject there (a wrong path in the config, or a session the app emptied) or
// with a corrupt value still counts as subject's, so that a configuration mistake cannot make
// a revocation quietly skip sessions. A key of the wrong type is no session.
func (ix *Index) owned(ctx context.Context, subject, sid string) (bool, error) {
	key := ix.sessPrefix + sid
	if ix.subject == nil {
		n, err := ix.rdb.Do(ctx, "EXISTS", []string{key})
		if err != nil {
			return false, fmt.Errorf("sessions: index: session exists: %w", err)
		}
		return n == int64(1), nil
	}
	v, err := ix.rdb.Do(ctx, "GET", []string{key})
	switch {
	case errors.Is(err, redisconn.ErrNil), redisconn.HasErrorPrefix(err, "WRONGTYPE"):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sessions: index: read session: %w", err)
	}
	data, ok := v.(string)
	if !ok || len(data) > MaxSessionBytes {
		return true, nil
	}
	obj, ok := parseSession(data)
	if !ok {
		return true, nil
	}
	found, ok := lookup(obj, ix.subject)
	if !ok {
		return true, nil
	}
	t, ok := text(found)
	return !ok || t == subject, nil
}

// Revoke ends every indexed session of subject but the one whose public id is except (""
// for none; an except that names no indexed session is ErrUnknownID, and nothing is revoked,
// so that a mistyped id cannot sign the caller out too). It deletes each session's
// connect-redis key, so that the app sees the logout too and every sidecar's cache drops it
// (Redis invalidates tracked keys on DEL), then removes the entries; an entry whose session
// is gone or, with IndexOptions.Subject, is another user's now is removed without deleting
// anything. It returns how many sessions it ended. The keys are deleted one call each, since
// they sit in other slots than the index; a failure part way leaves the rest indexed, so that
// running it again finishes the job.
func (ix *Index) Revoke(ctx context.Context, subject, except string) (int, error) {
	all, err := ix.read(ctx, subject)
	if err != nil {
		return 0, err
	}
	if except != "" && !slices.ContainsFunc(all, func(e Entry) bool { return e.ID == except }) {
		return 0, ErrUnknownID
	}
	var done []string // out of the index: ended, or no longer the subject's
	n := 0
	for _, e := range all {
		if except != "" && e.ID == except {
			continue
		}
		ok, err := ix.owned(ctx, subject, e.sid)
		if err == nil && ok {
			if err = ix.end(ctx, e); err == nil {
				n++
			}
		}
		if err != nil {
			if len(done) > 0 {
				_ = ix.remove(ctx, subject, done)
			}
			return n, err
		}
		done = append(done, e.sid)
	}
	if len(done) == 0 {
		return 0, nil
	}
	return n, ix.remove(ctx, subject, done)
}

// RevokeID ends the one session whose public id is id. With subject "", the subject comes
// from the id's reverse entry. It returns the subject, or ErrUnknownID.
func (ix *Index) RevokeID(ctx context.Context, id, subject string) (string, error) {
	if !ValidPublicID(id) {
		return "", ErrUnknownID
	}
	if subject == "" {
		v, err := ix.rdb.Do(ctx, "GET", []string{ix.IDKey(id)})
		switch {
		case errors.Is(err, redisconn.ErrNil):
			return "", ErrUnknownID
		case err != nil:
			return "", fmt.Errorf("sessions: index: id entry: %w", err)
		}
		s, ok := v.(string)
		if !ok || s == "" {
			return "", ErrUnknownID
		}
		subject = s
	}
	all, err := ix.read(ctx, subject)
	if err != nil {
		return "", err
	}
	for _, e := range all {
		if e.ID != id {
			continue
		}
		ok, err := ix.owned(ctx, subject, e.sid)
		if err != nil {
			return "", err
		}
		if !ok {
			// Gone, or another user's now: not this subject's to end.
			if err := ix.remove(ctx, subject, []string{e.sid}); err != nil {
				return "", err
			}
			return "", ErrUnknownID
		}
		if err := ix.end(ctx, e); err != nil {
			return "", err
		}
		return subject, ix.remove(ctx, subject, []string{e.sid})
	}
	return "", ErrUnknownID
}

// end deletes a session's key and its reverse entry.
func (ix *Index) end(ctx context.Context, e Entry) error {
	if _, err := ix.rdb.Do(ctx, "DEL", []string{ix.sessPrefix + e.sid}); err != nil {
		return fmt.Errorf("sessions: index: delete session: %w", err)
	}
	if _, err := ix.rdb.Do(ctx, "DEL", []string{ix.IDKey(e.ID)}); err != nil {
		return fmt.Errorf("sessions: index: delete id entry: %w", err)
	}
	return nil
}

// remove takes sids out of subject's index.
func (ix *Index) remove(ctx context.Context, subject string, sids []string) error {
	args := make([]any, len(sids))
	for i, s := range sids {
		args[i] = s
	}
	if _, err := ix.rdb.Eval(ctx, removeSHA, removeScript, []string{ix.Key(subject), ix.MetaKey(subject)}, args...); err != nil {
		return fmt.Errorf("sessions: index: remove: %w", err)
	}
	return nil
}

// ValidPublicID reports whether id has the form of a listed session id (16 lower-case hex
// digits), so that callers can refuse anything else (a pasted cookie, say) before any I/O.
func ValidPublicID(id string) bool {
	if len(id) != PublicIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// entryJSON is how an Entry is written in JSON, by the CLI and the admin API alike: times in
// RFC 3339 UTC, null when unknown.
type entryJSON struct {
	ID        string  `json:"id"`
	FirstSeen *string `json:"first_seen"`
	LastSeen  *string `json:"last_seen"`
	IP        string  `json:"ip"`
	UserAgent string  `json:"user_agent"`
	Expires   *string `json:"expires"`
}

// MarshalJSON writes the entry without its sid: {"id", "first_seen", "last_seen", "ip",
// "user_agent", "expires"}.
func (e Entry) MarshalJSON() ([]byte, error) {
	return json.Marshal(entryJSON{
		ID: e.ID, FirstSeen: jsonTime(e.FirstSeen), LastSeen: jsonTime(e.LastSeen),
		IP: e.IP, UserAgent: e.UserAgent, Expires: jsonTime(e.Expires),
	})
}

func jsonTime(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339)
	return &s
}
