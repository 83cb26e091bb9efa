package apikeys

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/localcache"
)

// Defaults for the zero values of Options.
const (
	DefaultPrefix      = "apikey:"
	DefaultTokenPrefix = "eak_"

	// maxTokenPrefixLen keeps keys short enough for any header and any secret scanner rule.
	maxTokenPrefixLen = 16
	// maxIDAttempts bounds how often Create draws a new id after finding one taken. With ~71
	// bits per id a second attempt is already astronomically rare; a third means the random
	// source is broken, and saying so beats looping.
	maxIDAttempts = 3
)

// Lookup's and Revoke's answers about a key, as opposed to failures to get one: callers deny
// on these and apply their failure policy to anything else.
var (
	ErrMalformed = errors.New("malformed api key")
	ErrNotFound  = errors.New("api key not found")
	ErrRevoked   = errors.New("api key revoked")
	ErrExpired   = errors.New("api key expired")
)

// errBadRecord means Redis holds something under the package's keys that Create did not write.
// It is deliberately none of the sentinels above: the caller cannot tell whether the key is
// good, so its failure policy applies.
var errBadRecord = errors.New("apikeys: malformed record in redis")

// Redis is the part of go-redis the Store calls. It is declared here so that *redis.Client,
// *redis.ClusterClient, *redis.Ring and any redis.UniversalClient fit, and so that tests can
// count calls.
type Redis interface {
	Get(ctx context.Context, key string) *redis.StringCmd
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
	SMembers(ctx context.Context, key string) *redis.StringSliceCmd
	SetNX(ctx context.Context, key string, value interface{}, expiration time.Duration) *redis.BoolCmd
	SAdd(ctx context.Context, key string, members ...interface{}) *redis.IntCmd
	HSet(ctx context.Context, key string, values ...interface{}) *redis.IntCmd
	Del(ctx context.Context, keys ...string) *redis.IntCmd
	Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

var (
	_ Redis = (*redis.Client)(nil)
	_ Redis = (*redis.ClusterClient)(nil)
	_ Redis = (*redis.Ring)(nil)
	_ Redis = redis.UniversalClient(nil)
)

// Options says where records live and what keys look like. The zero value means the defaults.
type Options struct {
	// Prefix starts every Redis key; DefaultPrefix when empty. It may hold one non-empty
	// {hash tag}, which puts every key in one Cluster slot (see the package comment), and no
	// other brace.
	Prefix string
	// TokenPrefix starts every API key; DefaultTokenPrefix when empty. At most 16 characters
	// from A-Z, a-z, 0-9 and '_', so that a double click selects the whole key in a terminal.
	// Changing it invalidates every key already issued.
	TokenPrefix string
	// Cache, when set, keeps records in memory; see CacheOptions.
	Cache *CacheOptions
	// Lookups, when set, is the client Lookup reads records with (the sidecar passes its
	// pipelined decision client); nil means the Store's own client.
	Lookups HashReader
}

// HashReader is what Lookup needs from Redis: one HGETALL.
type HashReader interface {
	HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd
}

// Store issues and resolves keys. It is safe for concurrent use.
type Store struct {
	rdb         Redis
	lookups     HashReader // rdb unless Options.Lookups
	prefix      string
	tokenPrefix string
	// sharedSlot is true when prefix holds a hash tag, so that every key is in one Cluster
	// slot and Create can write them in one MULTI.
	sharedSlot bool
	// rand and now are crypto/rand and the wall clock; tests in this package replace them.
	rand io.Reader
	now  func() time.Time
	// cache is nil when Options.Cache is.
	cache *localcache.Cache[Record]
}

// New returns a Store over rdb. It makes no Redis call.
func New(rdb Redis, opts Options) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("apikeys: nil redis client")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.TokenPrefix == "" {
		opts.TokenPrefix = DefaultTokenPrefix
	}
	if err := errors.Join(checkPrefix(opts.Prefix), checkTokenPrefix(opts.TokenPrefix)); err != nil {
		return nil, err
	}
	s := &Store{
		rdb:         rdb,
		lookups:     rdb,
		prefix:      opts.Prefix,
		tokenPrefix: opts.TokenPrefix,
		sharedSlot:  strings.Contains(opts.Prefix, "{"),
		rand:        rand.Reader,
		now:         time.Now,
	}
	if opts.Cache != nil {
		s.cache = localcache.New[Record](*opts.Cache)
	}
	if opts.Lookups != nil {
		s.lookups = opts.Lookups
	}
	return s, nil
}

// checkPrefix allows either no braces or exactly one non-empty {tag}. Anything else would let
// Redis Cluster pick the slot from a part of the key nobody meant as a tag (or from none).
func checkPrefix(p string) error {
	opens, closes := strings.Count(p, "{"), strings.Count(p, "}")
	if opens == 0 && closes == 0 {
		return nil
	}
	i, j := strings.IndexByte(p, '{'), strings.IndexByte(p, '}')
	if opens != 1 || closes != 1 || j < i+2 {
		return fmt.Errorf("apikeys: prefix %q: braces must form one non-empty {hash tag}", p)
	}
	return nil
}

func checkTokenPrefix(p string) error {
	if len(p) > maxTokenPrefixLen {
		return fmt.Errorf("apikeys: token prefix %q is longer than %d characters", p, maxTokenPrefixLen)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !isBase62(c) && c != '_' {
			return fmt.Errorf("apikeys: token prefix %q: only A-Z, a-z, 0-9 and '_' are allowed", p)
		}
	}
	return nil
}

