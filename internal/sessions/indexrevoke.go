package sessions

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/extauthz/extauthz/internal/redisconn"
)

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
