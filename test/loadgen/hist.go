package main

import (
	"math"
	"math/bits"
	"time"
)

// The histogram is log-linear like HdrHistogram: every microsecond below linearMax has its own
// bucket, and above that each power of two is split into subCount buckets, so a reported value
// is within 1/(2*subCount) (under 1%) of every value in its bucket. A fixed array keeps recording
// to an index computation and an increment.
const (
	subBits   = 6
	subCount  = 1 << subBits
	linearMax = 2 * subCount // values below this are exact
	// histMaxUS is the largest recordable latency (10 s); slower calls are clamped to it and
	// counted in clamped, since the per-call timeout normally stops them long before.
	histMaxUS = 10_000_000
)

// numBuckets covers every value up to histMaxUS: the linear part, then subCount buckets for each
// power of two from linearMax up to the one holding histMaxUS.
var numBuckets = bucketIndex(histMaxUS) + 1

// histogram counts latencies in microseconds. Each worker owns one, so recording takes no lock;
// merge adds the workers' histograms together once they have stopped.
type histogram struct {
	counts  []uint64
	n       uint64 // values recorded
	sumUS   uint64 // their sum, for the mean
	maxUS   int64  // the largest value recorded, after clamping
	clamped uint64 // values above histMaxUS
}

func newHistogram() *histogram {
	return &histogram{counts: make([]uint64, numBuckets)}
}

// bucketIndex maps a value in [0, histMaxUS] to its bucket.
func bucketIndex(us int64) int {
	v := uint64(us)
	if v < linearMax {
		return int(v)
	}
	// exp is the position of the top bit (v is in [2^exp, 2^(exp+1))); shifting so that the top
	// subBits+1 bits remain leaves a value in [subCount, 2*subCount), whose low subBits bits
	// pick the bucket within that power of two.
	exp := bits.Len64(v) - 1
	shift := exp - subBits
	sub := int(v>>shift) - subCount
	return linearMax + (exp-subBits-1)*subCount + sub
}

// bucketRange is the inverse of bucketIndex: the lowest value in bucket i and the bucket width.
func bucketRange(i int) (low, width int64) {
	if i < linearMax {
		return int64(i), 1
	}
	j := i - linearMax
	exp := j/subCount + subBits + 1
	shift := exp - subBits
	sub := int64(j % subCount)
	return (subCount + sub) << shift, 1 << shift
}

// record adds one latency.
func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	if us > histMaxUS {
		us = histMaxUS
		h.clamped++
	}
	h.counts[bucketIndex(us)]++
	h.n++
	h.sumUS += uint64(us)
	if us > h.maxUS {
		h.maxUS = us
	}
}

// merge adds o's counts into h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sumUS += o.sumUS
	h.clamped += o.clamped
	if o.maxUS > h.maxUS {
		h.maxUS = o.maxUS
	}
}

// quantile returns the latency in microseconds at or below which a fraction q of the values lie
// (the value of rank ceil(q*n), as HdrHistogram does), reported as the middle of its bucket and
// never above the recorded maximum. It returns 0 for an empty histogram.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	rank = min(rank, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketRange(i)
			return min(low+width/2, h.maxUS)
		}
	}
	return h.maxUS
}

// meanUS is the mean latency in microseconds, 0 for an empty histogram.
func (h *histogram) meanUS() float64 {
	if h.n == 0 {
		return 0
	}
	return float64(h.sumUS) / float64(h.n)
}
