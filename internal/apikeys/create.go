package apikeys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
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
	ok, err := s.rdb.SetNX(ctx, s.idKey(rec.ID), h, 0).Result()
	if err != nil || !ok {
		return false, err
	}
	if err := s.rdb.SAdd(ctx, s.indexKey(), rec.ID).Err(); err != nil {
		return false, err
	}
	if err := s.rdb.HSet(ctx, s.recordKey(h), rec.fields()...).Err(); err != nil {
		return false, err
	}
	return true, nil
}

// writeMulti writes the three keys in one MULTI, which needs them in one slot. A MULTI cannot
// branch on the SET NX, so when the id turns out to be taken the record just written (for a
// key nobody has seen) is deleted again; the SADD changed nothing, the id being in the index
// already. It reports false in that case.
func (s *Store) writeMulti(ctx context.Context, h string, rec Record) (bool, error) {
	var claimed *redis.BoolCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		claimed = p.SetNX(ctx, s.idKey(rec.ID), h, 0)
		p.SAdd(ctx, s.indexKey(), rec.ID)
		p.HSet(ctx, s.recordKey(h), rec.fields()...)
		return nil
	})
	if err != nil {
		return false, err
	}
	if claimed.Val() {
		return true, nil
	}
	if err := s.rdb.Del(ctx, s.recordKey(h)).Err(); err != nil {
		return false, fmt.Errorf("remove the record of an id collision: %w", err)
	}
	return false, nil
}

// ceilSecond rounds t up to a whole second, so that a key lives at least its TTL.
func ceilSecond(t time.Time) time.Time {
	f := t.Truncate(time.Second)
	if f.Before(t) {
		f = f.Add(time.Second)
	}
	return f
}
