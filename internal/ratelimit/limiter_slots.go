package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// allowSlots is Allow for keys in several slots: one limiterGroupScript per slot, then, when
// a slot denied, one limiterUndoScript per slot that counted. keys and args are Allow's,
// already validated.
func (l *Limiter) allowSlots(ctx context.Context, reqs []Request, keys []string, args []any) (time.Time, []Decision, error) {
	groups := bySlot(keys)
	ds := make([]Decision, len(reqs))
	nows := make([]time.Time, len(groups))
	errs := make([]error, len(groups))
	eachGroup(len(groups), func(g int) {
		idx := groups[g]
		gkeys, gargs := groupOf(idx, keys, args, limiterArgs)
		greqs := make([]Request, len(idx))
		for j, i := range idx {
			greqs[j] = reqs[i]
		}
		v, err := l.rdb.Eval(ctx, l.groupSHA, limiterGroupScript, gkeys, gargs...)
		if err != nil {
			errs[g] = fmt.Errorf("ratelimit: limiter script: %w", err)
			return
		}
		now, gds, err := parseLimiterReply(v, greqs)
		if err != nil {
			errs[g] = err
			return
		}
		nows[g] = now
		for j, i := range idx {
			ds[i] = gds[j]
		}
	})
	for _, err := range errs {
		if err != nil {
			return time.Time{}, nil, err
		}
	}
	now := earliest(nows)
	// The slots that counted: every decision allowed and some cost. They are undone only
	// when another slot denied.
	var undo []int
	denied := false
	for g, idx := range groups {
		allowed, cost := true, false
		for _, i := range idx {
			allowed = allowed && ds[i].Allowed
			cost = cost || reqs[i].Cost > 0
		}
		denied = denied || !allowed
		if allowed && cost {
			undo = append(undo, g)
		}
	}
	if denied && len(undo) > 0 {
		l.undo(ctx, reqs, ds, groups, nows, undo)
	}
	return now, ds, nil
}

// undo runs limiterUndoScript for each group named by undo (groups[g] are indexes into reqs,
// of one slot, whose count script read the clock nows[g]) and marks the decisions it took
// back as not counted.
func (l *Limiter) undo(ctx context.Context, reqs []Request, ds []Decision, groups [][]int, nows []time.Time, undo []int) {
	eachGroup(len(undo), func(u int) {
		g := undo[u]
		nowms := nows[g].UnixMilli()
		var idx []int
		for _, i := range groups[g] {
			if reqs[i].Cost > 0 {
				idx = append(idx, i)
			}
		}
		keys := make([]string, len(idx))
		args := make([]any, 0, undoArgs*len(idx))
		for j, i := range idx {
			r := &reqs[i]
			w := r.Limit.Window.Milliseconds()
			keys[j] = r.Key
			switch r.Limit.Algorithm {
			case AlgorithmFixed:
				// A counted fixed window's Reset is its PTTL then, in whole milliseconds.
				args = append(args, int(AlgorithmFixed), r.Cost, nowms+ds[i].Reset.Milliseconds(), w)
			case AlgorithmSliding:
				keys[j] = r.Key + ":" + strconv.FormatInt(nowms-nowms%w, 10)
				args = append(args, int(AlgorithmSliding), r.Cost, 0, 0)
			case AlgorithmCredits:
				// The period the script spent from is that of its own clock.
				per := int64(-1)
				if r.Limit.Refill != RefillNone {
					per = RefillPeriod(r.Limit.Refill, nows[g])
				}
				args = append(args, int(AlgorithmCredits), r.Cost, per, 0)
			default:
				args = append(args, int(AlgorithmGCRA), r.Cost*r.Limit.interval(), 0, 0)
			}
		}
		v, err := l.rdb.Eval(ctx, l.undoSHA, limiterUndoScript, keys, args...)
		var done []int64
		if err == nil {
			done, err = parseUndoReply(v, len(idx))
		}
		if err != nil {
			if l.undoFailed != nil {
				l.undoFailed(fmt.Errorf("ratelimit: undo of %d counts: %w", len(idx), err))
			}
			return
		}
		for j, i := range idx {
			if done[j] != undoSkipped {
				uncount(&ds[i], &reqs[i], done[j] == undoDeleted)
			}
		}
	})
}

// uncount turns d, the decision of r as counted, into the decision as not counted, once the
// undo took r's cost back (and deleted the key, when gone).
func uncount(d *Decision, r *Request, gone bool) {
	if r.Limit.Algorithm == AlgorithmCredits {
		d.Remaining += r.Cost
		d.Limit = max(d.Limit, d.Remaining)
		return
	}
	d.Remaining = min(d.Remaining+r.Cost, d.Limit)
	switch r.Limit.Algorithm {
	case AlgorithmFixed:
		if gone {
			d.Reset = 0 // no window is open
		}
	case AlgorithmGCRA:
		d.Reset = max(d.Reset-time.Duration(r.Cost*r.Limit.interval())*time.Microsecond, 0)
		if gone {
			d.Reset = 0
		}
	}
}
