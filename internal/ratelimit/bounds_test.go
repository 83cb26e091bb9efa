package ratelimit

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

const year = 365 * 24 * time.Hour

// Every limit Validate accepts runs: its first request is allowed and the next ones are
// decided, at the edges of every maximum, on a real redis-server. Limits past a maximum are
// rejected with an error naming it, and no limit that Validate rejects is ever sent.
func TestValidatedLimitsRunAtTheirEdges(t *testing.T) {
	ms := MaxWindow.Milliseconds()
	slidingMost := (int64(maxExact)/ms - 1) / 2
	gcraMost := func(l Limit) int64 { return maxExact/l.interval() - 1 }
	gcraMax := Limit{Requests: 1, Window: MaxWindow, Algorithm: AlgorithmGCRA}
	gcraMax.Burst = gcraMost(gcraMax)
	for _, tc := range []struct {
		name  string
		l     Limit
		valid bool
		// say is part of the error of an invalid limit: the maximum it exceeded.
		say string
	}{
		{"fixed, the longest window", Limit{Requests: 1, Window: MaxWindow}, true, ""},
		{"fixed, the most requests", Limit{Requests: maxExact, Window: MaxWindow}, true, ""},
		{"sliding, the longest window", Limit{Requests: 1, Window: MaxWindow, Algorithm: AlgorithmSliding}, true, ""},
		{"sliding, the most requests per longest window", Limit{Requests: slidingMost, Window: MaxWindow, Algorithm: AlgorithmSliding}, true, ""},
		{"gcra, the longest window", Limit{Requests: 1, Window: MaxWindow, Algorithm: AlgorithmGCRA}, true, ""},
		{"gcra, the largest burst", gcraMax, true, ""},
		{"sliding, 2^50 per ms: fits only requests of cost 0", Limit{Requests: 1 << 50, Window: time.Millisecond, Algorithm: AlgorithmSliding}, false, "at most 1125899906842623"},
		{"sliding, 4e15 requests", Limit{Requests: 4e15, Window: time.Minute, Algorithm: AlgorithmSliding}, false, "2^51"},
		{"sliding, one more request than fits", Limit{Requests: slidingMost + 1, Window: MaxWindow, Algorithm: AlgorithmSliding}, false, "at most " + strconv.FormatInt(slidingMost, 10)},
		{"gcra, one more burst than fits", Limit{Requests: 1, Window: MaxWindow, Algorithm: AlgorithmGCRA, Burst: gcraMax.Burst + 1}, false, "at most " + strconv.FormatInt(gcraMax.Burst, 10)},
		{"fixed, 200 years", Limit{Requests: 1, Window: 200 * year}, false, "maximum 87600h0m0s"},
		{"sliding, 200 years", Limit{Requests: 1, Window: 200 * year, Algorithm: AlgorithmSliding}, false, "maximum 87600h0m0s"},
		{"gcra, 200 years", Limit{Requests: 1, Window: 200 * year, Algorithm: AlgorithmGCRA}, false, "maximum 87600h0m0s"},
		{"one millisecond past the longest window", Limit{Requests: 1, Window: MaxWindow + time.Millisecond}, false, "maximum"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.l.Validate()
			if tc.valid && err != nil {
				t.Fatalf("Validate(%+v) = %v, want nil", tc.l, err)
			}
			if !tc.valid && (!errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), tc.say)) {
				t.Fatalf("Validate(%+v) = %v, want ErrInvalidRequest saying %q", tc.l, err, tc.say)
			}
			if err != nil {
				return
			}
			b := startLimiterRedis(t)
			l := NewLimiter(b.rdb)
			r := Request{Key: "{t}:edge", Limit: tc.l, Cost: 1}
			for i := range 3 {
				_, ds, err := l.Allow(t.Context(), []Request{r})
				if err != nil {
					t.Fatalf("request %d: Allow = %v: a limit that validates failed at run time", i+1, err)
				}
				if i == 0 && !ds[0].Allowed {
					t.Fatalf("request 1: %+v, want allowed", ds[0])
				}
				if d := ds[0]; !d.Allowed && (d.RetryAfter <= 0 || d.RetryAfter > 2*tc.l.Window) {
					t.Fatalf("request %d: retry after %v, want in (0, %v]", i+1, d.RetryAfter, 2*tc.l.Window)
				}
			}
		})
	}
}

