package apikeys

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
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

// Redis is the part of the Redis client the Store calls. *redisconn.Client fits on every
// topology (single node, Sentinel, Cluster); it is an interface so that tests can count calls.
//
// HGetAll returns an empty map for a missing key; HGetAllCached is the same read served from
// the client-side cache when it can be (hit true), for at most ttl. Do, Tx and Eval take their
// keys apart from their arguments so that the client can route them on Cluster, and convert
// replies as go-redis did (nil -> redisconn.ErrNil, integers -> int64, strings -> string).
type Redis interface {
	HGetAll(ctx context.Context, key string) (map[string]string, error)
	HGetAllCached(ctx context.Context, key string, ttl time.Duration) (map[string]string, bool, error)
	Do(ctx context.Context, name string, keys []string, args ...string) (any, error)
	Tx(ctx context.Context, cmds []redisconn.Cmd) ([]any, error)
	Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error)
}

var _ Redis = (*redisconn.Client)(nil)

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
	// Cache, when set, reads records through the Redis client's cache; see CacheOptions.
	Cache *CacheOptions
}

// Store issues and resolves keys. It is safe for concurrent use.
type Store struct {
	rdb         Redis
	prefix      string
	tokenPrefix string
	// sharedSlot is true when prefix holds a hash tag, so that every key is in one Cluster
	// slot and Create can write them in one MULTI.
	sharedSlot bool
	// rand and now are crypto/rand and the wall clock; tests in this package replace them.
	rand io.Reader
	now  func() time.Time
	// cache is Options.Cache, validated; nil when lookups bypass the client-side cache.
	cache *CacheOptions
}

