package ratelimit

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// Scripter runs a Lua script; *redisconn.Client is one. It is declared here, with the one
// method this package calls, so that tests can answer scripts from a table and so that the
// package does not depend on how the client reaches Redis.
//
// Eval runs the script src under its SHA1 sha: EVALSHA, so that a call sends 40 bytes rather
// than the script, and EVAL only when the server has lost the script (a restart, SCRIPT
// FLUSH, a failover). A NOSCRIPT reply means the script did not run, so that EVAL cannot
// count anything twice; no other failure is retried, since a script that may have run must
// not run again. args are sent as Redis strings (integers in decimal). The reply is converted
// as go-redis did: an integer is an int64, a string a string, an array an []any of such
// values (nil for a nil element); a nil reply at the top level is an error (redisconn.ErrNil).
type Scripter interface {
	Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error)
}

var _ Scripter = (*redisconn.Client)(nil)

// ErrInvalidHit means a Hit cannot be counted as given (empty key, window not positive, too
// many hits). It is the caller's bug or bad config, not a Redis failure, and no Redis call
// is made.
var ErrInvalidHit = errors.New("ratelimit: invalid hit")

// Hit asks to add Hits to the fixed window of Window seconds that contains "now" (Redis's
// clock) for counter Key.
//
// Windows are aligned to the Unix epoch: the window starts at now - now%Window. The Redis
// key actually touched is Key + ":" + Window + ":" + windowStart, so different windows of
// one counter never share a key, and it expires one second after its window ends. Key
// should be built with AppendEscaped so that user-controlled parts cannot collide.
//
// On Redis Cluster, Key must contain a non-empty {hash tag}: the suffix then stays in the
// tag's slot, which the script needs because it touches keys derived from KEYS. Hits in
// several slots are fine: Add runs one script per slot.
type Hit struct {
	// Key names the counter; the window suffix is added to it.
	Key string
	// Window is the window length in seconds, from 1 to MaxWindow.
	Window int64
	// Hits is added to the count, at most MaxHits. 0 reads the count without writing
	// anything, so checking a limit never creates a key.
	Hits uint64
}

// MaxHits is the most one Hit may add: 2^52. The script keeps every counter at or below
// 2^52 (an add that would pass it is undone, and the count it reports is still over any
// limit), so a count is at most 2^53: exact in Lua's float64 numbers and far from INCRBY's
// 2^63 overflow, however many requests a window sees.
const MaxHits = 1 << 52

// maxWindowSeconds is MaxWindow in whole seconds, the unit of Hit.Window.
const maxWindowSeconds = int64(MaxWindow / time.Second)

// validate rejects hits the script cannot count exactly or give a TTL: Lua divides by
// Window, EXPIRE must accept the window, and counts must stay exact.
func (h Hit) validate() error {
	switch {
	case h.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidHit)
	case h.Window <= 0 || h.Window > maxWindowSeconds:
		return fmt.Errorf("%w: window of %d seconds out of range 1..%d (10 years)", ErrInvalidHit, h.Window, maxWindowSeconds)
	case h.Hits > MaxHits:
		return fmt.Errorf("%w: %d hits above the maximum %d (2^52)", ErrInvalidHit, h.Hits, uint64(MaxHits))
	}
	return nil
}

// FixedWindowResult is the outcome of one Add.
type FixedWindowResult struct {
	// Now is Redis's TIME when the script ran, to the microsecond. Callers derive window
	// starts (now - now%Window) and resets from it rather than from their own clock, so
	// that they agree with the keys the script used.
	Now time.Time
	// Counts holds each hit's count after adding, in the order of the hits. For a read
	// (Hits 0) it is the current count, 0 when the window has no key yet.
	Counts []uint64
}

// FixedWindow counts hits in epoch-aligned fixed windows in Redis, all of a request's hits
// in one atomic Lua call per Redis Cluster slot. It is safe for concurrent use.
type FixedWindow struct {
	rdb Scripter
	sha string
	// clusterSlots splits hits whose keys span Redis Cluster slots (FixedWindowClusterSlots).
	clusterSlots bool
}

// FixedWindowOption configures a FixedWindow.
type FixedWindowOption func(*FixedWindow)

