package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// ErrFallback means the inner limiter failed and the decisions returned with the error come
// from the Guard's local counts. The inner error is wrapped too, so errors.Is finds both.
var ErrFallback = errors.New("ratelimit: redis failed, decided by local counts")

// Allower decides several limits of one request; *Limiter and *Guard are Allowers.
type Allower interface {
	Allow(ctx context.Context, reqs []Request) (time.Time, []Decision, error)
}

var (
	_ Allower = (*Limiter)(nil)
	_ Allower = (*Guard)(nil)
)

// DefaultGuardSize is a Guard table size that serves about 100000 active subjects in about
// 20 MB.
const DefaultGuardSize = 100000

// markMargin is taken off every over-limit mark. A fixed window's RetryAfter is its key's
// PTTL, whole milliseconds counted on Redis's millisecond clock, so the window can end up to
// a millisecond before RetryAfter has passed.
const markMargin = time.Millisecond

// guardShards splits the table so that concurrent calls for different keys rarely share a
// lock. Every call writes its keys' counts, so a plain mutex per shard beats an RWMutex.
const guardShards = 32

// GuardOptions configures a Guard.
type GuardOptions struct {
	// Size bounds the keys a Guard remembers (over-limit marks and local counts share one
	// entry per key, about 200 bytes). 0 or less turns the Guard off: every call goes to the
	// inner limiter, whose errors come back unchanged and without decisions.
	Size int
	// OnCacheHit, when set, is called once for every call answered from the over-limit
	// cache.
	OnCacheHit func()
	// OnFallback, when set, is called once for every call decided by local counts, with
	// whether the call was allowed.
	OnFallback func(allowed bool)
}

// Guard is an Allower that keeps a flood from reaching Redis or from passing when Redis
// fails. It wraps another Allower (normally the Redis Limiter) and adds, per process:
//
// An over-limit cache. When the inner limiter denies a key, the Guard remembers it as over
// until the decision's RetryAfter less a millisecond (a fixed window's PTTL is rounded to
// Redis's millisecond clock), measured on the local monotonic clock from the moment the
// call was sent (before Redis read its TIME, so the local end is never later than the true
// one). A later call that includes a remembered key, with at least the Cost that was
// denied and the same Limit, is answered without the inner limiter: the remembered keys
// Allowed=false with Remaining 0 and Reset and RetryAfter the time left; the call's other
// keys Allowed=true with Remaining the full quota. Nothing is counted in Redis for such a
// call, as envoyproxy/ratelimit's local cache does not count: a request denied by the
// cache does not spend its other limits. This is never a wrong denial, on any replica,
// because each algorithm's RetryAfter is a moment before which the same request cannot be
// allowed whatever else happens, as other replicas can only add hits: fixed denies until
// the window's key expires (RetryAfter is its PTTL, and counts only grow until then);
// sliding until the weighted count has dropped enough (it falls with time and only rises
// with hits, and RetryAfter is the first such millisecond); GCRA until the theoretical
// arrival time minus the burst (hits only push it later). Two things do lift a limit early
// and are seen here only when the mark ends: a key deleted in Redis (an operator's reset,
// an Express app's resetKey), and a config reload that keeps a limit's key but not its
// values (a changed Limit drops the mark at once).
//
// Local fallback counts. Every call adds each key's Cost to a per-process fixed window of
// the limit's Window, opened at the key's first hit the way AlgorithmFixed opens its
// windows, and the window also keeps the Cost this process let through (granted), whoever
// decided. When the inner limiter fails (any error but ErrInvalidRequest), Allow returns
// the error wrapped with ErrFallback and decisions from these counts: a key is Allowed when
// its local count including this hit is at most Limit.Requests and so is its granted Cost
// including this hit, with Limit Requests and Reset the time left in the local window. A
// caller that lets requests through when Redis fails can use them, so a flood is still
// limited per process.
//
// Hits the fallback allowed were perhaps never seen by Redis (a call that timed out waiting
// to be sent never ran), so Redis could allow the limit again on top of them. The Guard
// therefore keeps them, per key and local window, as debt: when the inner limiter allows a
// call, each key whose used quota (Limit minus Remaining) plus its debt, read as the reply
// is handled, exceeds Limit is denied. Between the two rules, the hits one process lets
// through in a local window stay within the limit, up to replies handled out of the order
// Redis decided them in. The price is that hits Redis did count (a call that ran after its
// caller gave up) are counted twice until the local window ends, and only after a failure.
//
// The table is bounded by GuardOptions.Size. When a shard is full, expired entries are
// swept; when none has expired, a sixteenth of the shard is evicted at random. An evicted
// key loses its mark (the next call asks Redis) and its local count (a fallback may allow
// it again), never more.
//
// Credits (AlgorithmCredits) are left to Redis: a balance is not a rate, and what an
// operator adds lifts a denial at once, so a credits request gets no local count, no
// over-limit mark and no debt. A call that holds one is never decided locally: when the
// inner limiter fails, Allow returns its error without ErrFallback and without decisions,
// because no process can know a balance that only Redis holds, and spending credits that
// may not exist is the one thing a quota must not do.
//
// Allow validates its requests as the Limiter does, so that a bad request is an error
// wrapping ErrInvalidRequest, never a fallback. It is safe for concurrent use.
type Guard struct {
	inner  Allower
	opts   GuardOptions
	seed   maphash.Seed
	base   time.Time
	clock  func() time.Duration // local monotonic time since base
	shards [guardShards]guardShard
}

