package apikeys

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// ErrNoCredits means the key was created without credits, so there is no balance to read or
// change.
var ErrNoCredits = errors.New("api key has no credits")

// The record fields of a key with credits. A key without credits has none of them, so its
// record is exactly what it was before credits existed.
const (
	fieldCredits     = "credits"
	fieldRefill      = "refill"
	fieldRefillEvery = "refill_every"
)

// maxCredits bounds every credit amount: the scripts count in Lua's float64 numbers, exact to
// 2^53, and the limiter keeps its numbers at or below 2^51.
const maxCredits = 1 << 51

// Credits is a key's credit quota as its record holds it (Unkey's "remaining" and "refill").
// The live balance is not here: it changes on every request, so it lives in a key of its own
// (see the package comment) and this record, read through the client-side cache, stays
// unchanged.
type Credits struct {
	// Enabled is set for a key created with credits; the other fields are zero otherwise.
	Enabled bool
	// Initial is the balance the key was created with.
	Initial int64
	// Refill is what the balance is set to at every refill; 0 means no refill.
	Refill int64
	// Every is the refill period, "1d" (every UTC midnight) or "1mo" (the first of every
	// month, UTC); "" without refill.
	Every string
	// Key is the Redis key of the balance, set by Lookup and List. It names the key's id,
	// which is no secret.
	Key string
}

// Limit is the quota as the limiter spends it: the refill amount (or, without a refill, the
// initial credits) is the limit the RateLimit headers show.
func (c Credits) Limit() ratelimit.Limit {
	r, _ := ratelimit.ParseRefill(c.Every) // checked when the record was parsed
	n := c.Initial
	if r != ratelimit.RefillNone {
		n = c.Refill
	}
	return ratelimit.Limit{Algorithm: ratelimit.AlgorithmCredits, Requests: n, Refill: r}
}

// CreditParams gives a new key credits.
type CreditParams struct {
	// Initial is the starting balance, 0 to 2^51.
	Initial int64
	// Refill is what the balance is set to at every refill, 1 to 2^51, with Every; 0 means
	// none.
	Refill int64
	// Every is "1d" or "1mo" with a Refill, else "".
	Every string
}

func (p *CreditParams) validate() error {
	if p == nil {
		return nil
	}
	var errs []error
	if p.Initial < 0 || p.Initial > maxCredits {
		errs = append(errs, fmt.Errorf("credits %d out of range 0..%d", p.Initial, int64(maxCredits)))
	}
	if p.Refill < 0 || p.Refill > maxCredits {
		errs = append(errs, fmt.Errorf("refill %d out of range 0..%d", p.Refill, int64(maxCredits)))
	}
	r, err := ratelimit.ParseRefill(p.Every)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("refill period %q: want 1d or 1mo", p.Every))
	case p.Refill > 0 && r == ratelimit.RefillNone:
		errs = append(errs, errors.New("a refill amount needs a refill period (1d or 1mo)"))
	case p.Refill == 0 && r != ratelimit.RefillNone:
		errs = append(errs, fmt.Errorf("refill period %s needs a refill amount above 0", p.Every))
	}
	return errors.Join(errs...)
}

// record is the Credits a record of a key created with p holds.
func (p *CreditParams) record() Credits {
	return Credits{Enabled: true, Initial: p.Initial, Refill: p.Refill, Every: p.Every}
}

// appendFields appends c's record fields, none when c is not enabled.
func (c Credits) appendFields(f []string) []string {
	if !c.Enabled {
		return f
	}
	return append(f,
		fieldCredits, strconv.FormatInt(c.Initial, 10),
		fieldRefill, strconv.FormatInt(c.Refill, 10),
		fieldRefillEvery, c.Every)
}

// parseCredits reads the credit fields of a record; none means a key without credits.
func parseCredits(id string, m map[string]string) (Credits, error) {
	initial, ok := m[fieldCredits]
	if !ok {
		return Credits{}, nil
	}
	c := Credits{Enabled: true, Every: m[fieldRefillEvery]}
	var err1, err2 error
	c.Initial, err1 = strconv.ParseInt(initial, 10, 64)
	c.Refill, err2 = strconv.ParseInt(m[fieldRefill], 10, 64)
	if err1 != nil || err2 != nil {
		return Credits{}, fmt.Errorf("%w: id %s: credits %q, refill %q", errBadRecord, id, initial, m[fieldRefill])
	}
	p := CreditParams{Initial: c.Initial, Refill: c.Refill, Every: c.Every}
	if err := p.validate(); err != nil {
		return Credits{}, fmt.Errorf("%w: id %s: %v", errBadRecord, id, err)
	}
	return c, nil
}

// creditsKey is the Redis key of the balance of the key with id: P+"credits:"+id. With a
// tagged prefix it shares the record's slot, like every key of the package.
func (s *Store) creditsKey(id string) string { return s.prefix + "credits:" + id }

