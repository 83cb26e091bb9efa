package ratelimit

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// now is a fixed decision time with a sub-second part, so that legacy's absolute reset
// shows its rounding.
var testNow = time.Unix(1_700_000_000, 250_000_000)

// pkIP is express-rate-limit's partition key for "203.0.113.7": express-rate-limit 8.7.5
// itself printed it, and the single-quota cases below are its exact output for the same
// limit, remaining and reset (header order included; it sends Date with legacy headers,
// which is left to the proxy here).
const pkIP = "ZmVjNTI1NjVhYTBj"

func h(name, value string) Header { return Header{Name: name, Value: value} }

func TestAppendHeaders(t *testing.T) {
	one := []Quota{{Limit: 100, Remaining: 5, Window: time.Minute, Reset: 30 * time.Second, Key: "203.0.113.7"}}
	over := []Quota{{Limit: 100, Remaining: 0, Window: time.Minute, Reset: 29100 * time.Millisecond, Key: "203.0.113.7", Over: true}}
	// Two quotas: the hourly one is closer to its limit, so RateLimit describes it.
	two := []Quota{
		{Limit: 100, Remaining: 50, Window: time.Minute, Reset: 30 * time.Second, Key: "k"},
		{Limit: 1000, Remaining: 3, Window: time.Hour, Reset: 1800 * time.Second, Key: "k"},
	}
	for _, tc := range []struct {
		name   string
		format Format
		quotas []Quota
		want   []Header
	}{
		{"draft-7 one quota", FormatDraft7, one, []Header{
			h("RateLimit-Policy", "100;w=60"),
			h("RateLimit", "limit=100, remaining=5, reset=30"),
		}},
		{"draft-6 one quota", FormatDraft6, one, []Header{
			h("RateLimit-Policy", "100;w=60"),
			h("RateLimit-Limit", "100"),
			h("RateLimit-Remaining", "5"),
			h("RateLimit-Reset", "30"),
		}},
		{"draft-8 one quota", FormatDraft8, one, []Header{
			h("RateLimit", `"100-in-1min"; r=5; t=30`),
			h("RateLimit-Policy", `"100-in-1min"; q=100; w=60; pk=:`+pkIP+`:`),
		}},
		{"legacy one quota", FormatLegacy, one, []Header{
			h("X-RateLimit-Limit", "100"),
			h("X-RateLimit-Remaining", "5"),
			// 1700000000.25 + 30 = 1700000030.25, rounded up.
			h("X-RateLimit-Reset", "1700000031"),
		}},
		{"none", FormatNone, over, nil},
		{"unknown format", Format(42), over, nil},
		{"no quotas", FormatDraft7, nil, nil},

		{"draft-7 over rounds up", FormatDraft7, over, []Header{
			h("RateLimit-Policy", "100;w=60"),
			h("RateLimit", "limit=100, remaining=0, reset=30"),
			h("Retry-After", "30"),
		}},
		{"draft-6 over", FormatDraft6, over, []Header{
			h("RateLimit-Policy", "100;w=60"),
			h("RateLimit-Limit", "100"),
			h("RateLimit-Remaining", "0"),
			h("RateLimit-Reset", "30"),
			h("Retry-After", "30"),
		}},
		{"draft-8 over", FormatDraft8, over, []Header{
			h("RateLimit", `"100-in-1min"; r=0; t=30`),
			h("RateLimit-Policy", `"100-in-1min"; q=100; w=60; pk=:`+pkIP+`:`),
			h("Retry-After", "30"),
		}},
		{"legacy over", FormatLegacy, over, []Header{
			h("X-RateLimit-Limit", "100"),
			h("X-RateLimit-Remaining", "0"),
			// 1700000000.25 + 29.1 = 1700000029.35, rounded up.
			h("X-RateLimit-Reset", "1700000030"),
			h("Retry-After", "30"),
		}},

		{"reset 0", FormatDraft7, []Quota{{Limit: 10, Remaining: 0, Window: time.Second, Over: true}}, []Header{
			h("RateLimit-Policy", "10;w=1"),
			h("RateLimit", "limit=10, remaining=0, reset=0"),
			h("Retry-After", "0"),
		}},
		{"negative reset is 0", FormatDraft7, []Quota{{Limit: 10, Remaining: 0, Window: time.Second, Reset: -time.Second, Over: true}}, []Header{
			h("RateLimit-Policy", "10;w=1"),
			h("RateLimit", "limit=10, remaining=0, reset=0"),
			h("Retry-After", "0"),
		}},
		// express-rate-limit 8.7 writes RateLimit-Reset: 0 (older releases left it out).
		{"draft-6 reset 0", FormatDraft6, []Quota{{Limit: 10, Remaining: 4, Window: time.Second}}, []Header{
			h("RateLimit-Policy", "10;w=1"),
			h("RateLimit-Limit", "10"),
			h("RateLimit-Remaining", "4"),
			h("RateLimit-Reset", "0"),
		}},
		{"legacy negative reset is now", FormatLegacy, []Quota{{Limit: 10, Remaining: 4, Window: time.Second, Reset: -time.Hour}}, []Header{
			h("X-RateLimit-Limit", "10"),
			h("X-RateLimit-Remaining", "4"),
			h("X-RateLimit-Reset", "1700000001"),
		}},
		{"legacy whole second", FormatLegacy, []Quota{{Limit: 10, Remaining: 4, Window: time.Minute, Reset: 750 * time.Millisecond}}, []Header{
			h("X-RateLimit-Limit", "10"),
			h("X-RateLimit-Remaining", "4"),
			h("X-RateLimit-Reset", "1700000001"),
		}},
		{"window rounds up", FormatDraft7, []Quota{{Limit: 10, Remaining: 4, Window: 1500 * time.Millisecond, Reset: time.Nanosecond}}, []Header{
			h("RateLimit-Policy", "10;w=2"),
			h("RateLimit", "limit=10, remaining=4, reset=1"),
		}},

		{"draft-7 two quotas", FormatDraft7, two, []Header{
			h("RateLimit-Policy", "100;w=60, 1000;w=3600"),
			h("RateLimit", "limit=1000, remaining=3, reset=1800"),
		}},
		{"draft-6 two quotas", FormatDraft6, two, []Header{
			h("RateLimit-Policy", "100;w=60, 1000;w=3600"),
			h("RateLimit-Limit", "1000"),
			h("RateLimit-Remaining", "3"),
			h("RateLimit-Reset", "1800"),
		}},
		{"draft-8 two quotas", FormatDraft8, two, []Header{
			h("RateLimit", `"1000-in-1hr"; r=3; t=1800`),
			h("RateLimit-Policy", `"100-in-1min"; q=100; w=60; pk=:`+pk("k")+`:, "1000-in-1hr"; q=1000; w=3600; pk=:`+pk("k")+`:`),
		}},
		{"legacy two quotas", FormatLegacy, two, []Header{
			h("X-RateLimit-Limit", "1000"),
			h("X-RateLimit-Remaining", "3"),
			h("X-RateLimit-Reset", "1700001801"),
		}},
		{"tie on remaining picks the longer reset", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 2, Window: time.Minute, Reset: 10 * time.Second},
			{Limit: 20, Remaining: 2, Window: time.Hour, Reset: 20 * time.Second},
			{Limit: 30, Remaining: 2, Window: time.Hour, Reset: 5 * time.Second},
		}, []Header{
			h("RateLimit-Policy", "10;w=60, 20;w=3600, 30;w=3600"),
			h("RateLimit", "limit=20, remaining=2, reset=20"),
		}},
		{"full tie picks the first", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 2, Window: time.Minute, Reset: 10 * time.Second},
			{Limit: 20, Remaining: 2, Window: time.Hour, Reset: 10 * time.Second},
		}, []Header{
			h("RateLimit-Policy", "10;w=60, 20;w=3600"),
			h("RateLimit", "limit=10, remaining=2, reset=10"),
		}},
		{"resets within the same whole second tie: the first stays", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 0, Window: time.Minute, Reset: 9*time.Second + 100*time.Millisecond},
			{Limit: 20, Remaining: 0, Window: time.Hour, Reset: 9*time.Second + 900*time.Millisecond},
		}, []Header{
			h("RateLimit-Policy", "10;w=60, 20;w=3600"),
			h("RateLimit", "limit=10, remaining=0, reset=10"),
		}},
		{"exact duplicates listed once", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 5, Window: time.Minute, Reset: 10 * time.Second},
			{Limit: 10, Remaining: 5, Window: time.Minute, Reset: 10 * time.Second},
		}, []Header{
			h("RateLimit-Policy", "10;w=60"),
			h("RateLimit", "limit=10, remaining=5, reset=10"),
		}},
		{"shared limit keeps the described quota", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 8, Window: time.Second, Reset: time.Second},
			{Limit: 500, Remaining: 400, Window: time.Hour, Reset: time.Hour},
			{Limit: 10, Remaining: 1, Window: time.Minute, Reset: 40 * time.Second},
		}, []Header{
			h("RateLimit-Policy", "500;w=3600, 10;w=60"),
			h("RateLimit", "limit=10, remaining=1, reset=40"),
		}},
		{"shared limit not described keeps the first", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 8, Window: time.Second, Reset: time.Second},
			{Limit: 10, Remaining: 9, Window: time.Minute, Reset: 40 * time.Second},
			{Limit: 500, Remaining: 1, Window: time.Hour, Reset: time.Hour},
		}, []Header{
			h("RateLimit-Policy", "10;w=1, 500;w=3600"),
			h("RateLimit", "limit=500, remaining=1, reset=3600"),
		}},
		{"draft-8 shared limit", FormatDraft8, []Quota{
			{Name: "burst", Limit: 10, Remaining: 8, Window: time.Second, Reset: time.Second, Key: "k"},
			{Name: "steady", Limit: 10, Remaining: 2, Window: time.Minute, Reset: 40 * time.Second, Key: "k"},
		}, []Header{
			h("RateLimit", `"steady"; r=2; t=40`),
			h("RateLimit-Policy", `"steady"; q=10; w=60; pk=:`+pk("k")+`:`),
		}},
		{"retry-after is the longest reset among over quotas", FormatDraft7, []Quota{
			{Limit: 10, Remaining: 0, Window: time.Minute, Reset: 20 * time.Second, Over: true},
			{Limit: 100, Remaining: 0, Window: time.Hour, Reset: 1000*time.Second + time.Millisecond, Over: true},
			{Limit: 1000, Remaining: 0, Window: 24 * time.Hour, Reset: 80000 * time.Second},
		}, []Header{
			h("RateLimit-Policy", "10;w=60, 100;w=3600, 1000;w=86400"),
			h("RateLimit", "limit=1000, remaining=0, reset=80000"),
			h("Retry-After", "1001"),
		}},
		{"draft-8 configured name is escaped", FormatDraft8, []Quota{
			{Name: "a\"b\\c\r\nX-Evil: 1é", Limit: 5, Remaining: 1, Window: 30 * time.Second, Reset: 3 * time.Second, Key: "203.0.113.7"},
		}, []Header{
			h("RateLimit", `"a\"b\\c??X-Evil: 1??"; r=1; t=3`),
			h("RateLimit-Policy", `"a\"b\\c??X-Evil: 1??"; q=5; w=30; pk=:`+pkIP+`:`),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendHeaders(nil, tc.format, tc.quotas, testNow)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got\n%s\nwant\n%s", dump(got), dump(tc.want))
			}
		})
	}
}

