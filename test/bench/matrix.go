package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// scenario is one row of the report: a loadgen setting run against the sidecar and the null
// server alternately, rounds times each.
type scenario struct {
	name        string
	rounds      int
	dur, warmup time.Duration
	c           int
	keys        int
	descriptors int
	rate        float64 // 0 is closed loop
	domain      string
	redisBench  bool // also measure redis-benchmark at the same concurrency and key count
	// check runs ext_authz Check on a session route with one per-principal limit instead of
	// ShouldRateLimit.
	check bool
	// optional, with check, asks about the auth: optional route instead (benchConfig's
	// bench-optional), with the session cookie unless anonymous: the cost of optional sign-in
	// against the session route's row.
	optional, anonymous bool
	// latencyTarget: the report judges the row against issue 11 §7's latency target.
	latencyTarget bool
}

// conns is the number of gRPC connections loadgen spreads its callers over, like the handful
// of connections a few Envoy workers keep to the sidecar.
const conns = 4

// scenarios returns the matrix for a mode. Full takes about 6.7 minutes of load, after the
// warm-up; quick takes 42 seconds of load, warm-ups included (plus one redis-benchmark per
// ShouldRateLimit row), so it fits in about a minute. Both end with the fixed 5,000/s row that
// the report judges against issue 11 §7's latency target.
func scenarios(mode string) []scenario {
	one := func(c, keys int, dur, warmup time.Duration, rounds int) scenario {
		return scenario{
			name:   fmt.Sprintf("ShouldRateLimit 1 descriptor, c=%d keys=%d", c, keys),
			rounds: rounds, dur: dur, warmup: warmup,
			c: c, keys: keys, descriptors: 1, domain: "bench", redisBench: true,
		}
	}
	check := func(c int, dur, warmup time.Duration, rounds int) scenario {
		return scenario{
			name:   fmt.Sprintf("Check session route + 1 limit, c=%d", c),
			rounds: rounds, dur: dur, warmup: warmup,
			c: c, keys: 1, descriptors: 1, domain: "bench", check: true,
		}
	}
	// optional is the auth: optional route: anonymous callers (no cookie, so no Redis call for
	// identity: only the limit, counted by the client address) or signed-in ones.
	optional := func(anonymous bool, c int, dur, warmup time.Duration, rounds int) scenario {
		who := "session"
		if anonymous {
			who = "anonymous"
		}
		return scenario{
			name:   fmt.Sprintf("Check optional route + 1 limit, %s, c=%d", who, c),
			rounds: rounds, dur: dur, warmup: warmup,
			c: c, keys: 1, descriptors: 1, domain: "bench", check: true, optional: true, anonymous: anonymous,
		}
	}
	fixed5000 := func(dur, warmup time.Duration) scenario {
		return scenario{
			name:   "fixed 5000/s, c=64 keys=10000 (latency)",
			rounds: 1, dur: dur, warmup: warmup,
			c: 64, keys: 10000, descriptors: 1, rate: 5000, domain: "bench", latencyTarget: true,
		}
	}
	if mode == "quick" {
		return []scenario{
			one(128, 1, 3*time.Second, time.Second, 1),
			one(32, 10000, 3*time.Second, time.Second, 1),
			check(128, 3*time.Second, time.Second, 1),
			optional(true, 128, 3*time.Second, time.Second, 1),
			fixed5000(4*time.Second, time.Second),
		}
	}
	const d, w = 10 * time.Second, 2 * time.Second
	return []scenario{
		one(32, 1, d, w, 2),
		one(128, 1, d, w, 2),
		one(32, 10000, d, w, 2),
		one(128, 10000, d, w, 2),
		check(128, d, w, 2),
		{
			name:   "ShouldRateLimit 3 descriptors, c=128 keys=10000",
			rounds: 1, dur: d, warmup: w,
			c: 128, keys: 10000, descriptors: 3, domain: "bench",
		},
		fixed5000(d, w),
		{
			name:   "fixed 1000/s, c=64 keys=10000 (CPU)",
			rounds: 1, dur: d, warmup: w,
			c: 64, keys: 10000, descriptors: 1, rate: 1000, domain: "bench",
		},
		{
			// Every call after the first is over the limit: the cost of saying no.
			name:   "over limit, c=128 keys=1 (domain bench_over)",
			rounds: 1, dur: 5 * time.Second, warmup: time.Second,
			c: 128, keys: 1, descriptors: 1, domain: "bench_over",
		},
		// Last, so that on a slow machine it is the row the budget skips, never the latency one.
		optional(true, 128, d, w, 1),
	}
}

