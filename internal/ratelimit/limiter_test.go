package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// limiterBackend is one Redis the limiter suite runs against, with a clock the test can
// move. admin goes around the client under test, so that observations cannot share its
// bugs.
type limiterBackend struct {
	rdb   *redisconn.Client
	admin admin
	// sleep lets d pass on the server's clock.
	sleep func(d time.Duration)
	// alignTo waits until the server's clock is off into a window of w since the epoch.
	alignTo func(w, off time.Duration)
	// exact reports that the clock stands still between calls, so that durations can be
	// compared exactly rather than within bounds.
	exact bool
}

// limiterBackends: a real redis-server on the wall clock, and miniredis on a clock the test
// sets (SetTime, with ClockTTL so that TTLs follow it), which makes every duration exact
// and the suite fast.
var limiterBackends = []struct {
	name  string
	start func(t testing.TB) *limiterBackend
}{
	{"redis-server", startLimiterRedis},
	{"miniredis", startLimiterMiniredis},
}

func startLimiterRedis(t testing.TB) *limiterBackend {
	s := redistest.Start(t)
	return &limiterBackend{
		rdb:   newClient(t, s.URL(), true),
		admin: admin{newClient(t, s.URL(), false)},
		sleep: time.Sleep,
		alignTo: func(w, off time.Duration) {
			now := time.Now()
			time.Sleep(nextPhase(now, w, off).Sub(now))
		},
	}
}

func startLimiterMiniredis(t testing.TB) *limiterBackend {
	m, err := miniredis.Run()
	if err != nil {
		t.Fatalf("start miniredis: %v", err)
	}
	t.Cleanup(m.Close)
	var mu sync.Mutex
	// 1_700_000_000 s is a multiple of every window the suite uses.
	now := time.Unix(1_700_000_000, 0)
	m.SetTime(now)
	m.ClockTTL(true)
	url := "redis://" + m.Addr()
	return &limiterBackend{
		rdb:   newClient(t, url, false),
		admin: admin{newClient(t, url, false)},
		sleep: func(d time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			now = now.Add(d)
			m.SetTime(now)
		},
		alignTo: func(w, off time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			now = nextPhase(now, w, off)
			m.SetTime(now)
		},
		exact: true,
	}
}

// nextPhase is the first instant after now that lies off into a window of w.
func nextPhase(now time.Time, w, off time.Duration) time.Time {
	ns := time.Duration(now.UnixNano())
	next := ns - ns%w + off
	if next <= ns {
		next += w
	}
	return time.Unix(0, int64(next))
}

func allow(t *testing.T, l *Limiter, reqs ...Request) (time.Time, []Decision) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	now, ds, err := l.Allow(ctx, reqs)
	if err != nil {
		t.Fatalf("Allow(%+v): %v", reqs, err)
	}
	if len(ds) != len(reqs) {
		t.Fatalf("Allow(%+v): %d decisions, want %d", reqs, len(ds), len(reqs))
	}
	return now, ds
}

func allowOne(t *testing.T, l *Limiter, r Request) Decision {
	t.Helper()
	_, ds := allow(t, l, r)
	return ds[0]
}

// get reads a key around the limiter: "" when it does not exist.
func (b *limiterBackend) get(t *testing.T, key string) string {
	t.Helper()
	return b.admin.get(t, key)
}

// within checks got against want: exactly on a clock that stands still, else in
// [want-slack, want], because time passing between calls only brings a reset closer.
func (b *limiterBackend) within(t *testing.T, what string, got, want, slack time.Duration) {
	t.Helper()
	if b.exact && got != want || !b.exact && (got > want || got < want-slack) {
		t.Fatalf("%s = %v, want %v (slack %v, exact clock %t)", what, got, want, slack, b.exact)
	}
}

// exhaust spends a limit of Requests 1 at a time and checks the exact Remaining sequence,
// then checks that one more request is denied and returns its decision.
func exhaust(t *testing.T, l *Limiter, r Request) Decision {
	t.Helper()
	limit := r.Limit.capacity()
	for want := limit - 1; want >= 0; want-- {
		d := allowOne(t, l, r)
		if !d.Allowed || d.Remaining != want || d.Limit != limit || d.RetryAfter != 0 {
			t.Fatalf("request %d: %+v, want allowed with remaining %d of %d", limit-want, d, want, limit)
		}
	}
	d := allowOne(t, l, r)
	if d.Allowed || d.Remaining != 0 || d.RetryAfter <= 0 {
		t.Fatalf("request %d: %+v, want denied with remaining 0 and a retry after", limit+1, d)
	}
	return d
}

