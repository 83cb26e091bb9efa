package main

import (
	"testing"
	"time"
)

func TestBucketIndexRoundTrip(t *testing.T) {
	// Every value must land in a bucket whose range holds it, buckets must be contiguous, and
	// the midpoint must be within 1/128 of the value: the precision hist.go promises.
	prev := -1
	for us := int64(0); us <= histMaxUS; us += 1 + us/500 {
		i := bucketIndex(us)
		// The step is finer than any bucket, so the index moves up by at most one.
		if i != prev && i != prev+1 {
			t.Fatalf("bucketIndex(%d) = %d after bucket %d: not contiguous", us, i, prev)
		}
		prev = i
		low, width := bucketRange(i)
		if us < low || us >= low+width {
			t.Fatalf("bucketIndex(%d) = %d with range [%d, %d)", us, i, low, low+width)
		}
		mid := low + width/2
		if diff := abs(mid - us); diff*128 > max(us, 1) && width > 1 {
			t.Fatalf("value %d reported as %d: error %d over 1/128", us, mid, diff)
		}
	}
	if got, want := bucketIndex(histMaxUS), numBuckets-1; got != want {
		t.Errorf("bucketIndex(histMaxUS) = %d, want the last bucket %d", got, want)
	}
}

func TestQuantile(t *testing.T) {
	tests := []struct {
		name   string
		values []time.Duration // recorded once each
		q      float64
		want   int64 // microseconds
		tol    int64 // allowed absolute error
	}{
		{name: "empty", q: 0.5, want: 0},
		{name: "one value", values: []time.Duration{42 * time.Microsecond}, q: 0.99, want: 42},
		{name: "exact below 128us", values: durations(1, 100, time.Microsecond), q: 0.5, want: 50},
		{name: "p90 of 1..100us", values: durations(1, 100, time.Microsecond), q: 0.9, want: 90},
		{name: "p100 is the max", values: durations(1, 100, time.Microsecond), q: 1, want: 100},
		{name: "p50 of 1..10000us", values: durations(1, 10000, time.Microsecond), q: 0.5, want: 5000, tol: 5000 / 128},
		{name: "p99 of 1..10000us", values: durations(1, 10000, time.Microsecond), q: 0.99, want: 9900, tol: 9900 / 128},
		{name: "p999 of 1..10000us", values: durations(1, 10000, time.Microsecond), q: 0.999, want: 9990, tol: 9990 / 128},
		{name: "sub-microsecond counts as 0", values: []time.Duration{500 * time.Nanosecond}, q: 0.5, want: 0},
		{name: "never above the max", values: []time.Duration{130 * time.Microsecond}, q: 0.5, want: 130},
		{name: "clamped at 10s", values: []time.Duration{time.Minute}, q: 0.5, want: histMaxUS},
		{name: "seconds", values: []time.Duration{3 * time.Second, 3 * time.Second}, q: 0.5, want: 3_000_000, tol: 3_000_000 / 128},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistogram()
			for _, d := range tt.values {
				h.record(d)
			}
			got := h.quantile(tt.q)
			if abs(got-tt.want) > tt.tol {
				t.Errorf("quantile(%v) = %d, want %d ± %d", tt.q, got, tt.want, tt.tol)
			}
		})
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	a, b, both := newHistogram(), newHistogram(), newHistogram()
	for i, d := range durations(1, 20000, 7*time.Microsecond) {
		if i%3 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
		both.record(d)
	}
	b.record(time.Hour)
	both.record(time.Hour)
	a.merge(b)
	if a.n != both.n || a.sumUS != both.sumUS || a.maxUS != both.maxUS || a.clamped != both.clamped {
		t.Fatalf("merged totals n=%d sum=%d max=%d clamped=%d, want n=%d sum=%d max=%d clamped=%d",
			a.n, a.sumUS, a.maxUS, a.clamped, both.n, both.sumUS, both.maxUS, both.clamped)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		if got, want := a.quantile(q), both.quantile(q); got != want {
			t.Errorf("merged quantile(%v) = %d, want %d", q, got, want)
		}
	}
}

// durations returns from*unit, (from+1)*unit, ..., to*unit.
func durations(from, to int, unit time.Duration) []time.Duration {
	var ds []time.Duration
	for i := from; i <= to; i++ {
		ds = append(ds, time.Duration(i)*unit)
	}
	return ds
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