// runOverhead is what one loadgen run costs beyond its warm-up and measured phase: process
// start, dialing, and the drain after the last call (a few hundred milliseconds in practice).
const runOverhead = time.Second

// redisBenchAllowance is the time kept for one redis-benchmark run (redisN calls take about
// three seconds on a two-core machine).
const redisBenchAllowance = 6 * time.Second

// cost is how long the scenario needs, as planned against the time budget.
func (s scenario) cost() time.Duration {
	d := time.Duration(2*s.rounds) * (s.warmup + s.dur + runOverhead)
	if s.redisBench {
		d += redisBenchAllowance
	}
	return d
}

// target is a server that loadgen measures.
type target struct {
	name string // "extauthz" or "null"
	addr string
	pids string // loadgen -pids
}

// summary is one parsed loadgen line.
type summary struct {
	line   string
	fields map[string]string
}

func parseSummary(line string) (summary, error) {
	s := summary{line: line, fields: map[string]string{}}
	for f := range strings.FieldsSeq(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return s, fmt.Errorf("loadgen summary: field %q is not key=value", f)
		}
		s.fields[k] = v
	}
	if _, ok := s.fields["rps"]; !ok {
		return s, fmt.Errorf("loadgen summary: no rps in %q", line)
	}
	return s, nil
}

// num is a numeric field, NaN when missing or unparsable so that a gap shows in the report
// instead of a made-up zero.
func (s summary) num(key string) float64 {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s.fields[key], "s"), 64)
	if err != nil {
		return math.NaN()
	}
	return v
}

// loadgenArgs are the flags for one run of s against t.
func (s scenario) loadgenArgs(t target) []string {
	if s.check {
		path, cookie := "/api/items", benchCookie
		if s.optional {
			path = "/feed/items"
		}
		if s.anonymous {
			cookie = ""
		}
		return []string{
			"-addr", t.addr, "-rpc", "check", "-cookie", cookie, "-path", path,
			"-c", strconv.Itoa(s.c), "-conns", strconv.Itoa(conns),
			"-d", s.dur.String(), "-warmup", s.warmup.String(),
			"-rate", strconv.FormatFloat(s.rate, 'f', -1, 64),
			"-timeout", "1s", "-pids", t.pids,
		}
	}
	return []string{
		"-addr", t.addr, "-rpc", "ratelimit",
		"-c", strconv.Itoa(s.c), "-conns", strconv.Itoa(conns),
		"-d", s.dur.String(), "-warmup", s.warmup.String(),
		"-rate", strconv.FormatFloat(s.rate, 'f', -1, 64),
		"-keys", strconv.Itoa(s.keys), "-descriptors", strconv.Itoa(s.descriptors),
		"-domain", s.domain, "-timeout", "1s", "-pids", t.pids,
	}
}

// result is everything measured for one scenario.
type result struct {
	s          scenario
	real, null []summary
	redis      *redisBenchResult
	notes      []string // failures and skips, printed under the table
}

// runScenario runs s against the sidecar and the null server alternately (A B A B), so that a
// slow patch of a noisy machine hurts both sides rather than one, then redis-benchmark.
// warmUp runs a few seconds of untimed load on each server before the matrix. Both start
// cold (heap size, goroutine stacks, Redis connections), and without it the first round of
// the first scenario measured the sidecar's warm-up: 11.2k calls/s against 14.9k in round 2.
func (b *bench) warmUp(ctx context.Context) {
	s := scenario{c: 32, keys: 1000, descriptors: 1, domain: "bench", dur: 2 * time.Second, warmup: time.Second}
	for _, t := range []target{b.real, b.null} {
		if ctx.Err() != nil {
			return
		}
		args := s.loadgenArgs(t)
		fmt.Fprintf(b.raw, "# warm-up, %s, not measured\n$ loadgen %s\n", t.name, shellQuote(args))
		out, _, err := runBounded(ctx, s.warmup+s.dur+30*time.Second, b.loadgen, args...)
		fmt.Fprintln(b.raw, strings.TrimSpace(out))
		if err != nil {
			b.progress("warm-up %s: %v", t.name, err)
			continue
		}
		b.progress("warm-up %s: done (not measured)", t.name)
	}
}

