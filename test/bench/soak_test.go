package main

import (
	"flag"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// Every soak flag is listed in soakFlagNames, which the other modes refuse, and nothing else is.
func TestSoakFlagNames(t *testing.T) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	var o soakOptions
	o.register(fs)
	var got []string
	fs.VisitAll(func(f *flag.Flag) { got = append(got, f.Name) })
	slices.Sort(got)
	want := slices.Sorted(slices.Values(soakFlagNames))
	if !slices.Equal(got, want) {
		t.Fatalf("registered %v, soakFlagNames %v", got, want)
	}
	if err := o.validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}

func TestSoakOtherModesRefuseSoakFlags(t *testing.T) {
	err := run(t.Context(), []string{"-mode", "quick", "-duration", "1m"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-duration: only with -mode soak") {
		t.Fatalf("err = %v", err)
	}
}

func TestSoakValidate(t *testing.T) {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	var o soakOptions
	o.register(fs)
	if err := fs.Parse([]string{"-duration", "1m", "-warmup", "1m"}); err != nil {
		t.Fatal(err)
	}
	if err := o.validate(); err == nil || !strings.Contains(err.Error(), "-warmup") {
		t.Fatalf("a warm-up as long as the run: err = %v", err)
	}
}

func TestParseGauges(t *testing.T) {
	const text = `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 27
go_memstats_heap_inuse_bytes 9.453568e+06
go_gc_duration_seconds{quantile="0"} 2.1e-05
process_open_fds 23
`
	m, err := parseGauges(strings.NewReader(text), "go_goroutines", "go_memstats_heap_inuse_bytes", "process_open_fds")
	if err != nil {
		t.Fatal(err)
	}
	if m["go_goroutines"] != 27 || m["go_memstats_heap_inuse_bytes"] != 9453568 || m["process_open_fds"] != 23 {
		t.Fatalf("got %v", m)
	}
	if _, err := parseGauges(strings.NewReader(text), "process_resident_memory_bytes"); err == nil {
		t.Fatal("a missing gauge is not an error")
	}
}

func TestParseInfo(t *testing.T) {
	const text = "# Clients\r\nconnected_clients:7\r\nblocked_clients:0\r\n\r\n# Memory\r\nused_memory:2703392\r\nused_memory_human:2.58M\r\n"
	m, err := parseInfo(text, "connected_clients", "used_memory")
	if err != nil {
		t.Fatal(err)
	}
	if m["connected_clients"] != 7 || m["used_memory"] != 2703392 {
		t.Fatalf("got %v", m)
	}
	if _, err := parseInfo(text, "maxclients"); err == nil {
		t.Fatal("a missing field is not an error")
	}
}

func TestProcStatusSelf(t *testing.T) {
	st, err := procStatus(os.Getpid(), "VmRSS", "VmHWM")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	if !(st["VmRSS"] > 0) || !(st["VmHWM"] >= st["VmRSS"]) {
		t.Fatalf("VmRSS %v kB, VmHWM %v kB", st["VmRSS"], st["VmHWM"])
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 100; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	c := h.take()
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}} {
		// Buckets are a quarter power of two wide: the edge is within 19% above.
		if got := c.quantile(tc.q); got < tc.want || float64(got) > 1.19*float64(tc.want) {
			t.Errorf("q%v = %v, want %v to +19%%", tc.q, got, tc.want)
		}
	}
	if got := h.take().quantile(0.5); got != 0 {
		t.Errorf("after take, q50 = %v, want 0", got)
	}
}

// The mix is half ShouldRateLimit, half Check, as the flag's help says.
func TestSoakMix(t *testing.T) {
	var rls, check int
	for k, kd := range kinds {
		if k == kindRLSUser || k == kindRLSHot {
			rls += kd.weight
		} else {
			check += kd.weight
		}
		if len(kd.expect) == 0 || kd.name == "" {
			t.Errorf("kind %d: incomplete %+v", k, kd)
		}
	}
	if rls != check {
		t.Fatalf("ShouldRateLimit weight %d, Check weight %d", rls, check)
	}
	if !expected(kindSession, outOK) || expected(kindSession, outDenied) || !expected(kindAnonymous, outDenied) {
		t.Fatal("expected() disagrees with the kinds table")
	}
}