func (s *Store) recordKey(hash string) string { return s.prefix + hash }
func (s *Store) idKey(id string) string       { return s.prefix + "id:" + id }
func (s *Store) indexKey() string             { return s.prefix + "index" }

// Generate returns a new key in the Store's format. It stores nothing: use Create to issue one.
func (s *Store) Generate() (string, error) { return newKey(s.rand, s.tokenPrefix) }

// Check returns nil for a well-formed key (token prefix, length, alphabet, checksum), and
// otherwise an error wrapping ErrMalformed that names the reason but never the key. It does
// no I/O.
func (s *Store) Check(key string) error { return checkKey(key, s.tokenPrefix) }

// Valid reports whether Check accepts key.
func (s *Store) Valid(key string) bool { return s.Check(key) == nil }

// Lookup resolves key with one HGETALL. It returns ErrMalformed without any Redis call for a
// key Check rejects, ErrNotFound for a key never issued, and ErrRevoked or ErrExpired together
// with the record. Any other error (Redis down, a deadline, a record Create did not write)
// matches none of these four, so that the caller can apply its failure policy. ctx bounds the
// call; Lookup sets no deadline of its own.
func (s *Store) Lookup(ctx context.Context, key string) (Record, error) {
	if err := s.Check(key); err != nil {
		return Record{}, err
	}
	h := Hash(key)
	var ticket uint64
	if c := s.cache; c != nil {
		rec, res := c.Get(h)
		switch res {
		case localcache.Hit:
			return s.judge(rec)
		case localcache.NegativeHit:
			return Record{}, ErrNotFound
		}
		// Taken before the read, so that a revoke racing with it voids the Put below.
		ticket = c.Ticket(h)
	}
	m, err := s.lookups.HGetAll(ctx, s.recordKey(h)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: lookup: %w", err)
	}
	if len(m) == 0 {
		if s.cache != nil {
			s.cache.PutMissing(h, ticket)
		}
		return Record{}, ErrNotFound
	}
	rec, err := parseRecord(m)
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: lookup: %w", err)
	}
	if s.cache != nil {
		s.cache.Put(h, ticket, rec, 0)
	}
	return s.judge(rec)
}

// judge returns rec with ErrRevoked or ErrExpired when it is no longer good now.
func (s *Store) judge(rec Record) (Record, error) {
	switch rec.State(s.now()) {
	case StateRevoked:
		return rec, ErrRevoked
	case StateExpired:
		return rec, ErrExpired
	}
	return rec, nil
}

// List returns every record in the index, sorted by Created and then ID, in three round trips
// (SMEMBERS, then pipelined GETs, then pipelined HGETALLs). Ids whose entries are incomplete,
// left by a Create that failed halfway, are skipped: their key was never handed out.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	ids, err := s.rdb.SMembers(ctx, s.indexKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}

	gets := make([]*redis.StringCmd, len(ids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			gets[i] = p.Get(ctx, s.idKey(id))
		}
		return nil
	})
	// The pipeline reports its first failed command, which may be a harmless redis.Nil (an
	// incomplete id) in front of a real failure, so each command is checked as well.
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	var found, hashes []string
	for i, c := range gets {
		h, err := c.Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			return nil, fmt.Errorf("apikeys: list: %w", err)
		case !isHash(h):
			return nil, fmt.Errorf("apikeys: list: %w: id %s maps to %q", errBadRecord, ids[i], h)
		}
		found = append(found, ids[i])
		hashes = append(hashes, h)
	}
	if len(found) == 0 {
		return nil, nil
	}

	alls := make([]*redis.MapStringStringCmd, len(hashes))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range hashes {
			alls[i] = p.HGetAll(ctx, s.recordKey(h))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	out := make([]Record, 0, len(alls))
	for i, c := range alls {
		m := c.Val()
		if len(m) == 0 {
			continue
		}
		rec, err := parseRecord(m)
		if err != nil {
			return nil, fmt.Errorf("apikeys: list: %w", err)
		}
		// A record must name the id that points at it, or Revoke by that id would disable
		// some other key.
		if rec.ID != found[i] {
			return nil, fmt.Errorf("apikeys: list: %w: id %s points at the record of %s", errBadRecord, found[i], rec.ID)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// revokeScript sets disabled only on a record that exists. A plain HSET would create a stray
// hash holding nothing but "disabled" when the id belongs to a Create that never finished.
const revokeScript = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'disabled', '1')
return 1
`

// Revoke disables the key with the given id: Lookup answers ErrRevoked for it from then on.
// Revoking a revoked key is not an error; an unknown id is ErrNotFound. The record stays, so
// that List shows the key as revoked. The script is sent with EVAL every time: revoking is
// rare, and EVALSHA first would cost a second round trip whenever the cache is cold.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	h, err := s.rdb.Get(ctx, s.idKey(id)).Result()
	if errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("apikeys: revoke %s: %w", id, err)
	}
	if !isHash(h) {
		return fmt.Errorf("apikeys: revoke %s: %w: id maps to %q", id, errBadRecord, h)
	}
	n, err := s.rdb.Eval(ctx, revokeScript, []string{s.recordKey(h)}).Int64()
	if err != nil {
		return fmt.Errorf("apikeys: revoke %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	return nil
}

// isHash reports whether h looks like Hash's output, so that a corrupted id entry can never
// steer a write to some other key.
func isHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9') && !('a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