// A fixed window alone is counted even when denied, but never past maxFixedCount: whatever
// the counter holds, a request is decided without INCRBY overflowing.
func TestLimiterFixedCountStopsGrowing(t *testing.T) {
	b := startLimiterRedis(t)
	l := NewLimiter(b.rdb)
	lim := Limit{Requests: 10, Window: time.Hour}
	for _, tc := range []struct {
		name, stored string
		cost         int64
		want         string
	}{
		{"near 2^63", "9223372036854775000", 1 << 40, "9223372036854775000"},
		{"at the ceiling", "4503599627370496", 1, "4503599627370496"},
		{"below the ceiling", "4503599627370495", 1, "4503599627370496"},
		{"just below, a cost that would pass it", "4503599627370495", 2, "4503599627370495"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "{t}:" + tc.name
			b.admin.set(t, key, tc.stored, time.Hour)
			d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: tc.cost})
			if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 {
				t.Fatalf("decision %+v, want denied with nothing remaining", d)
			}
			if got := b.get(t, key); got != tc.want {
				t.Fatalf("counter %s, want %s", got, tc.want)
			}
		})
	}
}

// The counter's hits and windows are bounded so that counts stay exact and every key it
// writes gets a TTL: hits past MaxHits and windows past MaxWindow are ErrInvalidHit with no
// Redis call, and counters stop growing at MaxHits.
func TestFixedWindowBounds(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			b := be.start(t)
			f := NewFixedWindow(b.rdb)
			for _, h := range []Hit{
				{Key: "{t}:huge", Window: 60, Hits: MaxHits + 1},
				{Key: "{t}:huge", Window: 60, Hits: 1<<64 - 1},
				{Key: "{t}:long", Window: maxWindowSeconds + 1, Hits: 1},
				{Key: "{t}:long", Window: 365 * 86400 * (1<<32 - 1), Hits: 1},
			} {
				_, err := f.Add(t.Context(), []Hit{h})
				if !errors.Is(err, ErrInvalidHit) {
					t.Errorf("Add(%+v) = %v, want ErrInvalidHit", h, err)
				}
				if b.exists(t, windowKey(h, time.Now())) {
					t.Errorf("Add(%+v) wrote a key", h)
				}
			}

			h := Hit{Key: "{t}:max", Window: longWindow, Hits: MaxHits}
			var counts []uint64
			var now time.Time
			for range 3 {
				res := add(t, f, h)
				counts, now = append(counts, res.Counts[0]), res.Now
			}
			if !equalCounts(counts, MaxHits, 2*MaxHits, 2*MaxHits) {
				t.Fatalf("counts %v, want [2^52 2^53 2^53]", counts)
			}
			if res := add(t, f, Hit{Key: h.Key, Window: h.Window}); res.Counts[0] != MaxHits {
				t.Fatalf("stored count %d, want 2^52", res.Counts[0])
			}
			if ttl := b.ttl(t, windowKey(h, now)); ttl <= 0 {
				t.Fatalf("TTL %d, want > 0", ttl)
			}
		})
	}
}

// Every window from a second to MaxWindow gets a TTL, for the counter and for every
// algorithm of the Limiter; scanning Redis finds no key without one.
func TestEveryKeyExpires(t *testing.T) {
	b := startLimiterRedis(t)
	f := NewFixedWindow(b.rdb)
	l := NewLimiter(b.rdb)
	windows := []int64{1, 60, 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400, maxWindowSeconds}
	for _, w := range windows {
		for _, hits := range []uint64{1, MaxHits} {
			key := "{t}:" + strconv.FormatInt(w, 10) + ":" + strconv.FormatUint(hits, 10)
			if _, err := f.Add(t.Context(), []Hit{{Key: key, Window: w, Hits: hits}, {Key: key, Window: w, Hits: hits}}); err != nil {
				t.Fatalf("window %d, hits %d: %v", w, hits, err)
			}
		}
		for _, a := range []Algorithm{AlgorithmFixed, AlgorithmSliding, AlgorithmGCRA} {
			r := Request{Key: "{l}:" + a.String() + ":" + strconv.FormatInt(w, 10), Limit: Limit{Requests: 1, Window: time.Duration(w) * time.Second, Algorithm: a}, Cost: 1}
			for range 2 {
				allowOne(t, l, r)
			}
		}
	}
	keys := scanTTLs(t, b)
	if len(keys) < 5*len(windows) {
		t.Fatalf("found %d keys, want at least %d", len(keys), 5*len(windows))
	}
	for k, ttl := range keys {
		if ttl <= 0 {
			t.Errorf("key %s has TTL %v, want > 0", k, ttl)
		}
	}
}

// scanTTLs returns every key in the server with its TTL (negative: none).
func scanTTLs(t *testing.T, b *limiterBackend) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	cursor := "0"
	for {
		v, ok := b.admin.do(t, "SCAN", nil, cursor, "COUNT", "100").([]any)
		if !ok || len(v) != 2 {
			t.Fatalf("SCAN: reply %v", v)
		}
		keys, _ := v[1].([]any)
		for _, k := range keys {
			key := k.(string)
			ttl := b.admin.integer(t, "TTL", []string{key})
			out[key] = time.Duration(ttl) * time.Second
		}
		if cursor = v[0].(string); cursor == "0" {
			return out
		}
	}
}
