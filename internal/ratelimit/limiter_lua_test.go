package ratelimit

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

func TestParseLimiterReply(t *testing.T) {
	two := []Request{
		{Key: "a", Limit: Limit{Requests: 10, Window: time.Minute}},
		{Key: "b", Limit: Limit{Requests: 10, Window: time.Minute, Algorithm: AlgorithmGCRA, Burst: 3}},
	}
	one := two[:1]
	i := func(n int64) interface{} { return n }
	// ok is a valid reply for two: allowed with 7 left and 20s to reset, then denied with
	// 0 left, retry after 1.5s.
	ok := []interface{}{i(1700000000), i(250000), i(1), i(7), i(20e6), i(0), i(0), i(0), i(3e6), i(1.5e6)}
	with := func(idx int, v interface{}) []interface{} {
		r := append([]interface{}(nil), ok...)
		r[idx] = v
		return r
	}
	t.Run("valid", func(t *testing.T) {
		now, ds, err := parseLimiterReply(ok, two)
		if err != nil {
			t.Fatal(err)
		}
		if want := time.Unix(1700000000, 250_000_000); !now.Equal(want) {
			t.Fatalf("now %v, want %v", now, want)
		}
		want := []Decision{
			{Allowed: true, Limit: 10, Remaining: 7, Reset: 20 * time.Second},
			{Allowed: false, Limit: 3, Remaining: 0, Reset: 3 * time.Second, RetryAfter: 1500 * time.Millisecond},
		}
		for k := range want {
			if ds[k] != want[k] {
				t.Fatalf("decision %d: %+v, want %+v", k, ds[k], want[k])
			}
		}
	})
	t.Run("numeric strings and integral floats", func(t *testing.T) {
		_, ds, err := parseLimiterReply([]interface{}{"1700000000", float64(0), "1", float64(10), "0", i(0)}, one)
		if err != nil || !ds[0].Allowed || ds[0].Remaining != 10 {
			t.Fatalf("got %+v, %v", ds, err)
		}
	})
	for _, tc := range []struct {
		name  string
		reply interface{}
		reqs  []Request
	}{
		{"not an array", "OK", one},
		{"nil", nil, one},
		{"integer", i(1), one},
		{"empty", []interface{}{}, one},
		{"too short", ok[:6], two},
		{"too long", append(append([]interface{}(nil), ok...), i(1)), two},
		{"negative seconds", with(0, i(-1)), two},
		{"microseconds out of range", with(1, i(1_000_000)), two},
		{"allowed flag 2", with(2, i(2)), two},
		{"negative remaining", with(3, i(-1)), two},
		{"remaining above the limit", with(3, i(11)), two},
		{"remaining above the burst", with(7, i(4)), two},
		{"negative reset", with(4, i(-5)), two},
		{"reset overflows a duration", with(4, i(math.MaxInt64/1000+1)), two},
		{"retry after overflows a duration", with(9, i(math.MaxInt64)), two},
		{"allowed with a retry after", with(5, i(1)), two},
		{"denied without a retry after", with(9, i(0)), two},
		{"fractional float", with(3, 1.5), two},
		{"NaN", with(3, math.NaN()), two},
		{"infinity", with(4, math.Inf(1)), two},
		{"non-numeric string", with(3, "seven"), two},
		{"bytes", with(3, []byte("7")), two},
		{"nil element", with(3, nil), two},
		{"bool", with(2, true), two},
		{"nested array", with(3, []interface{}{i(7)}), two},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := parseLimiterReply(tc.reply, tc.reqs); !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v, want ErrBadReply", err)
			}
		})
	}
}

func TestLimiterAllowBadReply(t *testing.T) {
	reqs := []Request{{Key: "k", Limit: Limit{Requests: 1, Window: time.Second}, Cost: 1}}
	for _, reply := range []interface{}{
		[]interface{}{int64(1), int64(2)},
		[]interface{}{int64(1), int64(2), int64(1), int64(0), 0.5, int64(0)},
		"garbage",
	} {
		_, _, err := NewLimiter(fakeScripter{reply: reply}).Allow(t.Context(), reqs)
		if !errors.Is(err, ErrBadReply) {
			t.Errorf("reply %#v: error %v, want ErrBadReply", reply, err)
		}
	}
}

// The client's errors come back wrapped, for errors.Is and FailureReason.
func TestLimiterReturnsClientErrors(t *testing.T) {
	reqs := []Request{{Key: "k", Limit: Limit{Requests: 5, Window: time.Second}, Cost: 1}}
	for _, want := range []error{replyError("ERR something else"), redisconn.ErrNil, redisconn.ErrBusy} {
		_, ds, err := NewLimiter(fakeScripter{err: want}).Allow(t.Context(), reqs)
		if !errors.Is(err, want) || ds != nil {
			t.Errorf("Allow with the client failing %v: %+v, %v; want no decisions and the error", want, ds, err)
		}
	}
}