func TestAppendHeadersKeepsDst(t *testing.T) {
	dst := []Header{h("X-Before", "1")}
	got := AppendHeaders(dst, FormatDraft7, nil, testNow)
	if !slices.Equal(got, dst) {
		t.Fatalf("no quotas: got %v, want dst unchanged", got)
	}
	got = AppendHeaders(dst, FormatDraft7, []Quota{{Limit: 1, Window: time.Second}}, testNow)
	if len(got) != 3 || got[0] != dst[0] {
		t.Fatalf("got %v, want X-Before followed by two headers", got)
	}
}

func TestDefaultName(t *testing.T) {
	// Expected values follow express-rate-limit's default identifier(): the largest unit the
	// window is at least one of, printed as a JavaScript number. The windows also used in
	// the express-rate-limit 8.7.5 check (1.5s, 1min, 1.5min, 100s, 1hr, 1.5hrs, 1day,
	// 7days) gave these exact names there.
	for _, tc := range []struct {
		limit  uint64
		window time.Duration
		want   string
	}{
		{5, 30 * time.Second, "5-in-30sec"},
		{5, 1500 * time.Millisecond, "5-in-1.5sec"},
		{5, 59 * time.Second, "5-in-59sec"},
		{100, time.Minute, "100-in-1min"},
		{100, 90 * time.Second, "100-in-1.5min"},
		{100, 100 * time.Second, "100-in-1.6666666666666667min"},
		{100, 15 * time.Minute, "100-in-15min"},
		{1000, time.Hour, "1000-in-1hr"},
		{1000, 90 * time.Minute, "1000-in-1.5hrs"},
		{1000, 2 * time.Hour, "1000-in-2hrs"},
		{10, 24 * time.Hour, "10-in-1day"},
		{10, 7 * 24 * time.Hour, "10-in-7days"},
		{10, 365 * 24 * time.Hour, "10-in-365days"},
	} {
		got := string(appendDefaultName(nil, tc.limit, tc.window))
		if got != tc.want {
			t.Errorf("appendDefaultName(%d, %v) = %q, want %q", tc.limit, tc.window, got, tc.want)
		}
	}
}