// Balance reads the balance of rec's key as a request would see it (a refill that is due
// applied). It is ErrNoCredits for a key without credits and wraps ratelimit.ErrNoBalance
// when the balance is missing, which denies every request on the key.
func (s *Store) Balance(ctx context.Context, rec Record) (ratelimit.Balance, error) {
	if !rec.Credits.Enabled {
		return ratelimit.Balance{}, fmt.Errorf("%w: id %s", ErrNoCredits, rec.ID)
	}
	b, err := ratelimit.CreditsBalance(ctx, s.rdb, s.creditsKey(rec.ID), rec.Credits.Limit())
	if err != nil {
		return b, fmt.Errorf("apikeys: credits of %s: %w", rec.ID, err)
	}
	return b, nil
}

// Balances reads the balance of every record in recs that has credits, as Balance does, at
// most listConcurrency at a time (the client pipelines them), and returns them by id. A
// record whose balance is missing is left out; any other failure is an error.
func (s *Store) Balances(ctx context.Context, recs []Record) (map[string]ratelimit.Balance, error) {
	got := make([]ratelimit.Balance, len(recs))
	have := make([]bool, len(recs))
	err := forEach(ctx, len(recs), func(ctx context.Context, i int) error {
		if !recs[i].Credits.Enabled {
			return nil
		}
		b, err := s.Balance(ctx, recs[i])
		switch {
		case errors.Is(err, ratelimit.ErrNoBalance):
			return nil
		case err != nil:
			return err
		}
		got[i], have[i] = b, true
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]ratelimit.Balance)
	for i, ok := range have {
		if ok {
			out[recs[i].ID] = got[i]
		}
	}
	return out, nil
}

// SetCredits sets the balance of the key with id to n, as its refill for the current period.
// It returns the record and the new balance.
func (s *Store) SetCredits(ctx context.Context, id string, n int64) (Record, ratelimit.Balance, error) {
	return s.changeCredits(ctx, id, func(key string, lim ratelimit.Limit) (ratelimit.Balance, error) {
		return ratelimit.SetCredits(ctx, s.rdb, key, n, lim)
	})
}

// AddCredits adds n to the balance of the key with id, after the refill that is due; a
// negative n takes credits away, never below 0.
func (s *Store) AddCredits(ctx context.Context, id string, n int64) (Record, ratelimit.Balance, error) {
	return s.changeCredits(ctx, id, func(key string, lim ratelimit.Limit) (ratelimit.Balance, error) {
		return ratelimit.AddCredits(ctx, s.rdb, key, n, lim)
	})
}

func (s *Store) changeCredits(ctx context.Context, id string, change func(string, ratelimit.Limit) (ratelimit.Balance, error)) (Record, ratelimit.Balance, error) {
	rec, err := s.Get(ctx, id)
	if err != nil {
		return Record{}, ratelimit.Balance{}, err
	}
	if !rec.Credits.Enabled {
		return rec, ratelimit.Balance{}, fmt.Errorf("%w: id %s", ErrNoCredits, id)
	}
	b, err := change(rec.Credits.Key, rec.Credits.Limit())
	if err != nil {
		return rec, b, fmt.Errorf("apikeys: credits of %s: %w", id, err)
	}
	return rec, b, nil
}

// Get returns the record of the key with id, whatever its state: one GET of the id entry and
// one HGETALL of the record (they may sit in different Cluster slots). An unknown id is
// ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Record, error) {
	if !validID(id) {
		return Record{}, fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	h, ok, err := s.getString(ctx, s.idKey(id))
	switch {
	case err != nil:
		return Record{}, fmt.Errorf("apikeys: get %s: %w", id, err)
	case !ok:
		return Record{}, fmt.Errorf("%w: id %s", ErrNotFound, id)
	case !isHash(h):
		return Record{}, fmt.Errorf("apikeys: get %s: %w: id maps to %q", id, errBadRecord, h)
	}
	m, err := s.rdb.HGetAll(ctx, s.recordKey(h))
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: get %s: %w", id, err)
	}
	if len(m) == 0 {
		return Record{}, fmt.Errorf("%w: id %s", ErrNotFound, id)
	}
	rec, err := s.parse(m)
	if err != nil {
		return Record{}, fmt.Errorf("apikeys: get %s: %w", id, err)
	}
	if rec.ID != id {
		return Record{}, fmt.Errorf("apikeys: get %s: %w: id points at the record of %s", id, errBadRecord, rec.ID)
	}
	return rec, nil
}

// parse is parseRecord with the balance key filled in for a key with credits.
func (s *Store) parse(m map[string]string) (Record, error) {
	rec, err := parseRecord(m)
	if err == nil && rec.Credits.Enabled {
		rec.Credits.Key = s.creditsKey(rec.ID)
	}
	return rec, err
}
