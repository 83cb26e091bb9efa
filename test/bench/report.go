package main

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// machine describes where the numbers were measured; they mean little without it.
type machine struct {
	cpus          int
	model, kernel string
	goVersion     string
	redisVersion  string
	// redisNotify is the private Redis's notify-keyspace-events ("" when off).
	redisNotify string
	// sidecarProcs is the sidecar's GOMAXPROCS when -sidecar-gomaxprocs set it, else 0.
	sidecarProcs int
	// topology is the private Redis (-topology), "" for the soak's one redis-server.
	topology string
	// sidecarFrom says what the sidecar was built from (gitState) or which binary it is.
	sidecarFrom string
}

func (m machine) String() string {
	s := fmt.Sprintf("%d × %s, Linux %s, %s, Redis %s", m.cpus, m.model, m.kernel, m.goVersion, m.redisVersion)
	if m.topology != "" {
		s += ", " + m.topology
	}
	if m.redisNotify != "" {
		s += " (notify-keyspace-events " + m.redisNotify + ")"
	}
	if m.sidecarProcs > 0 {
		s += fmt.Sprintf(", sidecar GOMAXPROCS=%d", m.sidecarProcs)
	}
	return s
}

// writeReport prints the markdown table, the CPU lines and the notes.
func writeReport(w io.Writer, results []*result, m machine, command, rawPath string) {
	fmt.Fprintf(w, "\n## extauthz benchmark\n\n")
	fmt.Fprintf(w, "Machine: %s  \nCommand: `%s`  \n", m, command)
	if m.sidecarFrom != "" {
		fmt.Fprintf(w, "Sidecar: %s  \n", m.sidecarFrom)
	}
	fmt.Fprintf(w, "Load average at the end (1, 5, 15 min; %d CPUs): %s  \n", m.cpus, loadAverage())
	fmt.Fprintf(w, "Raw loadgen and redis-benchmark lines: %s\n\n", rawPath)
	fmt.Fprintln(w, "Latencies in µs; rounds are averaged. rps and latencies include failed calls; errors is their")
	fmt.Fprintln(w, "share. The null server answers OK without work, with the sidecar's gRPC options: the ceiling")
	fmt.Fprintln(w, "on this machine, loadgen included. Δp50 is extauthz p50 − null p50 in ms, p99 ×null is extauthz")
	fmt.Fprintln(w, "p99 / null p99, both from the same run.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | extauthz rps | errors | p50 | p99 | null rps | null p50 | null p99 | Δp50 ms | p99 ×null | ratio extauthz/null | redis-benchmark EVALSHA rps (p50) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		realRPS, nullRPS := mean(r.real, "rps"), mean(r.null, "rps")
		redis := "—"
		if r.redis != nil {
			redis = fmt.Sprintf("%.0f (%.0f µs)", r.redis.rps, r.redis.p50MS*1000)
		}
		// Failed calls count in rps and latency as loadgen measured them, so their share is
		// shown beside the rate: a fast error is not a fast answer.
		errPct := 100 * mean(r.real, "errors") / mean(r.real, "requests")
		dp50, p99x := r.latencyVsNull()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.s.name,
			num(realRPS, "%.0f"), num(errPct, "%.2f%%"), num(mean(r.real, "p50_us"), "%.0f"), num(mean(r.real, "p99_us"), "%.0f"),
			num(nullRPS, "%.0f"), num(mean(r.null, "p50_us"), "%.0f"), num(mean(r.null, "p99_us"), "%.0f"),
			num(dp50, "%+.3f"), num(p99x, "%.2f"), num(realRPS/nullRPS, "%.2f"), redis)
	}
	for _, r := range results {
		if r.s.latencyTarget {
			fmt.Fprintf(w, "\n%s\n", latencyVerdict(r))
		}
	}

	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU µs per request (user+system from /proc/PID/stat over the measured phase, 10 ms ticks,")
	fmt.Fprintln(w, "so low-rate rows are the least precise; loadgen's own share shows what it took from the servers):")
	fmt.Fprintln(w)
	for _, r := range results {
		if len(r.real) == 0 && len(r.null) == 0 {
			continue
		}
		ext, red := mean(r.real, "cpu_us_per_req[extauthz]"), meanSum(r.real, "cpu_us_per_req[redis")
		null := mean(r.null, "cpu_us_per_req[null]")
		fmt.Fprintf(w, "- %s: extauthz %s + redis %s = %s; null %s; extauthz/null %s; loadgen %s / %s\n",
			r.s.name, num(ext, "%.1f"), num(red, "%.1f"), num(ext+red, "%.1f"), num(null, "%.1f"),
			num(ext/null, "%.2fx"),
			num(mean(r.real, "cpu_us_per_req[loadgen]"), "%.1f"), num(mean(r.null, "cpu_us_per_req[loadgen]"), "%.1f"))
	}

	var notes []string
	for _, r := range results {
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("- %s: %s", r.s.name, firstLine(n)))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nNotes:\n\n%s\n", strings.Join(notes, "\n"))
	}
}

