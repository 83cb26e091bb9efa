package main

import (
	"math"
	"strings"
	"testing"
)

func runOf(t *testing.T, line string) summary {
	t.Helper()
	s, err := parseSummary(line)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The report states p50 − null p50 in ms and p99 / null p99 for every row, and judges the
// fixed 5,000/s row against issue 11 §7's target.
func TestLatencyVsNull(t *testing.T) {
	s := scenario{name: "fixed 5000/s, c=64 keys=10000 (latency)", latencyTarget: true}
	met := &result{s: s,
		real: []summary{runOf(t, "rps=5000 p50_us=300 p99_us=900"), runOf(t, "rps=5000 p50_us=320 p99_us=1100")},
		null: []summary{runOf(t, "rps=5000 p50_us=200 p99_us=600")},
	}
	dp50, p99x := met.latencyVsNull()
	if math.Abs(dp50-0.110) > 1e-9 || math.Abs(p99x-1000.0/600) > 1e-9 {
		t.Fatalf("latencyVsNull = %v, %v; want 0.110, 1.667", dp50, p99x)
	}
	if v := latencyVerdict(met); !strings.Contains(v, "+0.110 ms (target ≤ 0.15: met)") || !strings.Contains(v, "1.67 (target ≤ 2.0: met)") {
		t.Errorf("verdict: %s", v)
	}

	missed := &result{s: s,
		real: []summary{runOf(t, "rps=5000 p50_us=400 p99_us=1300")},
		null: []summary{runOf(t, "rps=5000 p50_us=200 p99_us=600")},
	}
	if v := latencyVerdict(missed); !strings.Contains(v, "+0.200 ms (target ≤ 0.15: MISSED)") || !strings.Contains(v, "2.17 (target ≤ 2.0: MISSED)") {
		t.Errorf("verdict: %s", v)
	}
	if v := latencyVerdict(&result{s: s}); strings.Count(v, "not measured") != 2 {
		t.Errorf("verdict with no runs: %s", v)
	}
	// A null server that did not keep the rate says the machine was saturated: no verdict.
	saturated := &result{s: s,
		real: []summary{runOf(t, "rps=5000 p50_us=4704 p99_us=464896 dropped=0")},
		null: []summary{runOf(t, "rps=5000 p50_us=806912 p99_us=1220608 dropped=0")},
	}
	if v := latencyVerdict(saturated); !strings.Contains(v, "not judged") || strings.Contains(v, "met") {
		t.Errorf("verdict on a saturated machine: %s", v)
	}
	dropped := &result{s: s,
		real: []summary{runOf(t, "rps=4000 p50_us=300 p99_us=900 dropped=1000")},
		null: []summary{runOf(t, "rps=5000 p50_us=200 p99_us=600 dropped=0")},
	}
	if v := latencyVerdict(dropped); !strings.Contains(v, "not judged") {
		t.Errorf("verdict with dropped calls: %s", v)
	}

	var b strings.Builder
	writeReport(&b, []*result{met}, machine{topology: "cluster (3 masters, 3 replicas)"}, "go run ./test/bench", "/tmp/raw")
	out := b.String()
	for _, want := range []string{"| Δp50 ms | p99 ×null |", "| +0.110 | 1.67 |", "Latency target (issue 11 §7)", "cluster (3 masters, 3 replicas)"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// Redis's CPU is the sum over its nodes, averaged over the rounds.
func TestMeanSum(t *testing.T) {
	runs := []summary{
		runOf(t, "rps=1 cpu_us_per_req[redis0]=10 cpu_us_per_req[redis1]=2 cpu_us_per_req[extauthz]=50"),
		runOf(t, "rps=1 cpu_us_per_req[redis0]=14 cpu_us_per_req[redis1]=4 cpu_us_per_req[extauthz]=70"),
	}
	if got := meanSum(runs, "cpu_us_per_req[redis"); got != 15 {
		t.Errorf("meanSum = %v, want 15", got)
	}
	if got := meanSum([]summary{runOf(t, "rps=1 cpu_us_per_req[redis]=7")}, "cpu_us_per_req[redis"); got != 7 {
		t.Errorf("meanSum of one node = %v, want 7", got)
	}
	for _, bad := range [][]summary{nil, {runOf(t, "rps=1")}, {runOf(t, "rps=1 cpu_us_per_req[redis0]=-1 cpu_us_per_req[redis1]=3")}} {
		if got := meanSum(bad, "cpu_us_per_req[redis"); !math.IsNaN(got) {
			t.Errorf("meanSum(%v) = %v, want NaN", bad, got)
		}
	}
}
