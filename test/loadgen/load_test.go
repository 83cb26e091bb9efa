package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// fakeCaller answers at once, except that call number stallAt (counting from 1) takes stall.
type fakeCaller struct {
	calls   atomic.Int64
	stallAt int64
	stall   time.Duration
}

func (f *fakeCaller) call(ctx context.Context) (outcome, error) {
	if f.calls.Add(1) == f.stallAt {
		select {
		case <-time.After(f.stall):
		case <-ctx.Done():
		}
	}
	return outcomeOK, nil
}

func newLoad(c caller, workers int, rate float64, warmup, dur time.Duration, budget int64) *load {
	callers := make([]caller, workers)
	for i := range callers {
		callers[i] = c
	}
	l := &load{callers: callers, timeout: time.Second, rate: rate}
	l.budget.Store(budget)
	l.begin = time.Now()
	l.measure = l.begin.Add(warmup)
	l.end = l.measure.Add(dur)
	return l
}

func TestOpenLoopChargesStalls(t *testing.T) {
	// One caller at 200/s: while the 100ms stall lasts, about 20 slots fall due and wait for it.
	// A load generator that timed each call from its actual send would record one slow call;
	// counting from the schedule records every delayed one.
	f := &fakeCaller{stallAt: 3, stall: 100 * time.Millisecond}
	l := newLoad(f, 1, 200, 0, 500*time.Millisecond, 1_000_000)
	total := l.run(context.Background())

	var slow uint64
	for i, n := range total.hist.counts {
		if low, _ := bucketRange(i); low >= 20_000 {
			slow += n
		}
	}
	if slow < 10 {
		t.Errorf("%d calls recorded 20ms or more, want at least 10 (the slots delayed by the stall)", slow)
	}
	if got, want := total.hist.n, uint64(100); got < want*9/10 || got > want {
		t.Errorf("%d calls recorded at 200/s for 500ms, want about %d", got, want)
	}
}

func TestBudgetBoundsCalls(t *testing.T) {
	tests := []struct {
		name string
		rate float64
	}{
		{name: "closed loop", rate: 0},
		{name: "open loop", rate: 10_000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeCaller{}
			l := newLoad(f, 4, tt.rate, 0, 5*time.Second, 50)
			start := time.Now()
			total := l.run(context.Background())
			if got := f.calls.Load(); got != 50 {
				t.Errorf("%d calls made, want the budget of 50", got)
			}
			if total.hist.n != 50 {
				t.Errorf("%d calls recorded, want 50", total.hist.n)
			}
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("run took %v after its budget was spent, want it to stop at once", elapsed)
			}
			if l.measuredEnd().Equal(l.end) {
				t.Error("measured phase not cut short when the budget ran out")
			}
		})
	}
}

func TestWarmupIsDiscarded(t *testing.T) {
	f := &fakeCaller{}
	// At 1000/s, a 200ms warm-up and a 300ms measured phase schedule 200 and 300 calls.
	l := newLoad(f, 2, 1000, 200*time.Millisecond, 300*time.Millisecond, 1_000_000)
	total := l.run(context.Background())
	if got := f.calls.Load(); got < 450 || got > 500 {
		t.Errorf("%d calls made, want about 500", got)
	}
	if got := total.hist.n; got != 300 {
		t.Errorf("%d calls recorded, want the 300 scheduled in the measured phase", got)
	}
}