type guardShard struct {
	mu  sync.Mutex
	m   map[string]*guardEntry
	max int
	_   [40]byte // keeps neighbouring shards' locks off one cache line
}

// guardEntry is what a Guard knows about one key. Times are local, since Guard.base.
type guardEntry struct {
	// limit is the limit the entry was made for; a call with another limit (a reload)
	// starts the entry over.
	limit Limit
	// end is when the local window ends; count is its hits, granted the hits this process
	// allowed in it, and debt those of them the fallback allowed.
	end                  time.Duration
	count, granted, debt int64
	// overUntil is when the over-limit mark ends (0: none), for calls of Cost at least
	// overCost.
	overUntil time.Duration
	overCost  int64
}

// guardNote is what one call learned about one key under the shard lock.
type guardNote struct {
	count               int64
	windowLeft, overFor time.Duration
}

// NewGuard returns a Guard around inner.
func NewGuard(inner Allower, opts GuardOptions) *Guard {
	g := &Guard{inner: inner, opts: opts, seed: maphash.MakeSeed(), base: time.Now()}
	g.clock = func() time.Duration { return time.Since(g.base) }
	per := (opts.Size + guardShards - 1) / guardShards
	for i := range g.shards {
		g.shards[i].max = per
		if opts.Size > 0 {
			g.shards[i].m = make(map[string]*guardEntry)
		}
	}
	return g
}

// Allow decides reqs: from the over-limit cache when it knows a key is over, else with the
// inner limiter, else (when that fails) from local counts with an error wrapping
// ErrFallback. See Guard.
func (g *Guard) Allow(ctx context.Context, reqs []Request) (time.Time, []Decision, error) {
	if g.opts.Size <= 0 || len(reqs) == 0 {
		return g.inner.Allow(ctx, reqs)
	}
	if err := checkRequests(reqs); err != nil {
		return time.Time{}, nil, err
	}
	t0 := g.clock()
	var buf [4]guardNote
	notes := buf[:0]
	over, credits := false, false
	for i := range reqs {
		if reqs[i].Limit.Algorithm == AlgorithmCredits {
			credits = true
			notes = append(notes, guardNote{})
			continue
		}
		n := g.note(&reqs[i], t0)
		over = over || n.overFor > 0
		notes = append(notes, n)
	}
	if over {
		if g.opts.OnCacheHit != nil {
			g.opts.OnCacheHit()
		}
		return time.Now(), cachedDecisions(reqs, notes), nil
	}
	now, ds, err := g.inner.Allow(ctx, reqs)
	switch {
	case err != nil && (credits || errors.Is(err, ErrInvalidRequest)):
		return now, ds, err
	case err != nil:
		return time.Now(), g.fallback(reqs, notes, t0), fmt.Errorf("%w: %w", ErrFallback, err)
	case len(ds) != len(reqs):
		return now, ds, nil // the caller reports the inner limiter's bug
	}
	all := true
	for i := range ds {
		r := &reqs[i]
		if !ds[i].Allowed {
			all = false
			if left := ds[i].RetryAfter - markMargin; r.Cost <= r.Limit.capacity() && left > 0 && r.Limit.Algorithm != AlgorithmCredits {
				g.markOver(r, t0, t0+left)
			}
		}
	}
	if all {
		for i := range ds {
			if reqs[i].Limit.Algorithm != AlgorithmCredits {
				g.settle(&reqs[i], &ds[i], t0)
			}
		}
	}
	return now, ds, nil
}

// checkRequests applies the Limiter's checks, so that the cache never answers a call the
// Limiter would reject.
func checkRequests(reqs []Request) error {
	for i := range reqs {
		r := &reqs[i]
		_, err := r.Limit.validate(r.Cost)
		if err == nil && r.Key == "" {
			err = fmt.Errorf("%w: empty key", ErrInvalidRequest)
		}
		for j := 0; err == nil && j < i; j++ {
			if reqs[j].Key == r.Key {
				err = fmt.Errorf("%w: key %q repeated in request %d", ErrInvalidRequest, r.Key, j)
			}
		}
		if err != nil {
			return fmt.Errorf("request %d: %w", i, err)
		}
	}
	return nil
}

func (g *Guard) shard(key string) *guardShard {
	return &g.shards[maphash.String(g.seed, key)%guardShards]
}