func (b *bench) runScenario(ctx context.Context, s scenario) *result {
	r := &result{s: s}
	if left := time.Until(b.deadline); s.cost() > left {
		r.notes = append(r.notes, fmt.Sprintf("skipped: needs %v, %v of the time budget left", s.cost().Round(time.Second), left.Round(time.Second)))
		b.progress("%s: %s", s.name, r.notes[0])
		return r
	}
	for round := 1; round <= s.rounds; round++ {
		for _, t := range []target{b.real, b.null} {
			if ctx.Err() != nil {
				r.notes = append(r.notes, "interrupted")
				return r
			}
			args := s.loadgenArgs(t)
			fmt.Fprintf(b.raw, "# %s, round %d, %s\n$ loadgen %s\n", s.name, round, t.name, shellQuote(args))
			out, stderr, err := runBounded(ctx, s.warmup+s.dur+30*time.Second, b.loadgen, args...)
			line := strings.TrimSpace(out)
			if line != "" {
				fmt.Fprintln(b.raw, line)
			}
			for l := range strings.Lines(stderr) {
				fmt.Fprintf(b.raw, "# stderr: %s", l)
			}
			if stderr != "" {
				fmt.Fprintln(b.raw)
			}
			if err != nil {
				b.progress("%s round %d %s: %v", s.name, round, t.name, err)
				r.notes = append(r.notes, fmt.Sprintf("round %d %s: %v", round, t.name, err))
				continue
			}
			sum, err := parseSummary(line)
			if err != nil {
				r.notes = append(r.notes, err.Error())
				continue
			}
			if e := sum.num("errors"); e > 0 {
				r.notes = append(r.notes, fmt.Sprintf("round %d %s: %s", round, t.name, firstLine(stderr)))
			}
			if t.name == "null" {
				r.null = append(r.null, sum)
			} else {
				r.real = append(r.real, sum)
			}
			b.progress("%s round %d %s: rps=%s p50_us=%s p99_us=%s ok=%s over=%s errors=%s",
				s.name, round, t.name, sum.fields["rps"], sum.fields["p50_us"], sum.fields["p99_us"],
				sum.fields["ok"], sum.fields["over"], sum.fields["errors"])
		}
	}
	if s.redisBench && ctx.Err() == nil {
		rb, err := b.redis.benchmarkEvalSHA(ctx, b.sha, s.c, s.keys, b.redisN)
		fmt.Fprintf(b.raw, "# %s, redis-benchmark\n$ %s\n%s\n", s.name, rb.command, rb.line)
		if err != nil {
			r.notes = append(r.notes, err.Error())
		} else {
			r.redis = &rb
			b.progress("%s redis-benchmark: rps=%.0f p50=%.3fms", s.name, rb.rps, rb.p50MS)
		}
	}
	return r
}

// meanSum averages, over the runs, the sum of the fields whose name starts with prefix (the
// CPU of every Redis node: cpu_us_per_req[redis0], [redis1], ...); NaN if there are no runs,
// a run has no such field, or one was not measured (-1).
func meanSum(runs []summary, prefix string) float64 {
	if len(runs) == 0 {
		return math.NaN()
	}
	var total float64
	for _, r := range runs {
		var sum float64
		n := 0
		for k := range r.fields {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			v := r.num(k)
			if math.IsNaN(v) || v < 0 {
				return math.NaN()
			}
			sum += v
			n++
		}
		if n == 0 {
			return math.NaN()
		}
		total += sum
	}
	return total / float64(len(runs))
}

// mean averages a field over the runs, NaN if there are none.
func mean(runs []summary, key string) float64 {
	if len(runs) == 0 {
		return math.NaN()
	}
	var sum float64
	for _, r := range runs {
		sum += r.num(key)
	}
	return sum / float64(len(runs))
}
