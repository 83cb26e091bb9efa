package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// sample is one soak measurement. Gauges that could not be read are NaN, so that a failed
// scrape shows as a gap rather than as a zero that looks like a drop.
type sample struct {
	at    time.Duration // since the load started
	burst bool          // taken during the closed-loop burst, not the steady phase

	rssMiB, hwmMiB float64 // the sidecar's VmRSS and VmHWM (peak RSS so far)
	heapMiB        float64 // go_memstats_heap_inuse_bytes
	goroutines     float64 // go_goroutines
	openFDs        float64 // process_open_fds
	redisClients   float64 // connected_clients of the private redis-server, the sampler's own included
	redisMemMiB    float64 // used_memory of the private redis-server (informational)

	// The load of the interval that ended with this sample.
	rps, p50ms, p99ms                           float64
	requests, ok, over, denied, errors, dropped uint64
	wrong                                       uint64 // answered, but not as the request's kind should be
}

// thresholds are the soak verdict's limits. The flatness checks compare the last third of the
// steady samples taken after warm-up with the first third: the medians of heap, RSS and open
// descriptors, because a sample that lands just before a GC cycle is noise, not a trend; and
// the fewest goroutines seen in each third, because every call in flight holds a goroutine or
// two, so a slow patch of a shared machine raises the count of a whole third without anything
// leaking, while a leak raises even the quietest sample.
type thresholds struct {
	// warmup: samples before it fill caches, pools and counters and are not compared.
	warmup time.Duration
	// goroutines may grow by this many: a leak of one goroutine per request or per minute
	// shows as hundreds or more; a few come and go with timers and connection handling.
	goroutineGrowth float64
	// heapGrowth and rssGrowth are fractions (0.25 is 25%) of the first third's median. Growth
	// below growthFloorMiB never fails, so that a few MiB of GC noise on a small heap cannot.
	heapGrowth, rssGrowth, growthFloorMiB float64
	// fdGrowth: open descriptors may grow by this many (a few connections being replaced).
	fdGrowth float64
	// maxRSSMiB is issue 4's ceiling on the sidecar's RSS, checked against every sample and
	// the kernel's peak (VmHWM), burst included.
	maxRSSMiB float64
	// maxRedisClients bounds connected_clients in every sample: the sidecar's pool size, its
	// pipelined decision connections, the sampler's one connection and the cache's keyspace
	// subscription.
	maxRedisClients float64
	// maxErrorRate is the share of calls that may fail (a gRPC error, a timeout, a Check
	// answered error_response), over the run. Failures are not growth, but a sidecar that
	// fails more than now and then is not in a steady state worth judging. On a busy shared
	// machine Redis misses the sidecar's 25 ms deadline now and then, hence not zero. A call
	// answered wrongly (a valid session denied, an anonymous call allowed) always fails.
	maxErrorRate float64
}

// check is one line of the verdict.
type check struct {
	name   string
	ok     bool
	detail string
}