func TestLimiterRejectsInvalidRequests(t *testing.T) {
	good := Limit{Requests: 10, Window: time.Minute}
	for _, tc := range []struct {
		name string
		r    Request
	}{
		{"empty key", Request{Limit: good}},
		{"zero requests", Request{Key: "k", Limit: Limit{Window: time.Minute}}},
		{"negative requests", Request{Key: "k", Limit: Limit{Requests: -1, Window: time.Minute}}},
		{"zero window", Request{Key: "k", Limit: Limit{Requests: 1}}},
		{"sub-millisecond window", Request{Key: "k", Limit: Limit{Requests: 1, Window: time.Microsecond}}},
		{"fractional milliseconds", Request{Key: "k", Limit: Limit{Requests: 1, Window: 1500 * time.Microsecond}}},
		{"negative cost", Request{Key: "k", Limit: good, Cost: -1}},
		{"huge cost", Request{Key: "k", Limit: good, Cost: math.MaxInt64}},
		{"negative burst", Request{Key: "k", Limit: Limit{Requests: 1, Window: time.Second, Algorithm: AlgorithmGCRA, Burst: -1}}},
		{"unknown algorithm", Request{Key: "k", Limit: Limit{Requests: 1, Window: time.Second, Algorithm: 7}}},
		{"sliding too large to count exactly", Request{Key: "k", Limit: Limit{Requests: 1 << 40, Window: 24 * time.Hour, Algorithm: AlgorithmSliding}}},
		{"gcra burst too large to count exactly", Request{Key: "k", Limit: Limit{Requests: 1, Window: 24 * time.Hour, Algorithm: AlgorithmGCRA, Burst: 1 << 20}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &countingScripter{Scripter: fakeScripter{}}
			_, _, err := NewLimiter(c).Allow(t.Context(), []Request{{Key: "ok", Limit: good}, tc.r})
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v, want ErrInvalidRequest", err)
			}
			if tc.r.Key != "" && tc.r.Cost == 0 && !errors.Is(tc.r.Limit.Validate(), ErrInvalidRequest) {
				t.Fatalf("Limit.Validate accepted %+v", tc.r.Limit)
			}
			if n := c.calls.Load(); n != 0 {
				t.Fatalf("%d calls reached redis, want 0", n)
			}
		})
	}
	t.Run("repeated key", func(t *testing.T) {
		_, _, err := NewLimiter(fakeScripter{}).Allow(t.Context(), []Request{{Key: "k", Limit: good}, {Key: "k", Limit: good}})
		if !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("error %v, want ErrInvalidRequest", err)
		}
	})
	t.Run("no requests", func(t *testing.T) {
		c := &countingScripter{Scripter: fakeScripter{}}
		now, ds, err := NewLimiter(c).Allow(t.Context(), nil)
		if err != nil || !now.IsZero() || ds != nil || c.calls.Load() != 0 {
			t.Fatalf("Allow(nil) = %v, %v, %v; want a zero result and no call", now, ds, err)
		}
	})
	t.Run("limits that fit", func(t *testing.T) {
		for _, l := range []Limit{
			good,
			{Requests: 1e9, Window: time.Minute, Algorithm: AlgorithmSliding},
			{Requests: 7, Window: time.Second, Algorithm: AlgorithmGCRA, Burst: 20},
			{Requests: 1, Window: 365 * 24 * time.Hour, Algorithm: AlgorithmGCRA},
		} {
			if err := l.Validate(); err != nil {
				t.Errorf("%+v: %v", l, err)
			}
		}
	})
}

func TestGCRAInterval(t *testing.T) {
	for _, tc := range []struct {
		l    Limit
		want int64
	}{
		{Limit{Requests: 100, Window: time.Minute}, 600_000},
		{Limit{Requests: 7, Window: time.Second}, 142_858}, // 142857.14 rounded up: never looser
		{Limit{Requests: 3, Window: time.Millisecond}, 334},
	} {
		if got := tc.l.interval(); got != tc.want {
			t.Errorf("%+v: interval %dµs, want %dµs", tc.l, got, tc.want)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Algorithm
	}{{"", AlgorithmFixed}, {"fixed", AlgorithmFixed}, {"sliding", AlgorithmSliding}, {"gcra", AlgorithmGCRA}} {
		got, err := ParseAlgorithm(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseAlgorithm(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.in != "" && got.String() != tc.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tc.in)
		}
	}
	for _, in := range []string{"Fixed", "token-bucket", " gcra"} {
		if _, err := ParseAlgorithm(in); err == nil {
			t.Errorf("ParseAlgorithm(%q): no error", in)
		}
	}
	var a Algorithm
	if err := a.UnmarshalText([]byte("sliding")); err != nil || a != AlgorithmSliding {
		t.Errorf("UnmarshalText: %v, %v", a, err)
	}
	if b, err := AlgorithmGCRA.MarshalText(); err != nil || string(b) != "gcra" {
		t.Errorf("MarshalText: %q, %v", b, err)
	}
	if _, err := Algorithm(9).MarshalText(); err == nil || Algorithm(9).String() != "Algorithm(9)" {
		t.Errorf("Algorithm(9): %q, %v", Algorithm(9).String(), err)
	}
}