// New returns a Store over rdb. It makes no Redis call. Options.Cache, when set, needs a
// positive TTL.
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
	if err := errors.Join(checkPrefix(opts.Prefix), checkTokenPrefix(opts.TokenPrefix), checkCache(opts.Cache)); err != nil {
		return nil, err
	}
	s := &Store{
		rdb:         rdb,
		prefix:      opts.Prefix,
		tokenPrefix: opts.TokenPrefix,
		sharedSlot:  strings.Contains(opts.Prefix, "{"),
		rand:        rand.Reader,
		now:         time.Now,
	}
	if opts.Cache != nil {
		c := *opts.Cache
		s.cache = &c
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

// Lookup resolves key with one HGETALL, through the client-side cache when Options.Cache is
// set. It returns ErrMalformed without any Redis call for a key Check rejects, ErrNotFound for
// a key never issued, and ErrRevoked or ErrExpired together with the record. Any other error
// (Redis down, a deadline, a record Create did not write) matches none of these four, so that
// the caller can apply its failure policy. ctx bounds the call; Lookup sets no deadline of its
// own. A key's expiry is judged on every call, cached record or not.
func (s *Store) Lookup(ctx context.Context, key string) (Record, error) {
	if err := s.Check(key); err != nil {
		return Record{}, err
	}
	m, err := s.readRecord(ctx, s.recordKey(Hash(key)))
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: lookup: %w", err)
	}
	if len(m) == 0 {
		return Record{}, ErrNotFound
	}
	rec, err := s.parse(m)
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: lookup: %w", err)
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

// listConcurrency bounds the reads List has in flight at once. The client pipelines concurrent
// calls on one connection per node, so this many round trips cost about one, and the bound
// keeps a large index from taking the client's whole in-flight budget.
const listConcurrency = 64

// List returns every record in the index, sorted by Created and then ID: one SMEMBERS, then a
// GET per id and an HGETALL per record, sent concurrently so that the client pipelines them.
// They are separate commands, not one MGET or script, because on Cluster without a {hash tag}
// the keys sit in different slots. Ids whose entries are incomplete, left by a Create that
// failed halfway, are skipped: their key was never handed out.
func (s *Store) List(ctx context.Context) ([]Record, error) {
	reply, err := s.rdb.Do(ctx, "SMEMBERS", []string{s.indexKey()})
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	ids, err := stringList(reply)
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: SMEMBERS: %w", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}

	hashes := make([]string, len(ids))
	found := make([]bool, len(ids))
	err = forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		h, ok, err := s.getString(ctx, s.idKey(ids[i]))
		switch {
		case err != nil:
			return err
		case !ok:
			return nil
		case !isHash(h):
			return fmt.Errorf("%w: id %s maps to %q", errBadRecord, ids[i], h)
		}
		hashes[i], found[i] = h, true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}

	recs := make([]Record, len(ids))
	have := make([]bool, len(ids))
	err = forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		if !found[i] {
			return nil
		}
		m, err := s.rdb.HGetAll(ctx, s.recordKey(hashes[i]))
		if err != nil || len(m) == 0 {
			return err
		}
		rec, err := s.parse(m)
		if err != nil {
			return err
		}
		// A record must name the id that points at it, or Revoke by that id would disable
		// some other key.
		if rec.ID != ids[i] {
			return fmt.Errorf("%w: id %s points at the record of %s", errBadRecord, ids[i], rec.ID)
		}
		recs[i], have[i] = rec, true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("apikeys: list: %w", err)
	}
	var out []Record
	for i, ok := range have {
		if ok {
			out = append(out, recs[i])
		}
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// forEach calls fn for 0..n-1, at most listConcurrency at a time, and returns the error of the
// lowest index that failed, so that the same data always gives the same error. Calls still
// start after a failure; each is bounded by ctx, and a dead Redis fails them fast.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, listConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = fn(ctx, i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// getString is GET: the value and true, or false for a missing key.
func (s *Store) getString(ctx context.Context, key string) (string, bool, error) {
	reply, err := s.rdb.Do(ctx, "GET", []string{key})
	switch {
	case errors.Is(err, redisconn.ErrNil), err == nil && reply == nil:
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	v, ok := reply.(string)
	if !ok {
		return "", false, fmt.Errorf("GET: unexpected reply %T", reply)
	}
	return v, true, nil
}

// stringList converts an array reply of strings (SMEMBERS).
func stringList(reply any) ([]string, error) {
	if reply == nil {
		return nil, nil
	}
	arr, ok := reply.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected reply %T", reply)
	}
	out := make([]string, 0, len(arr))
	for _, e := range arr {
		v, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected element %T", e)
		}
		out = append(out, v)
	}
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

// revokeSHA is revokeScript's SHA-1, which EVALSHA names it by.
var revokeSHA = func() string {
	sum := sha1.Sum([]byte(revokeScript))
	return hex.EncodeToString(sum[:])
}()

// Revoke disables the key with the given id: Lookup answers ErrRevoked for it from then on,
// through the cache too: at once through the same client, and in every other process as soon
// as Redis's invalidation of the cached record reaches it (a fraction of a millisecond on a
// LAN). Revoking a revoked key is not an error; an unknown id is ErrNotFound. The record
// stays, so that List shows the key as revoked. It reads the id entry, then runs the script
// on the record alone: the two keys may sit in different Cluster slots.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrNotFound
	}
	h, ok, err := s.getString(ctx, s.idKey(id))
	if err != nil {
		return fmt.Errorf("apikeys: revoke %s: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	if !isHash(h) {
		return fmt.Errorf("apikeys: revoke %s: %w: id maps to %q", id, errBadRecord, h)
	}
	reply, err := s.rdb.Eval(ctx, revokeSHA, revokeScript, []string{s.recordKey(h)})
	if err != nil {
		return fmt.Errorf("apikeys: revoke %s: %w", id, err)
	}
	n, ok := reply.(int64)
	if !ok {
		return fmt.Errorf("apikeys: revoke %s: unexpected script reply %T", id, reply)
	}
	if n == 0 {
		return fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	// Redis pushes the invalidation of the record to this connection right after the
	// script's reply, so a Lookup sent the moment Revoke returned could still find the
	// record in this process's cache. One more command on the record's connection cannot
	// be answered before the push has been read and applied; its own result changes nothing
	// (the revoke has happened), so its failure is not Revoke's.
	_, _ = s.rdb.Do(ctx, "EXISTS", []string{s.recordKey(h)})
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