// verdict judges the samples. peakMiB is the sidecar's VmHWM at the end (NaN if unknown). It is
// a pure function of its arguments, so that the tests can feed it made-up series.
func verdict(samples []sample, peakMiB float64, th thresholds) []check {
	var steady []sample
	for _, s := range samples {
		if !s.burst && s.at >= th.warmup {
			steady = append(steady, s)
		}
	}
	var checks []check
	add := func(name string, ok bool, format string, a ...any) {
		checks = append(checks, check{name: name, ok: ok, detail: fmt.Sprintf(format, a...)})
	}

	// Flatness needs at least three samples after warm-up, one per third.
	third := len(steady) / 3
	if third < 1 {
		add("samples", false, "%d steady samples after the %v warm-up, at least 3 needed: run longer or sample more often", len(steady), th.warmup)
	} else {
		first, last := steady[:third], steady[len(steady)-third:]
		growth := func(name, stat string, get func(sample) float64, limit func(base float64) float64, unit string) {
			agg := median
			if stat == "fewest" {
				agg = least
			}
			a, b := agg(first, get), agg(last, get)
			if math.IsNaN(a) || math.IsNaN(b) {
				add(name, false, "no data in the first or the last third")
				return
			}
			lim := limit(a)
			add(name, b-a <= lim, "%s %s in the first third, %s in the last (%+.1f%s, limit +%.1f%s)",
				stat, fmtNum(a, unit), fmtNum(b, unit), b-a, unit, lim, unit)
		}
		relative := func(frac float64) func(float64) float64 {
			return func(base float64) float64 { return max(frac*base, th.growthFloorMiB) }
		}
		absolute := func(n float64) func(float64) float64 { return func(float64) float64 { return n } }
		growth("goroutines flat", "fewest", func(s sample) float64 { return s.goroutines }, absolute(th.goroutineGrowth), "")
		growth("heap in use flat", "median", func(s sample) float64 { return s.heapMiB }, relative(th.heapGrowth), " MiB")
		growth("RSS flat", "median", func(s sample) float64 { return s.rssMiB }, relative(th.rssGrowth), " MiB")
		growth("open fds flat", "median", func(s sample) float64 { return s.openFDs }, absolute(th.fdGrowth), "")
	}

	// Bounds hold in every sample, warm-up and burst included.
	maxOf := func(get func(sample) float64) float64 {
		m := math.NaN()
		for _, s := range samples {
			if v := get(s); !math.IsNaN(v) && !(v <= m) {
				m = v
			}
		}
		return m
	}
	if c := maxOf(func(s sample) float64 { return s.redisClients }); math.IsNaN(c) {
		add("Redis connections bounded", false, "no INFO clients sample")
	} else {
		add("Redis connections bounded", c <= th.maxRedisClients, "at most %.0f connected_clients (limit %.0f)", c, th.maxRedisClients)
	}
	peak := maxOf(func(s sample) float64 { return max(s.rssMiB, s.hwmMiB) })
	if !math.IsNaN(peakMiB) && !(peakMiB <= peak) {
		peak = peakMiB
	}
	if math.IsNaN(peak) {
		add("RSS ceiling", false, "no RSS sample")
	} else {
		add("RSS ceiling", peak < th.maxRSSMiB, "peak RSS %.1f MiB (limit %.0f MiB)", peak, th.maxRSSMiB)
	}

	var requests, errs, wrong uint64
	for _, s := range samples {
		requests += s.requests
		errs += s.errors
		wrong += s.wrong
	}
	if requests == 0 {
		add("errors", false, "no calls answered")
	} else {
		rate := float64(errs) / float64(requests)
		add("errors", rate <= th.maxErrorRate, "%d of %d calls failed (%.3f%%, limit %.3f%%)",
			errs, requests, 100*rate, 100*th.maxErrorRate)
		add("answers", wrong == 0, "%d calls answered wrongly for their kind", wrong)
	}
	return checks
}

// passed reports whether every check passed.
func passed(checks []check) bool {
	for _, c := range checks {
		if !c.ok {
			return false
		}
	}
	return true
}

// median of the non-NaN values of get over ss; NaN if there are none.
func median(ss []sample, get func(sample) float64) float64 {
	var v []float64
	for _, s := range ss {
		if x := get(s); !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// least is the smallest non-NaN value of get over ss; NaN if there are none.
func least(ss []sample, get func(sample) float64) float64 {
	lo, _ := span(ss, get)
	return lo
}

func fmtNum(v float64, unit string) string {
	if unit == "" {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f%s", v, unit)
}

// formatChecks renders the verdict, one check a line, and PASS or FAIL.
func formatChecks(checks []check) string {
	var b strings.Builder
	for _, c := range checks {
		mark := "ok  "
		if !c.ok {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s %-26s %s\n", mark, c.name, c.detail)
	}
	if passed(checks) {
		b.WriteString("verdict: PASS\n")
	} else {
		b.WriteString("verdict: FAIL\n")
	}
	return b.String()
}

// span is the least and greatest non-NaN value of get over ss (NaN, NaN if none).
func span(ss []sample, get func(sample) float64) (lo, hi float64) {
	lo, hi = math.NaN(), math.NaN()
	for _, s := range ss {
		v := get(s)
		if math.IsNaN(v) {
			continue
		}
		if math.IsNaN(lo) || v < lo {
			lo = v
		}
		if math.IsNaN(hi) || v > hi {
			hi = v
		}
	}
	return lo, hi
}
