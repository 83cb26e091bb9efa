package ratelimit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ErrInvalidRequest means a Request cannot be decided as given (empty or repeated key, a
// limit out of range). It is the caller's bug or bad config, not a Redis failure, and no
// Redis call is made.
var ErrInvalidRequest = errors.New("ratelimit: invalid request")

// maxExact bounds every number the limiter script multiplies. Redis runs Lua 5.1, whose
// only number type is a float64 holding integers exactly up to 2^53; keeping products at or
// below 2^51 leaves room for the sums and the clock (microseconds since 1970, about 2^51
// too) so that no comparison in the script ever rounds.
const maxExact = 1 << 51

// MaxWindow is the longest window a Limit or a Hit may have: ten 365-day years. A year is
// the largest unit Envoy's rate limit API names, so this leaves room for overrides such as
// YEAR with a unit_multiplier of 10, while the scripts' arithmetic stays exact with a wide
// margin: the Limiter adds up to twice a window in microseconds to Redis's clock (about
// 2^51 µs today), which stays below Lua's 2^53 for windows up to about a century, and a
// reset or retry-after of twice the window fits a time.Duration (292 years).
const MaxWindow = 10 * 365 * 24 * time.Hour

// maxFixedCount is where the Limiter's fixed-window counters stop growing. A fixed window
// alone is counted even when denied (as rate-limit-redis counts), so without a ceiling a
// client could knock until INCRBY overflowed; at most maxExact is admitted, and counts at or
// above 2^52 plus a cost of at most 2^51 stay exact in Lua.
const maxFixedCount = 1 << 52

// Limit is one limit as a value: Requests per Window, counted by Algorithm.
type Limit struct {
	// Requests is how much Cost the Window admits; it must be positive.
	Requests int64
	// Window is the period Requests applies to. It must be a positive whole number of
	// milliseconds, the unit of Redis's PX and PTTL.
	Window time.Duration
	// Algorithm counts the limit; the zero value is AlgorithmFixed.
	Algorithm Algorithm
	// Burst is how much Cost GCRA admits at once after a quiet period; 0 means Requests.
	// Other algorithms ignore it.
	Burst int64
	// Refill is when AlgorithmCredits sets the balance back to Requests; the other
	// algorithms ignore it. For credits, Requests is the quota the headers show (the refill
	// amount, or the initial credits without a refill) and Window is unused.
	Refill Refill
}

// Validate reports whether requests of cost 1 (every request the sidecar counts) can be
// counted exactly under the limit, so that config loading can reject a limit once instead of
// every request failing: a limit that passes never makes the script fail or round. Errors
// wrap ErrInvalidRequest and name the maximum that was exceeded.
func (l Limit) Validate() error {
	_, err := l.validate(1)
	return err
}

// capacity is the most Cost the limit holds at once: Requests, or the burst for GCRA. It
// is Decision.Limit, the number Remaining counts down from.
func (l Limit) capacity() int64 {
	if l.Algorithm == AlgorithmGCRA && l.Burst > 0 {
		return l.Burst
	}
	return l.Requests
}

// interval is GCRA's emission interval in microseconds, Window/Requests rounded up. Rounding
// up keeps it an integer the script can add exactly; it can only make the limit stricter,
// by under a microsecond per request (nothing for limits such as 100/min whose interval is
// a whole number of microseconds).
func (l Limit) interval() int64 {
	w := l.Window.Microseconds()
	return (w + l.Requests - 1) / l.Requests
}

// validate checks l for a request of cost and returns the interval GCRA needs, the Refill
// for credits (the script reads both from the same argument), and 0 for the other
// algorithms.
func (l Limit) validate(cost int64) (int64, error) {
	if l.Algorithm == AlgorithmCredits {
		return l.validateCredits(cost)
	}
	switch {
	case l.Requests <= 0 || l.Requests > maxExact:
		return 0, fmt.Errorf("%w: requests %d out of range 1..%d (2^51)", ErrInvalidRequest, l.Requests, int64(maxExact))
	case l.Window < time.Millisecond || l.Window%time.Millisecond != 0:
		return 0, fmt.Errorf("%w: window %v is not a positive whole number of milliseconds", ErrInvalidRequest, l.Window)
	case l.Window > MaxWindow:
		return 0, fmt.Errorf("%w: window %v is longer than the maximum %v (10 years)", ErrInvalidRequest, l.Window, MaxWindow)
	case l.Burst < 0 || l.Burst > maxExact:
		return 0, fmt.Errorf("%w: burst %d out of range 0..%d", ErrInvalidRequest, l.Burst, int64(maxExact))
	case cost < 0 || cost > maxExact:
		return 0, fmt.Errorf("%w: cost %d out of range 0..%d", ErrInvalidRequest, cost, int64(maxExact))
	}
	ms := l.Window.Milliseconds()
	switch l.Algorithm {
	case AlgorithmFixed:
		return 0, nil
	case AlgorithmSliding:
		// The script compares counts scaled by the window in milliseconds; two windows'
		// counts (each at most Requests) plus the cost must stay exact.
		if most := (maxExact/ms - cost) / 2; l.Requests > most {
			return 0, fmt.Errorf("%w: sliding limit of %d requests per %v too large to count exactly: at most %d per %v (requests x window in ms <= 2^50)",
				ErrInvalidRequest, l.Requests, l.Window, max(most, 0), l.Window)
		}
		return 0, nil
	case AlgorithmGCRA:
		// The script adds burst and cost in units of the interval to a clock in
		// microseconds.
		iv := l.interval()
		if most := maxExact/iv - cost; l.capacity() > most {
			return 0, fmt.Errorf("%w: gcra burst %d of %d requests per %v too large to count exactly: at most %d (burst x window/requests in µs <= 2^51)",
				ErrInvalidRequest, l.capacity(), l.Requests, l.Window, max(most, 0))
		}
		return iv, nil
	}
	return 0, fmt.Errorf("%w: unknown algorithm %d", ErrInvalidRequest, int(l.Algorithm))
}

// Request asks one limit about one subject.
type Request struct {
	// Key is the full Redis key of the subject for this limit, {hash tag} included. It is
	// built by the caller; see Limiter for the keys each algorithm derives from it.
	Key string
	// Limit is the limit to apply.
	Limit Limit
	// Cost is what the request spends; 0 checks the limit without counting anything, and
	// never creates or refreshes a key.
	Cost int64
}

// Decision is the result of one Request.
type Decision struct {
	// Allowed reports that this limit alone admits the request: its count including Cost
	// does not exceed the limit. With Cost 0 it reports that the limit is not already
	// exceeded, so a limit used up exactly is still Allowed with Remaining 0 (as
	// envoyproxy/ratelimit answers hits_addend 0). The request as a whole passes only when
	// every Decision of the call is Allowed.
	Allowed bool
	// Limit is the quota Remaining counts down from: Requests, or the burst for GCRA.
	Limit int64
	// Remaining is the Cost a request could still spend right now, in [0, Limit], after
	// this call: it reflects this request's Cost only when the call counted it.
	Remaining int64
	// Reset is the time until the window ends (fixed: the key's PTTL, 0 when no window is
	// open; sliding: the end of the current epoch-aligned sub-window) or, for GCRA, until
	// the quota is fully restored. It is never negative.
	Reset time.Duration
	//
	// For AlgorithmCredits, Remaining is the balance left (it may exceed the quota after an
	// operator added credits, and Limit is then Remaining), Reset is the time until the
	// next refill (0 without a refill), and a denial's RetryAfter is that time too, or
	// MaxWindow without a refill: only an operator brings such a balance back.
	//
	// RetryAfter is 0 when Allowed, else the time until a request of the same Cost would be
	// allowed if nothing else were counted: the end of the window for fixed, the moment the
	// weighted count has dropped enough for sliding, the theoretical arrival time minus the
	// burst for GCRA. A Cost the limit can never admit (above Requests, or above the burst
	// for GCRA) is always denied, with RetryAfter one Window.
	RetryAfter time.Duration
}

// Limiter decides several limits of one request atomically in Redis, in one round trip,
// with Redis's TIME as the clock of every replica; limits whose keys are in different Redis
// Cluster slots are decided per slot (see Allow). It is safe for concurrent use.
//
// Keys: every algorithm starts from Request.Key. Fixed uses it as it is, in
// rate-limit-redis's format, so counters can be shared with Express apps. Sliding uses
// Key+":"+start for its current and previous sub-windows (start in Unix milliseconds,
// aligned to the Window since the epoch). GCRA stores its theoretical arrival time at Key,
// in Unix microseconds. The keys of one Allow call must be distinct; they may lie in
// several Redis Cluster slots (see Allow). A sliding key needs a {hash tag} on a Cluster,
// because the script derives its sub-window keys from it and only a tag keeps them in its
// slot. A key must not change algorithm: each reads the others' values as its own, so the
// caller should put the algorithm (or the limit) in the key.
//
// Credits (AlgorithmCredits) keep a hash at Key, {remaining, period}: the balance and the
// refill period it belongs to (days or months since 1970 in UTC, per Limit.Refill, on
// Redis's clock). The script refills lazily: when the period on the clock is later than the
// stored one, the balance is Requests again and the stored period moves on; it never moves
// back, so a server whose clock is behind (after a failover, say) refills nothing twice.
// The balance is written only when the call counts, in the same script as the other limits,
// so a request denied by a rate limit spends no credit and one denied for want of credits
// counts against no limit. A missing hash is a balance of 0: credits are never made up.
//
// Sliding is an approximation: it assumes the previous window's hits were spread evenly.
// Like every algorithm here it is exact in the sense that matters across replicas: the
// decision and the count happen in one script, so concurrent requests can never together
// pass a limit that each alone would not.
type Limiter struct {
	rdb Scripter
	sha string
	// groupSHA and undoSHA are the scripts of calls whose keys span several slots.
	groupSHA, undoSHA string
	// undoFailed, when set, hears of every undo that failed (see Allow).
	undoFailed func(error)
	// clusterSlots splits a call whose keys span Redis Cluster slots (WithClusterSlots).
	clusterSlots bool
}

// WithClusterSlots makes Allow split a call whose keys lie in several Redis Cluster slots
// into one script per slot (see Allow). Only a Cluster needs it: on one Redis server (or a
// Sentinel-managed one) a single script covers every key, fully atomic, in one round trip,
// so without this option every call is one script whatever its keys' slots.
func WithClusterSlots() LimiterOption {
	return func(l *Limiter) { l.clusterSlots = true }
}

// LimiterOption configures a Limiter.
type LimiterOption func(*Limiter)

// WithUndoFailed has fn called, with the error, whenever a call whose keys span several slots
// was denied in one slot and could not take back what the others counted, so that those
// counts stay (see Allow). It is meant for a metric or a log line; fn must be safe for
// concurrent use.
func WithUndoFailed(fn func(error)) LimiterOption {
	return func(l *Limiter) { l.undoFailed = fn }
}

// NewLimiter returns a Limiter that runs its scripts on rdb.
func NewLimiter(rdb Scripter, opts ...LimiterOption) *Limiter {
	l := &Limiter{rdb: rdb, sha: scriptSHA(limiterScript), groupSHA: scriptSHA(limiterGroupScript), undoSHA: scriptSHA(limiterUndoScript)}
	for _, o := range opts {
		o(l)
	}
	return l
}

// scriptSHA is the SHA1 that EVALSHA names script by.
func scriptSHA(script string) string {
	sum := sha1.Sum([]byte(script))
	return hex.EncodeToString(sum[:])
}

// Allow decides every request in one EVALSHA (EVAL only when the server has lost the script)
// and returns the decisions in order, with Redis's TIME at the decision as now.
//
// The call is all or nothing: when every Decision is Allowed, each request with Cost > 0 is
// counted; when any is denied, none is, so a request denied by its hourly limit does not
// burn its per-minute quota. The one exception is a call with a single fixed-window
// request, which is counted even when denied, exactly as rate-limit-redis counts every
// hit: Express apps sharing the counter count that way, and a client that keeps knocking
// keeps its counter over the limit on both sides.
//
// With WithClusterSlots, keys in several Redis Cluster slots (by Slot) do not share a
// script: Allow then sends one script per slot, all at once, each all or nothing within its
// slot and never counting a denied fixed window alone (see the package doc).
// When every slot allows, the call is counted as one script would count it. When a slot
// denies, a second script per slot that counted takes its counts back (a second round trip,
// for denied calls only), and their decisions are reported as not counted: the counters end
// as one script would leave them, with nothing counted. Until the undo lands, other calls
// see those counts and may be denied by them; no call is ever allowed past a limit. GCRA's
// undo moves the arrival time back by the cost, which can credit up to the time between the
// two scripts when another request came in meanwhile. An undo that fails (ctx done, Redis
// down) leaves the counts in place and goes to WithUndoFailed, not to the caller: the verdict,
// denied, stands. When a slot's script fails, Allow returns the error and takes nothing
// back, as a single script whose reply was lost. now is the earliest of the slots' clocks.
//
// ctx bounds the call, undo included; Allow sets no deadline of its own. No requests means
// no call and a zero result. Errors wrap ErrInvalidRequest for bad input, ErrBadReply for a
// reply of the wrong shape, and otherwise the client's error (redisconn's, a Redis error
// reply) or the context's.
func (l *Limiter) Allow(ctx context.Context, reqs []Request) (now time.Time, ds []Decision, err error) {
	if len(reqs) == 0 {
		return time.Time{}, nil, nil
	}
	keys := make([]string, len(reqs))
	args := make([]any, 0, limiterArgs*len(reqs))
	for i, r := range reqs {
		iv, err := r.Limit.validate(r.Cost)
		if err == nil && r.Key == "" {
			err = fmt.Errorf("%w: empty key", ErrInvalidRequest)
		}
		for j := 0; err == nil && j < i; j++ {
			if keys[j] == r.Key {
				err = fmt.Errorf("%w: key %q repeated in request %d", ErrInvalidRequest, r.Key, j)
			}
		}
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("request %d: %w", i, err)
		}
		keys[i] = r.Key
		args = append(args, int(r.Limit.Algorithm), r.Limit.capacity(), r.Limit.Window.Milliseconds(), iv, r.Cost)
	}
	if l.clusterSlots && !oneSlot(keys) {
		return l.allowSlots(ctx, reqs, keys, args)
	}
	v, err := l.rdb.Eval(ctx, l.sha, limiterScript, keys, args...)
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("ratelimit: limiter script: %w", err)
	}
	return parseLimiterReply(v, reqs)
}
