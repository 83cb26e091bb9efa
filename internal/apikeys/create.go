package apikeys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// CreateParams describes a key to issue.
type CreateParams struct {
	// Name is a free-text label; it may be empty.
	Name string
	// Owner is who the key acts for; it is required.
	Owner string
	// Tier selects per-tier limits; empty means the default limits.
	Tier string
	// Scopes are stored comma-joined, so none may be empty or hold a comma (or whitespace,
	// which would only ever be a typo).
	Scopes []string
	// TTL is how long the key works; 0 means it never expires. The expiry is rounded up to
	// the next whole second.
	TTL time.Duration
	// Credits, when set, gives the key a balance of credits that every request it makes
	// spends; nil means a key without credits, as before credits existed.
	Credits *CreditParams
}

func (p CreateParams) validate() error {
	var errs []error
	if strings.TrimSpace(p.Owner) == "" {
		errs = append(errs, errors.New("owner is required"))
	}
	for _, sc := range p.Scopes {
		if sc == "" || strings.ContainsAny(sc, ", \t\r\n") {
			errs = append(errs, fmt.Errorf("scope %q must be non-empty, without commas or whitespace", sc))
		}
	}
	if p.TTL < 0 {
		errs = append(errs, fmt.Errorf("ttl %s is negative", p.TTL))
	}
	if err := p.Credits.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("apikeys: create: %w", err)
	}
	return nil
}

// Create issues a key: it draws the key and an id, stores the record under the key's hash and
// returns the key, which exists nowhere else from then on. ctx bounds the calls.
//
// When the prefix holds a hash tag, the record, the id entry and the index entry are written
// in one MULTI. Otherwise they sit in different Cluster slots and are written in this order:
// the id entry (SET NX, which also refuses an id already taken), the index entry, and the
// record last. The key starts working only with the record, so every key that works can be
// listed and revoked; a Create cut short leaves at most an id entry and an index entry that
// point at nothing, which List and Revoke treat as absent, and a key the caller never received.
func (s *Store) Create(ctx context.Context, p CreateParams) (string, Record, error) {
	if err := p.validate(); err != nil {
		return "", Record{}, err
	}
	key, err := s.Generate()
	if err != nil {
		return "", Record{}, err
	}
	h := Hash(key)
	now := s.now().UTC()
	rec := Record{
		Name:    p.Name,
		Owner:   p.Owner,
		Tier:    p.Tier,
		Created: now.Truncate(time.Second),
	}
	if len(p.Scopes) > 0 {
		rec.Scopes = append([]string(nil), p.Scopes...)
	}
	if p.TTL > 0 {
		rec.Expires = ceilSecond(now.Add(p.TTL))
	}
	if p.Credits != nil {
		rec.Credits = p.Credits.record()
	}
	write := s.writeInOrder
	if s.sharedSlot {
		write = s.writeMulti
	}
	for range maxIDAttempts {
		id, err := randomBase62(s.rand, idBodyLen)
		if err != nil {
			return "", Record{}, err
		}
		rec.ID = idPrefix + id
		if rec.Credits.Enabled {
			rec.Credits.Key = s.creditsKey(rec.ID)
		}
		ok, err := write(ctx, h, rec)
		if err != nil {
			return "", Record{}, fmt.Errorf("apikeys: create: %w", err)
		}
		if ok {
			return key, rec, nil
		}
	}
	return "", Record{}, fmt.Errorf("apikeys: create: %d random ids in a row were taken: is the random source broken?", maxIDAttempts)
}

// writeInOrder writes the three keys one call at a time, in the order Create documents. It
// reports false, having written nothing, when the id is taken.
func (s *Store) writeInOrder(ctx context.Context, h string, rec Record) (bool, error) {
	reply, err := s.rdb.Do(ctx, "SET", []string{s.idKey(rec.ID)}, h, "NX")
	ok, err := setNXResult(reply, err)
	if err != nil || !ok {
		return false, err
	}
	if _, err := s.rdb.Do(ctx, "SADD", []string{s.indexKey()}, rec.ID); err != nil {
		return false, err
	}
	// The balance before the record, so that the key never works without one. The id is
	// this Create's now, so the balance is its own to set.
	if c := rec.Credits; c.Enabled {
		if _, err := ratelimit.SetCredits(ctx, s.rdb, c.Key, c.Initial, c.Limit()); err != nil {
			return false, err
		}
	}
	if _, err := s.rdb.Do(ctx, "HSET", []string{s.recordKey(h)}, rec.fields()...); err != nil {
		return false, err
	}
	return true, nil
}

// writeMulti writes the three keys in one MULTI, which needs them in one slot. A MULTI cannot
// branch on the SET NX, so when the id turns out to be taken the record just written (for a
// key nobody has seen) is deleted again; the SADD changed nothing, the id being in the index
// already. It reports false in that case.
func (s *Store) writeMulti(ctx context.Context, h string, rec Record) (bool, error) {
	// The balance goes first, outside the MULTI (a script's EVAL cannot be queued as a
	// plain command there), and only where none exists: until the MULTI has claimed the id,
	// a balance under it may belong to another key. One this call made for an id that
	// turns out to be taken is deleted with the record.
	made := false
	if c := rec.Credits; c.Enabled {
		b, err := ratelimit.InitCredits(ctx, s.rdb, c.Key, c.Initial, c.Limit())
		if err != nil {
			return false, err
		}
		made = b.Written
	}
	replies, err := s.rdb.Tx(ctx, []redisconn.Cmd{
		{Name: "SET", Keys: []string{s.idKey(rec.ID)}, Args: []string{h, "NX"}},
		{Name: "SADD", Keys: []string{s.indexKey()}, Args: []string{rec.ID}},
		{Name: "HSET", Keys: []string{s.recordKey(h)}, Args: rec.fields()},
	})
	if err != nil {
		return false, err
	}
	if len(replies) != 3 {
		return false, fmt.Errorf("MULTI: %d replies for 3 commands", len(replies))
	}
	for _, r := range replies[1:] {
		if err, ok := r.(error); ok {
			return false, err
		}
	}
	claimed, err := setNXResult(replies[0], nil)
	if err != nil {
		return false, err
	}
	if claimed {
		return true, nil
	}
	if _, err := s.rdb.Do(ctx, "DEL", []string{s.recordKey(h)}); err != nil {
		return false, fmt.Errorf("remove the record of an id collision: %w", err)
	}
	if made {
		if _, err := s.rdb.Do(ctx, "DEL", []string{rec.Credits.Key}); err != nil {
			return false, fmt.Errorf("remove the balance of an id collision: %w", err)
		}
	}
	return false, nil
}

// setNXResult reads the reply of SET ... NX: OK when the key was set, a nil reply (ErrNil from
// Do) when it existed.
func setNXResult(reply any, err error) (bool, error) {
	switch {
	case errors.Is(err, redisconn.ErrNil):
		return false, nil
	case err != nil:
		return false, err
	}
	switch r := reply.(type) {
	case nil:
		return false, nil
	case string:
		if r == "OK" {
			return true, nil
		}
	case error:
		return false, r
	}
	return false, fmt.Errorf("SET NX: unexpected reply %v", reply)
}

// ceilSecond rounds t up to a whole second, so that a key lives at least its TTL.
func ceilSecond(t time.Time) time.Time {
	f := t.Truncate(time.Second)
	if f.Before(t) {
		f = f.Add(time.Second)
	}
	return f
}