// note counts r in its key's local window and reports the key's state at now.
func (g *Guard) note(r *Request, now time.Duration) guardNote {
	sh := g.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entry(r, now)
	if e == nil {
		return guardNote{count: r.Cost, windowLeft: r.Limit.Window}
	}
	// Past maxExact the count denies every limit; stop adding so it cannot overflow.
	if e.count <= maxExact {
		e.count += r.Cost
	}
	n := guardNote{count: e.count, windowLeft: e.end - now}
	if now < e.overUntil && r.Cost >= e.overCost {
		n.overFor = e.overUntil - now
	}
	return n
}

// entry returns r's entry with its local window current at now, making room for it when
// needed; nil only when the shard holds no entries at all (Size 0).
func (sh *guardShard) entry(r *Request, now time.Duration) *guardEntry {
	e := sh.m[r.Key]
	if e == nil {
		if sh.max <= 0 {
			return nil
		}
		sh.makeRoom(now)
		e = &guardEntry{limit: r.Limit, end: now + r.Limit.Window}
		sh.m[r.Key] = e
		return e
	}
	if e.limit != r.Limit {
		*e = guardEntry{limit: r.Limit, end: now + r.Limit.Window}
	} else if now >= e.end {
		e.end, e.count, e.granted, e.debt = now+r.Limit.Window, 0, 0, 0
	}
	return e
}

// makeRoom keeps the shard under its bound before an insert: it sweeps expired entries,
// and evicts a sixteenth of the shard (map order is random) when none had expired, so that
// a full shard of live keys costs a sweep per sixteenth of inserts, not per insert.
func (sh *guardShard) makeRoom(now time.Duration) {
	if len(sh.m) < sh.max {
		return
	}
	for k, e := range sh.m {
		if now >= e.end && now >= e.overUntil {
			delete(sh.m, k)
		}
	}
	for k := range sh.m {
		if len(sh.m) < sh.max-sh.max/16 {
			return
		}
		delete(sh.m, k)
	}
}

// markOver remembers r's key as over from now until end, for calls of r.Cost or more.
func (g *Guard) markOver(r *Request, now, end time.Duration) {
	sh := g.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entry(r, now)
	if e == nil {
		return
	}
	if e.overUntil <= now || r.Cost <= e.overCost {
		e.overUntil, e.overCost = end, r.Cost
	}
}

// cachedDecisions answers a call one of whose keys is marked over. A credits request, never
// marked, is answered allowed with its quota as Remaining: the call spends nothing.
func cachedDecisions(reqs []Request, notes []guardNote) []Decision {
	ds := make([]Decision, len(reqs))
	for i := range reqs {
		c := reqs[i].Limit.capacity()
		if left := notes[i].overFor; left > 0 {
			ds[i] = Decision{Limit: c, Reset: left, RetryAfter: left}
		} else {
			ds[i] = Decision{Allowed: true, Limit: c, Remaining: c}
		}
	}
	return ds
}

// fallback decides a call from its local counts. Each key's verdict and its granted and debt
// Cost are settled under one lock, so concurrent fallbacks cannot together pass the limit.
// A key that allows in a call another key denies still records the Cost, which can only make
// later fallbacks stricter.
func (g *Guard) fallback(reqs []Request, notes []guardNote, now time.Duration) []Decision {
	ds := make([]Decision, len(reqs))
	all := true
	for i := range reqs {
		r, n := &reqs[i], notes[i]
		limit := r.Limit.Requests
		d := Decision{Allowed: n.count <= limit && g.grant(r, now, true), Limit: limit, Remaining: min(max(limit-n.count, 0), limit), Reset: n.windowLeft}
		if !d.Allowed {
			d.Remaining = 0
			d.RetryAfter = max(n.windowLeft, time.Nanosecond)
			all = false
		}
		ds[i] = d
	}
	if g.opts.OnFallback != nil {
		g.opts.OnFallback(all)
	}
	return ds
}

// grant records r's Cost as let through by this process when that keeps its local window
// within Limit.Requests, as debt too when the fallback decided, and reports whether it did.
func (g *Guard) grant(r *Request, now time.Duration, fallback bool) bool {
	sh := g.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entry(r, now)
	if e == nil {
		return true
	}
	if e.granted+r.Cost > r.Limit.Requests {
		return false
	}
	e.granted += r.Cost
	if fallback {
		e.debt += r.Cost
	}
	return true
}

// settle applies the debt to a key of a call the inner limiter allowed (see Guard): it
// denies d when the key's used quota plus the fallback's debt exceeds the limit, and
// otherwise counts the Cost as granted. The call was counted in Redis either way, which only
// spends quota the fallback already gave away.
func (g *Guard) settle(r *Request, d *Decision, now time.Duration) {
	sh := g.shard(r.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entry(r, now)
	if e == nil {
		return
	}
	if e.debt > 0 && d.Limit-d.Remaining+e.debt > d.Limit {
		d.Allowed, d.Remaining = false, 0
		d.RetryAfter = max(e.end-now, time.Nanosecond)
		return
	}
	if e.granted <= maxExact {
		e.granted += r.Cost
	}
}
