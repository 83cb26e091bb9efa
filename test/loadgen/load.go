package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// tally is one worker's results. Only its worker writes it while the load runs, so recording
// needs no lock; the tallies are merged after every worker has returned.
type tally struct {
	hist                     *histogram
	ok, over, denied, errors uint64
	dropped                  uint64 // open loop: measured slots never sent because the run ended
	firstErr                 error
}

func (t *tally) add(latency time.Duration, o outcome, err error) {
	t.hist.record(latency)
	switch o {
	case outcomeOK:
		t.ok++
	case outcomeOver:
		t.over++
	case outcomeDenied:
		t.denied++
	default:
		t.errors++
		if t.firstErr == nil {
			t.firstErr = err
		}
	}
}

func (t *tally) merge(o *tally) {
	t.hist.merge(o.hist)
	t.ok += o.ok
	t.over += o.over
	t.denied += o.denied
	t.errors += o.errors
	t.dropped += o.dropped
	if t.firstErr == nil {
		t.firstErr = o.firstErr
	}
}

// load drives the callers through a warm-up phase [begin, measure) and a measured phase
// [measure, end). A call belongs to the phase in which it started (open loop: in which it was
// scheduled); warm-up calls are made but not recorded.
type load struct {
	callers []caller
	timeout time.Duration
	rate    float64 // calls per second across all callers; 0 is closed loop

	begin, measure, end time.Time

	// budget is how many calls may still start, warm-up included: the hard bound on a run.
	budget atomic.Int64
	// nextSlot is the next open-loop slot to be claimed.
	nextSlot atomic.Int64
	// cutShort is when the run stopped early (budget spent or interrupted), in Unix nanoseconds;
	// 0 if it ran to end.
	cutShort atomic.Int64
}

// run starts one worker per caller and returns their merged tally once all have stopped.
func (l *load) run(ctx context.Context) *tally {
	stopWatch := context.AfterFunc(ctx, func() { l.stopEarly(time.Now()) })
	defer stopWatch()

	tallies := make([]*tally, len(l.callers))
	var wg sync.WaitGroup
	for i, c := range l.callers {
		t := &tally{hist: newHistogram()}
		tallies[i] = t
		wg.Go(func() {
			if l.rate > 0 {
				l.open(ctx, c, t)
			} else {
				l.closed(ctx, c, t)
			}
		})
	}
	wg.Wait()
	total := &tally{hist: newHistogram()}
	for _, t := range tallies {
		total.merge(t)
	}
	return total
}

// measuredEnd is when the measured phase really ended: end, or earlier if the run was cut short.
func (l *load) measuredEnd() time.Time {
	if ns := l.cutShort.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return l.end
}

func (l *load) stopEarly(at time.Time) {
	l.cutShort.CompareAndSwap(0, at.UnixNano())
}

func (l *load) callOnce(ctx context.Context, c caller) (outcome, error) {
	ctx, cancel := context.WithTimeout(ctx, l.timeout)
	defer cancel()
	return c.call(ctx)
}

// closed makes calls back to back: the next starts when the previous returns, so the offered
// load is whatever the server sustains.
func (l *load) closed(ctx context.Context, c caller, t *tally) {
	for ctx.Err() == nil {
		start := time.Now()
		if !start.Before(l.end) {
			return
		}
		if l.budget.Add(-1) < 0 {
			l.stopEarly(start)
			return
		}
		o, err := l.callOnce(ctx, c)
		if ctx.Err() != nil {
			return // interrupted: the failure says nothing about the server
		}
		if start.Before(l.measure) {
			continue
		}
		t.add(time.Since(start), o, err)
	}
}

// open makes calls on a fixed schedule whatever the server does: slot k is due at
// begin + k/rate, and whichever worker is free claims the next slot, as a new request from
// Envoy goes to whichever stream is free rather than waiting for a particular earlier one. The
// schedule is computed rather than read from a time.Ticker because a Ticker drops ticks when its
// reader is late, which would silently skip exactly the calls a slow server delayed.
//
// Latency avoids coordinated omission: a slot that was already due when a worker claimed it
// waited because every worker was busy, so its latency counts from the slot's time. A slot
// claimed ahead of time counts from the actual send, so that the Go timer's wake-up delay (up to
// a millisecond on an idle Linux machine) is not charged to the server.
func (l *load) open(ctx context.Context, c caller, t *tally) {
	interval := float64(time.Second) / l.rate
	// Slots still owed when the drain deadline passes are dropped, so a stalled server cannot
	// keep the run going for as long as its backlog.
	drainBy := l.end.Add(l.timeout)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		k := l.nextSlot.Add(1) - 1
		due := l.begin.Add(time.Duration(float64(k) * interval))
		if !due.Before(l.end) {
			return
		}
		now := time.Now()
		if now.After(drainBy) {
			if !due.Before(l.measure) {
				t.dropped++
			}
			continue
		}
		start := due
		if due.After(now) {
			timer.Reset(due.Sub(now))
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			start = time.Now()
		}
		if l.budget.Add(-1) < 0 {
			l.stopEarly(due)
			return
		}
		o, err := l.callOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if due.Before(l.measure) {
			continue
		}
		t.add(time.Since(start), o, err)
	}
}