// Issue 11 §7's latency target at a fixed 5,000 calls/s: extauthz's p50 within 0.15 ms of the
// null server's and its p99 within twice the null server's, both measured in the same run.
const (
	targetP50DeltaMS = 0.15
	targetP99Ratio   = 2.0
	// saneNullP50MS: a null server whose p50 at the target rate is above this did not keep
	// up (on a quiet two-core machine it answers in about 0.3 ms), so the machine was
	// saturated, by other processes most likely, and the row cannot be judged.
	saneNullP50MS = 1.0
)

// latencyVsNull is extauthz's p50 minus the null server's in ms and extauthz's p99 over the
// null server's, from the rounds' means; NaN when a side was not measured.
func (r *result) latencyVsNull() (p50DeltaMS, p99Ratio float64) {
	return (mean(r.real, "p50_us") - mean(r.null, "p50_us")) / 1000, mean(r.real, "p99_us") / mean(r.null, "p99_us")
}

// latencyVerdict is the line that says whether r met the latency target.
func latencyVerdict(r *result) string {
	dp50, p99x := r.latencyVsNull()
	prefix := fmt.Sprintf("Latency target (issue 11 §7), %s:", r.s.name)
	nullP50 := mean(r.null, "p50_us") / 1000
	dropped := mean(r.real, "dropped") + mean(r.null, "dropped")
	if nullP50 > saneNullP50MS || dropped > 0 {
		return fmt.Sprintf("%s not judged: the null server's own p50 was %.3f ms (sane: ≤ %.1f) and %s calls were dropped, so the machine did not keep the rate (load average %s). p50 − null p50 = %s ms, p99 / null p99 = %s.",
			prefix, nullP50, saneNullP50MS, num(dropped, "%.0f"), loadAverage(), num(dp50, "%+.3f"), num(p99x, "%.2f"))
	}
	judge := func(v float64, ok bool) string {
		switch {
		case math.IsNaN(v) || math.IsInf(v, 0):
			return "not measured"
		case ok:
			return "met"
		}
		return "MISSED"
	}
	return fmt.Sprintf("%s p50 − null p50 = %s ms (target ≤ %.2f: %s); p99 / null p99 = %s (target ≤ %.1f: %s).",
		prefix, num(dp50, "%+.3f"), targetP50DeltaMS, judge(dp50, dp50 <= targetP50DeltaMS),
		num(p99x, "%.2f"), targetP99Ratio, judge(p99x, p99x <= targetP99Ratio))
}

// loadAverage is the machine's 1, 5 and 15 minute load average, which says whether other
// processes competed with the run.
func loadAverage() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// num formats v, or a dash for a value that was not measured.
func num(v float64, format string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmt.Sprintf(format, v)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
