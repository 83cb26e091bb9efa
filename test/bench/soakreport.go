package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
)

// The sample columns, in the order of the printed lines and the CSV.
var sampleColumns = []struct {
	name, format string
	width        int
	get          func(sample) any
}{
	{"t", "%s", 6, func(s sample) any { return s.at.String() }},
	{"phase", "%s", 6, func(s sample) any { return map[bool]string{false: "steady", true: "burst"}[s.burst] }},
	{"rss_MiB", "%.1f", 8, func(s sample) any { return s.rssMiB }},
	{"hwm_MiB", "%.1f", 8, func(s sample) any { return s.hwmMiB }},
	{"heap_MiB", "%.1f", 9, func(s sample) any { return s.heapMiB }},
	{"goroutines", "%.0f", 10, func(s sample) any { return s.goroutines }},
	{"fds", "%.0f", 4, func(s sample) any { return s.openFDs }},
	{"redis_clients", "%.0f", 13, func(s sample) any { return s.redisClients }},
	{"redis_MiB", "%.1f", 9, func(s sample) any { return s.redisMemMiB }},
	{"rps", "%.0f", 6, func(s sample) any { return s.rps }},
	{"ok", "%d", 7, func(s sample) any { return s.ok }},
	{"over", "%d", 6, func(s sample) any { return s.over }},
	{"denied", "%d", 6, func(s sample) any { return s.denied }},
	{"errors", "%d", 6, func(s sample) any { return s.errors }},
	{"wrong", "%d", 5, func(s sample) any { return s.wrong }},
	{"dropped", "%d", 7, func(s sample) any { return s.dropped }},
	{"p50_ms", "%.2f", 7, func(s sample) any { return s.p50ms }},
	{"p99_ms", "%.2f", 7, func(s sample) any { return s.p99ms }},
}

func writeSampleHeader(w, csv io.Writer) {
	var line, c []string
	for _, col := range sampleColumns {
		line = append(line, fmt.Sprintf("%*s", col.width, col.name))
		c = append(c, col.name)
	}
	fmt.Fprintln(w, strings.Join(line, " "))
	fmt.Fprintln(csv, strings.Join(c, ","))
}

func writeSample(w, csv io.Writer, s sample) {
	var line, c []string
	for _, col := range sampleColumns {
		v := col.get(s)
		text := fmt.Sprintf(col.format, v)
		if f, ok := v.(float64); ok && math.IsNaN(f) {
			text = "—"
		}
		line = append(line, fmt.Sprintf("%*s", col.width, text))
		c = append(c, text)
	}
	fmt.Fprintln(w, strings.Join(line, " "))
	fmt.Fprintln(csv, strings.Join(c, ","))
}

// writeSoakReport prints the summary of the samples: for each gauge its first and last steady
// sample, the medians the verdict compares, its range, and its peak in the burst; then the
// calls by kind.
func writeSoakReport(w io.Writer, samples []sample, peakMiB float64, steadySt, burstSt *stats, o soakOptions, cacheLines []string) {
	var steady, after, burst []sample
	for _, s := range samples {
		switch {
		case s.burst:
			burst = append(burst, s)
		default:
			steady = append(steady, s)
			if s.at >= o.th.warmup {
				after = append(after, s)
			}
		}
	}
	third := len(after) / 3
	var first3, last3 []sample
	if third > 0 {
		first3, last3 = after[:third], after[len(after)-third:]
	}

	fmt.Fprintf(w, "\nSummary (%d steady samples, %d after the %v warm-up compared by thirds; %d burst samples):\n\n", len(steady), len(after), o.th.warmup, len(burst))
	fmt.Fprintln(w, "| gauge | first | last | min | max | first third: median (min) | last third: median (min) | burst max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
	row := func(name, format string, get func(sample) float64) {
		first, last := math.NaN(), math.NaN()
		if len(steady) > 0 {
			first, last = get(steady[0]), get(steady[len(steady)-1])
		}
		lo, hi := span(steady, get)
		_, bhi := span(burst, get)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s (%s) | %s (%s) | %s |\n", name,
			num(first, format), num(last, format), num(lo, format), num(hi, format),
			num(median(first3, get), format), num(least(first3, get), format),
			num(median(last3, get), format), num(least(last3, get), format), num(bhi, format))
	}
	row("RSS MiB", "%.1f", func(s sample) float64 { return s.rssMiB })
	row("heap in use MiB", "%.1f", func(s sample) float64 { return s.heapMiB })
	row("goroutines", "%.0f", func(s sample) float64 { return s.goroutines })
	row("open fds", "%.0f", func(s sample) float64 { return s.openFDs })
	row("Redis connected_clients", "%.0f", func(s sample) float64 { return s.redisClients })
	row("Redis used_memory MiB", "%.1f", func(s sample) float64 { return s.redisMemMiB })
	row("rps", "%.0f", func(s sample) float64 { return s.rps })
	row("p99 ms", "%.2f", func(s sample) float64 { return s.p99ms })
	row("errors per interval", "%.0f", func(s sample) float64 { return float64(s.errors) })
	fmt.Fprintf(w, "\nPeak RSS of the sidecar (VmHWM, start-up and burst included): %s MiB\n", num(peakMiB, "%.1f"))

	fmt.Fprintf(w, "\nCalls by kind (steady %v; burst %v):\n\n", o.duration, o.burst)
	fmt.Fprintln(w, "| kind | calls | ok | over | denied | errors | wrong |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, ph := range []struct {
		name string
		st   *stats
	}{{"steady", steadySt}, {"burst", burstSt}} {
		var tot [nOutcomes + 1]uint64
		for k := range nKinds {
			var c [nOutcomes + 1]uint64
			var calls uint64
			for i := range c {
				c[i] = ph.st.perKind[k][i].Load()
				tot[i] += c[i]
				if i < int(nOutcomes) {
					calls += c[i]
				}
			}
			if ph.name == "steady" {
				fmt.Fprintf(w, "| %s | %d | %d | %d | %d | %d | %d |\n", kinds[k].name, calls, c[outOK], c[outOver], c[outDenied], c[outError], c[nOutcomes])
			}
		}
		calls := tot[outOK] + tot[outOver] + tot[outDenied] + tot[outError]
		fmt.Fprintf(w, "| **%s total** | %d | %d | %d | %d | %d | %d |\n", ph.name, calls, tot[outOK], tot[outOver], tot[outDenied], tot[outError], tot[nOutcomes])
	}
	for _, ph := range []struct {
		name string
		st   *stats
	}{{"steady", steadySt}, {"burst", burstSt}} {
		classes, first := ph.st.errorSummary()
		if first == nil {
			continue
		}
		names := slices.Sorted(maps.Keys(classes))
		parts := make([]string, len(names))
		for i, n := range names {
			parts[i] = fmt.Sprintf("%s %d", n, classes[n])
		}
		fmt.Fprintf(w, "\nErrors, %s: %s; the first: %v\n", ph.name, strings.Join(parts, ", "), first)
	}
	var dropped uint64
	for _, s := range samples {
		dropped += s.dropped
	}
	if dropped > 0 {
		fmt.Fprintf(w, "\n%d fixed-rate calls were dropped: they were due more than %v before a caller was free.\n", dropped, maxLate)
	}
	if len(cacheLines) > 0 {
		fmt.Fprintf(w, "\nThe sidecar's cache metrics at the end:\n\n    %s\n", strings.Join(cacheLines, "\n    "))
	}
}