func TestPartitionKey(t *testing.T) {
	// Computed with Node: Buffer.from(sha256hex(key).slice(0, 12)).toString("base64").
	for key, want := range map[string]string{
		"203.0.113.7":           "ZmVjNTI1NjVhYTBj",
		"rls:{edge.user_alice}": "ZTFiNjYyODExNGUy",
		"":                      "ZTNiMGM0NDI5OGZj",
	} {
		if got := pk(key); got != want {
			t.Errorf("partition key of %q = %q, want %q", key, got, want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range []Format{FormatNone, FormatDraft6, FormatDraft7, FormatDraft8, FormatLegacy} {
		got, err := ParseFormat(f.String())
		if err != nil || got != f {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v", f.String(), got, err, f)
		}
	}
	for _, s := range []string{"", "Draft-7", "draft7", "draft-9", "true"} {
		if _, err := ParseFormat(s); err == nil {
			t.Errorf("ParseFormat(%q): no error", s)
		}
	}
	if got := Format(9).String(); got != "Format(9)" {
		t.Errorf("Format(9).String() = %q", got)
	}
}

func pk(key string) string { return string(appendPartitionKey(nil, key)) }

func dump(hs []Header) string {
	var b strings.Builder
	for _, x := range hs {
		b.WriteString("  " + x.Name + ": " + x.Value + "\n")
	}
	return b.String()
}

func BenchmarkAppendHeaders(b *testing.B) {
	quotas := []Quota{
		{Limit: 100, Remaining: 0, Window: time.Minute, Reset: 29100 * time.Millisecond, Key: "rls:{edge.user_alice}", Over: true},
		{Limit: 1000, Remaining: 3, Window: time.Hour, Reset: 1800 * time.Second, Key: "rls:{edge.user_alice}"},
	}
	for _, f := range []Format{FormatDraft6, FormatDraft7, FormatDraft8, FormatLegacy} {
		b.Run(f.String(), func(b *testing.B) {
			b.ReportAllocs()
			dst := make([]Header, 0, 8)
			for b.Loop() {
				dst = AppendHeaders(dst[:0], f, quotas, testNow)
			}
		})
	}
}