var limiterCases = []struct {
	name string
	run  func(t *testing.T, b *limiterBackend)
}{
	{"fixed exhaustion counts denials like rate-limit-redis", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		r := Request{Key: "rl:{t}a", Limit: Limit{Requests: 5, Window: 2 * time.Second}, Cost: 1}
		d := exhaust(t, l, r)
		b.within(t, "reset", d.Reset, 2*time.Second, 500*time.Millisecond)
		if d.RetryAfter != d.Reset {
			t.Fatalf("retry after %v, want the reset %v", d.RetryAfter, d.Reset)
		}
		// A single fixed request is counted even when denied, as rate-limit-redis counts.
		if got := b.get(t, r.Key); got != "6" {
			t.Fatalf("counter %q after 6 requests, want \"6\"", got)
		}
	}},
	{"fixed check only never counts", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		r := Request{Key: "rl:{t}a", Limit: Limit{Requests: 5, Window: 2 * time.Second}}
		if d := allowOne(t, l, r); !d.Allowed || d.Remaining != 5 || d.Reset != 0 {
			t.Fatalf("check of a missing key: %+v, want allowed, remaining 5, reset 0", d)
		}
		if got := b.get(t, r.Key); got != "" {
			t.Fatalf("a check created the key: %q", got)
		}
		allowOne(t, l, Request{Key: r.Key, Limit: r.Limit, Cost: 2})
		for range 3 {
			if d := allowOne(t, l, r); !d.Allowed || d.Remaining != 3 || d.Reset <= 0 || d.Reset > 2*time.Second {
				t.Fatalf("check after 2 hits: %+v, want remaining 3 and a reset in (0, 2s]", d)
			}
		}
		if got := b.get(t, r.Key); got != "2" {
			t.Fatalf("counter %q, want \"2\"", got)
		}
	}},
	{"fixed recovers after the window", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		r := Request{Key: "rl:{t}a", Limit: Limit{Requests: 2, Window: time.Second}, Cost: 1}
		d := exhaust(t, l, r)
		b.sleep(d.RetryAfter + 5*time.Millisecond)
		if d := allowOne(t, l, r); !d.Allowed || d.Remaining != 1 {
			t.Fatalf("after the window: %+v, want allowed with remaining 1", d)
		}
	}},
	{"sliding exhaustion", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		w := 2 * time.Second
		b.alignTo(w, 100*time.Millisecond)
		r := Request{Key: "{t}s", Limit: Limit{Requests: 5, Window: w, Algorithm: AlgorithmSliding}, Cost: 1}
		d := exhaust(t, l, r)
		// The window ends 1.9s from here; the previous window is empty, so the 5 hits
		// must age until their weight is 4/5: a fifth of the next window later.
		b.within(t, "reset", d.Reset, 1900*time.Millisecond, 300*time.Millisecond)
		b.within(t, "retry after", d.RetryAfter, 1900*time.Millisecond+w/5, 300*time.Millisecond)
		if d := allowOne(t, l, Request{Key: r.Key, Limit: r.Limit}); !d.Allowed || d.Remaining != 0 {
			t.Fatalf("check when used up: %+v, want allowed (not exceeded) with remaining 0", d)
		}
		now, _ := allow(t, l, Request{Key: r.Key, Limit: r.Limit})
		start := now.UnixMilli() - now.UnixMilli()%w.Milliseconds()
		if got := b.get(t, r.Key+":"+strconv.FormatInt(start, 10)); got != "5" {
			t.Fatalf("current sub-window counter %q, want \"5\" (denials are not counted)", got)
		}
	}},
	{"sliding weights the previous window", func(t *testing.T, b *limiterBackend) {
		// 10 per second. 8 hits 600ms into a window; then, 250ms into the next one, the
		// previous window still weighs (1000-250)/1000 = 0.75, so it counts 8*0.75 = 6:
		// a check sees 4 remaining, four hits leave 3, 2, 1 and 0 (6+4 = 10 <= 10), and a
		// fifth is denied (6+4+1 = 11). It can retry when 8*weight <= 10-4-1 = 5, at a
		// weight of 5/8, that is 375ms into the window: 125ms later. The numbers hold for
		// any phase in [250ms, 375ms), so a late wake-up on the wall clock cannot change them.
		l := NewLimiter(b.rdb)
		w := time.Second
		r := Request{Key: "{t}s", Limit: Limit{Requests: 10, Window: w, Algorithm: AlgorithmSliding}, Cost: 1}
		b.alignTo(w, 600*time.Millisecond)
		for range 8 {
			allowOne(t, l, r)
		}
		b.alignTo(w, 250*time.Millisecond)
		now, ds := allow(t, l, Request{Key: r.Key, Limit: r.Limit})
		if phase := time.Duration(now.UnixNano()) % w; phase < 250*time.Millisecond || phase >= 375*time.Millisecond {
			t.Fatalf("redis clock %v into the window, want [250ms, 375ms): the host is too slow for this test", phase)
		}
		if d := ds[0]; !d.Allowed || d.Remaining != 4 {
			t.Fatalf("check: %+v, want remaining 4", d)
		}
		for _, want := range []int64{3, 2, 1, 0} {
			if d := allowOne(t, l, r); !d.Allowed || d.Remaining != want {
				t.Fatalf("hit: %+v, want allowed with remaining %d", d, want)
			}
		}
		d := allowOne(t, l, r)
		if d.Allowed {
			t.Fatalf("fifth hit: %+v, want denied", d)
		}
		b.within(t, "retry after", d.RetryAfter, 125*time.Millisecond, 125*time.Millisecond)
		b.within(t, "reset", d.Reset, 750*time.Millisecond, 125*time.Millisecond)
		b.sleep(d.RetryAfter)
		if d := allowOne(t, l, r); !d.Allowed {
			t.Fatalf("after retry after: %+v, want allowed", d)
		}
	}},
	{"sliding recovers after two windows", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		w := 500 * time.Millisecond
		b.alignTo(w, 50*time.Millisecond)
		r := Request{Key: "{t}s", Limit: Limit{Requests: 2, Window: w, Algorithm: AlgorithmSliding}, Cost: 1}
		d := exhaust(t, l, r)
		b.sleep(d.RetryAfter)
		if d := allowOne(t, l, r); !d.Allowed {
			t.Fatalf("after retry after: %+v, want allowed", d)
		}
		b.sleep(2 * w)
		if d := allowOne(t, l, Request{Key: r.Key, Limit: r.Limit}); !d.Allowed || d.Remaining != 2 {
			t.Fatalf("two windows later: %+v, want the whole quota", d)
		}
	}},
	{"gcra exhaustion and check only", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		r := Request{Key: "{t}g", Limit: Limit{Requests: 5, Window: time.Second, Algorithm: AlgorithmGCRA}, Cost: 1}
		check := Request{Key: r.Key, Limit: r.Limit}
		if d := allowOne(t, l, check); !d.Allowed || d.Remaining != 5 || d.Reset != 0 {
			t.Fatalf("check of a missing key: %+v, want remaining 5, reset 0", d)
		}
		if got := b.get(t, r.Key); got != "" {
			t.Fatalf("a check created the key: %q", got)
		}
		d := exhaust(t, l, r)
		// Five hits of 200ms each fill the burst: full again in 1s, and the next hit
		// fits one interval from now.
		b.within(t, "reset", d.Reset, time.Second, 300*time.Millisecond)
		b.within(t, "retry after", d.RetryAfter, 200*time.Millisecond, 300*time.Millisecond)
		tat := b.get(t, r.Key)
		if d := allowOne(t, l, check); d.Remaining != 0 || b.get(t, r.Key) != tat {
			t.Fatalf("check when used up: %+v, key %q then %q; want remaining 0, key unchanged", d, tat, b.get(t, r.Key))
		}
		b.sleep(d.Reset)
		if d := allowOne(t, l, check); !d.Allowed || d.Remaining != 5 || d.Reset != 0 {
			t.Fatalf("after the reset: %+v, want the whole quota", d)
		}
	}},
	{"gcra burst then steady rate", func(t *testing.T, b *limiterBackend) {
		// 10 per second is one every 100ms; a burst of 3 goes at once.
		l := NewLimiter(b.rdb)
		r := Request{Key: "{t}g", Limit: Limit{Requests: 10, Window: time.Second, Algorithm: AlgorithmGCRA, Burst: 3}, Cost: 1}
		d := exhaust(t, l, r)
		b.within(t, "retry after", d.RetryAfter, 100*time.Millisecond, 100*time.Millisecond)
		for i := range 3 {
			b.sleep(d.RetryAfter)
			if d := allowOne(t, l, r); !d.Allowed || d.Remaining != 0 {
				t.Fatalf("steady request %d: %+v, want allowed with remaining 0", i, d)
			}
			if d = allowOne(t, l, r); d.Allowed {
				t.Fatalf("second request of interval %d: %+v, want denied", i, d)
			}
			b.within(t, "retry after", d.RetryAfter, 100*time.Millisecond, 100*time.Millisecond)
		}
	}},
	{"all or nothing across limits", func(t *testing.T, b *limiterBackend) {
		for _, algo := range []Algorithm{AlgorithmFixed, AlgorithmSliding, AlgorithmGCRA} {
			t.Run(algo.String(), func(t *testing.T) {
				l := NewLimiter(b.rdb)
				minute := Request{Key: "{t}:" + algo.String() + ":m", Limit: Limit{Requests: 5, Window: time.Minute, Algorithm: algo}, Cost: 1}
				hour := Request{Key: "{t}:" + algo.String() + ":h", Limit: Limit{Requests: 2, Window: time.Hour, Algorithm: algo}, Cost: 1}
				for i := range 2 {
					if _, ds := allow(t, l, minute, hour); !ds[0].Allowed || !ds[1].Allowed {
						t.Fatalf("call %d: %+v, want both allowed", i, ds)
					}
				}
				_, ds := allow(t, l, minute, hour)
				if !ds[0].Allowed || ds[1].Allowed || ds[0].Remaining != 3 || ds[0].RetryAfter != 0 {
					t.Fatalf("third call: %+v, want the minute allowed with 3 left (not counted) and the hour denied", ds)
				}
				if _, ds := allow(t, l, Request{Key: minute.Key, Limit: minute.Limit}); ds[0].Remaining != 3 {
					t.Fatalf("minute after a denied call: %+v, want 3 left", ds)
				}
			})
		}
	}},
	{"one call mixes algorithms", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		reqs := []Request{
			{Key: "rl:{t}f", Limit: Limit{Requests: 3, Window: time.Minute}, Cost: 1},
			{Key: "{t}s", Limit: Limit{Requests: 3, Window: time.Minute, Algorithm: AlgorithmSliding}, Cost: 1},
			{Key: "{t}g", Limit: Limit{Requests: 1, Window: time.Minute, Algorithm: AlgorithmGCRA}, Cost: 1},
		}
		if _, ds := allow(t, l, reqs...); ds[0].Remaining != 2 || ds[1].Remaining != 2 || ds[2].Remaining != 0 {
			t.Fatalf("first call: %+v, want remaining 2, 2, 0", ds)
		}
		_, ds := allow(t, l, reqs...)
		if !ds[0].Allowed || !ds[1].Allowed || ds[2].Allowed || ds[0].Remaining != 2 || ds[1].Remaining != 2 {
			t.Fatalf("second call: %+v, want only gcra denied and nothing counted", ds)
		}
		if got := b.get(t, reqs[0].Key); got != "1" {
			t.Fatalf("fixed counter %q after a denied call, want \"1\"", got)
		}
	}},
	{"cost above the limit is denied for a window", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		for _, algo := range []Algorithm{AlgorithmFixed, AlgorithmSliding, AlgorithmGCRA} {
			r := Request{Key: "{t}:" + algo.String(), Limit: Limit{Requests: 3, Window: time.Minute, Algorithm: algo}, Cost: 4}
			if d := allowOne(t, l, r); d.Allowed || d.RetryAfter != time.Minute {
				t.Fatalf("%v: %+v, want denied with retry after 1m", algo, d)
			}
		}
	}},
	{"Now is Redis time", func(t *testing.T, b *limiterBackend) {
		now, _ := allow(t, NewLimiter(b.rdb), Request{Key: "{t}", Limit: Limit{Requests: 1, Window: time.Second}})
		want := b.admin.time(t)
		if d := want.Sub(now); d < 0 || d > time.Second {
			t.Fatalf("Now %v, server TIME %v after it", now, want)
		}
	}},
	{"the script goes by its SHA1 and survives SCRIPT FLUSH", func(t *testing.T, b *limiterBackend) {
		c := &countingScripter{Scripter: b.rdb}
		l := NewLimiter(c)
		r := Request{Key: "{t}", Limit: Limit{Requests: 100, Window: time.Minute, Algorithm: AlgorithmGCRA}, Cost: 1}
		allowOne(t, l, r)
		if !b.admin.scriptExists(t, l.sha) {
			t.Fatalf("after the first Allow the server does not know script %s: EVALSHA would never hit", l.sha)
		}
		for range 3 {
			allowOne(t, l, r)
		}
		b.admin.do(t, "SCRIPT", nil, "FLUSH")
		if d := allowOne(t, l, r); d.Remaining != 95 {
			t.Fatalf("after SCRIPT FLUSH: %+v, want remaining 95", d)
		}
		if n, bad := c.calls.Load(), c.badSHA.Load(); n != 5 || bad != 0 {
			t.Fatalf("%d script calls, %d not named by their SHA1; want 5 and 0", n, bad)
		}
	}},
	{"a stored value of the wrong kind is the server's error", func(t *testing.T, b *limiterBackend) {
		l := NewLimiter(b.rdb)
		for _, algo := range []Algorithm{AlgorithmFixed, AlgorithmGCRA} {
			key := "{t}:" + algo.String()
			b.admin.set(t, key, "abc", time.Minute)
			_, _, err := l.Allow(t.Context(), []Request{{Key: key, Limit: Limit{Requests: 1, Window: time.Second, Algorithm: algo}, Cost: 1}})
			if err == nil || errors.Is(err, ErrBadReply) {
				t.Fatalf("%v on a non-number: error %v, want the script's error", algo, err)
			}
		}
	}},
}

func TestLimiter(t *testing.T) {
	for _, be := range limiterBackends {
		t.Run(be.name, func(t *testing.T) {
			for _, tc := range limiterCases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t, be.start(t))
				})
			}
		})
	}
}
