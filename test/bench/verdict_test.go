package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

var testThresholds = thresholds{
	warmup:          time.Minute,
	goroutineGrowth: 10,
	heapGrowth:      0.25,
	rssGrowth:       0.20,
	growthFloorMiB:  4,
	fdGrowth:        10,
	maxRSSMiB:       64,
	maxRedisClients: 21,
	maxErrorRate:    0.01,
}

// series is 60 samples 10 s apart (10 minutes) from f(i), with steady load.
func series(f func(i int, s *sample)) []sample {
	ss := make([]sample, 60)
	for i := range ss {
		s := &ss[i]
		s.at = time.Duration(i+1) * 10 * time.Second
		// Flat with noise: GC sawtooth on the heap, in-flight calls on the goroutines.
		s.rssMiB = 30 + float64(i%3)
		s.hwmMiB = 33
		s.heapMiB = 8 + float64(i%4)
		s.goroutines = 25 + float64(i%5)
		s.openFDs = 20
		s.redisClients = 9 + float64(i%2)
		s.requests, s.ok = 20000, 20000
		if f != nil {
			f(i, s)
		}
	}
	return ss
}

func failed(checks []check) map[string]string {
	m := map[string]string{}
	for _, c := range checks {
		if !c.ok {
			m[c.name] = c.detail
		}
	}
	return m
}

func TestVerdictFlatPasses(t *testing.T) {
	checks := verdict(series(nil), 33, testThresholds)
	if f := failed(checks); len(f) > 0 {
		t.Fatalf("a flat series failed: %v\n%s", f, formatChecks(checks))
	}
	if !strings.HasSuffix(formatChecks(checks), "verdict: PASS\n") {
		t.Fatalf("want PASS:\n%s", formatChecks(checks))
	}
}

func TestVerdictGrowth(t *testing.T) {
	for _, tc := range []struct {
		name string
		grow func(i int, s *sample)
		want string
	}{
		{"goroutine leak", func(i int, s *sample) { s.goroutines += float64(i) }, "goroutines flat"},
		{"heap leak", func(i int, s *sample) { s.heapMiB += 0.2 * float64(i) }, "heap in use flat"},
		{"rss leak", func(i int, s *sample) { s.rssMiB += 0.3 * float64(i); s.hwmMiB = s.rssMiB }, "RSS flat"},
		{"fd leak", func(i int, s *sample) { s.openFDs += float64(i) }, "open fds flat"},
		{"redis connections", func(i int, s *sample) { s.redisClients += float64(i) }, "Redis connections bounded"},
		{"rss ceiling", func(i int, s *sample) { s.hwmMiB = 70 }, "RSS ceiling"},
		{"errors", func(i int, s *sample) { s.errors = 300 }, "errors"},
		{"wrong answers", func(i int, s *sample) {
			if i == 59 {
				s.wrong = 1
			}
		}, "answers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checks := verdict(series(tc.grow), math.NaN(), testThresholds)
			f := failed(checks)
			if _, ok := f[tc.want]; !ok || len(f) != 1 {
				t.Fatalf("want only %q to fail, failed: %v\n%s", tc.want, f, formatChecks(checks))
			}
			if !strings.HasSuffix(formatChecks(checks), "verdict: FAIL\n") {
				t.Fatalf("want FAIL:\n%s", formatChecks(checks))
			}
		})
	}
}

// Growth that stays inside the limits passes: a few goroutines, heap and RSS growth under the
// floor, and anything at all during warm-up.
func TestVerdictTolerances(t *testing.T) {
	ss := series(func(i int, s *sample) {
		if s.at < time.Minute {
			s.heapMiB, s.goroutines, s.openFDs = 1, 5, 5 // still starting up
		}
		s.goroutines += float64(i / 10) // +5 over the run
		s.heapMiB += 0.05 * float64(i)  // +3 MiB, under the 4 MiB floor
	})
	if f := failed(verdict(ss, 33, testThresholds)); len(f) > 0 {
		t.Fatalf("growth within the limits failed: %v", f)
	}
}

// The peak passed in counts even when no sample saw it.
func TestVerdictPeakFromHWM(t *testing.T) {
	f := failed(verdict(series(nil), 65, testThresholds))
	if _, ok := f["RSS ceiling"]; !ok || len(f) != 1 {
		t.Fatalf("want only the RSS ceiling to fail, failed: %v", f)
	}
}

// Burst samples count for the bounds but not for flatness: the burst is meant to use more.
func TestVerdictBurst(t *testing.T) {
	ss := series(nil)
	for i := range 6 {
		ss = append(ss, sample{
			at: 10*time.Minute + time.Duration(i+1)*5*time.Second, burst: true,
			rssMiB: 50, hwmMiB: 50, heapMiB: 30, goroutines: 300, openFDs: 20, redisClients: 21,
			requests: 40000, ok: 40000,
		})
	}
	if f := failed(verdict(ss, 50, testThresholds)); len(f) > 0 {
		t.Fatalf("a burst within the bounds failed: %v", f)
	}
	ss[len(ss)-1].redisClients = 22
	if f := failed(verdict(ss, 50, testThresholds)); len(f) != 1 || f["Redis connections bounded"] == "" {
		t.Fatalf("want the Redis bound to fail on a burst sample, failed: %v", f)
	}
}

func TestVerdictTooFewSamples(t *testing.T) {
	ss := series(nil)[:7] // 70 s: one sample after the 1-minute warm-up
	f := failed(verdict(ss, 33, testThresholds))
	if _, ok := f["samples"]; !ok {
		t.Fatalf("want the sample count to fail, failed: %v", f)
	}
}

// Missing scrapes are gaps, not zeros: a third with no data at all fails, a few gaps do not.
func TestVerdictGaps(t *testing.T) {
	ss := series(func(i int, s *sample) {
		if i%7 == 0 {
			s.goroutines, s.heapMiB = math.NaN(), math.NaN()
		}
	})
	if f := failed(verdict(ss, 33, testThresholds)); len(f) > 0 {
		t.Fatalf("a few gaps failed: %v", f)
	}
	ss = series(func(i int, s *sample) {
		if i >= 40 {
			s.goroutines = math.NaN()
		}
	})
	if f := failed(verdict(ss, 33, testThresholds)); f["goroutines flat"] == "" {
		t.Fatalf("want goroutines to fail without data in the last third, failed: %v", f)
	}
}

func TestMedian(t *testing.T) {
	get := func(s sample) float64 { return s.heapMiB }
	mk := func(v ...float64) []sample {
		ss := make([]sample, len(v))
		for i, x := range v {
			ss[i].heapMiB = x
		}
		return ss
	}
	for _, tc := range []struct {
		in   []sample
		want float64
	}{
		{mk(3, 1, 2), 2},
		{mk(4, 1, 3, 2), 2.5},
		{mk(math.NaN(), 5), 5},
	} {
		if got := median(tc.in, get); got != tc.want {
			t.Errorf("median = %v, want %v", got, tc.want)
		}
	}
	if got := median(mk(math.NaN()), get); !math.IsNaN(got) {
		t.Errorf("median of nothing = %v, want NaN", got)
	}
}