// FixedWindowClusterSlots makes Add split hits whose keys lie in several Redis Cluster slots
// into one script per slot (see Add). Only a Cluster needs it; without it every Add is one
// script, as on one Redis server.
func FixedWindowClusterSlots() FixedWindowOption {
	return func(f *FixedWindow) { f.clusterSlots = true }
}

// NewFixedWindow returns a FixedWindow that runs its script on rdb.
func NewFixedWindow(rdb Scripter, opts ...FixedWindowOption) *FixedWindow {
	sum := sha1.Sum([]byte(fixedWindowScript))
	f := &FixedWindow{rdb: rdb, sha: hex.EncodeToString(sum[:])}
	for _, o := range opts {
		o(f)
	}
	return f
}

// Add adds every hit in one round trip: EVALSHA, and EVAL only when the server has lost the
// script (a restart, SCRIPT FLUSH, a failover). The hits are counted atomically: no other
// client's hits land between two of them. ctx bounds the call; Add sets no deadline of its
// own. When hits is empty Add makes no call and returns a zero result.
//
// With FixedWindowClusterSlots, hits whose keys are in several Redis Cluster slots (by Slot)
// go in one script per slot, all sent at once, so still in one round trip with a pipelining
// client. Every hit is counted whatever the others' counts, as in one script and as
// envoyproxy/ratelimit counts every descriptor (see the package doc); only the atomicity is
// per slot. Now is then the earliest of the scripts' clocks. When any script fails, Add
// returns its error, and what the other slots counted stays counted, as a script whose
// reply was lost leaves its counts.
//
// Errors wrap ErrInvalidHit for bad input, ErrBadReply for a reply of the wrong shape, and
// otherwise the client's error (redisconn's, a Redis error reply) or the context's.
func (f *FixedWindow) Add(ctx context.Context, hits []Hit) (FixedWindowResult, error) {
	if len(hits) == 0 {
		return FixedWindowResult{}, nil
	}
	keys := make([]string, len(hits))
	args := make([]any, 2*len(hits))
	for i, h := range hits {
		if err := h.validate(); err != nil {
			return FixedWindowResult{}, fmt.Errorf("hit %d: %w", i, err)
		}
		keys[i] = h.Key
		args[2*i] = h.Window
		args[2*i+1] = h.Hits
	}
	if f.clusterSlots && !oneSlot(keys) {
		return f.addSlots(ctx, keys, args)
	}
	v, err := f.rdb.Eval(ctx, f.sha, fixedWindowScript, keys, args...)
	if err != nil {
		return FixedWindowResult{}, fmt.Errorf("ratelimit: fixed window script: %w", err)
	}
	sec, usec, counts, err := parseFixedWindowReply(v, len(hits))
	if err != nil {
		return FixedWindowResult{}, err
	}
	return FixedWindowResult{Now: time.Unix(sec, usec*int64(time.Microsecond)), Counts: counts}, nil
}

// addSlots is Add for keys in several slots: one script per slot, all sent at once, the
// counts put back in the order of the hits. keys and args are Add's, already validated.
func (f *FixedWindow) addSlots(ctx context.Context, keys []string, args []any) (FixedWindowResult, error) {
	groups := bySlot(keys)
	counts := make([]uint64, len(keys))
	nows := make([]time.Time, len(groups))
	errs := make([]error, len(groups))
	eachGroup(len(groups), func(g int) {
		idx := groups[g]
		gkeys, gargs := groupOf(idx, keys, args, 2)
		v, err := f.rdb.Eval(ctx, f.sha, fixedWindowScript, gkeys, gargs...)
		if err != nil {
			errs[g] = fmt.Errorf("ratelimit: fixed window script: %w", err)
			return
		}
		sec, usec, gcounts, err := parseFixedWindowReply(v, len(idx))
		if err != nil {
			errs[g] = err
			return
		}
		nows[g] = time.Unix(sec, usec*int64(time.Microsecond))
		for j, i := range idx {
			counts[i] = gcounts[j]
		}
	})
	for _, err := range errs {
		if err != nil {
			return FixedWindowResult{}, err
		}
	}
	return FixedWindowResult{Now: earliest(nows), Counts: counts}, nil
}
