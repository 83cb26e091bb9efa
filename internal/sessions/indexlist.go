package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

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
