package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// creditLimit is a credits quota of n, refilled every r.
func creditLimit(n int64, r Refill) Limit {
	return Limit{Algorithm: AlgorithmCredits, Requests: n, Refill: r}
}

// hget is field of the hash at key, "" when missing.
func (a admin) hget(t testing.TB, key, field string) string {
	t.Helper()
	v, _ := a.do(t, "HGET", []string{key}, field).(string)
	return v
}

// serverNow is the Redis server's clock.
func (a admin) serverNow(t testing.TB) time.Time {
	t.Helper()
	v, ok := a.do(t, "TIME", nil).([]any)
	if !ok || len(v) != 2 {
		t.Fatalf("TIME: reply %v", v)
	}
	sec, _ := strconv.ParseInt(v[0].(string), 10, 64)
	usec, _ := strconv.ParseInt(v[1].(string), 10, 64)
	return time.Unix(sec, usec*1000)
}

// The Lua period arithmetic (days and civil months from Redis's clock) agrees with Go's
// calendar at every kind of boundary: month ends of 28, 29, 30 and 31 days, year ends,
// century leap rules, the epoch, and a second either side of each.
func TestCreditsPeriodLuaMatchesGo(t *testing.T) {
	t.Parallel()
	b := startLimiterRedis(t)
	script := "local kind, sec = tonumber(ARGV[1]), tonumber(ARGV[2])\n" + creditsPeriodLua + "\nreturn {cur, nxt}"
	sha := scriptSHA(script)
	var instants []time.Time
	for _, d := range []string{"1970-01-01", "1999-12-31", "2000-02-28", "2000-02-29", "2000-03-01", "2023-02-28",
		"2024-02-29", "2024-12-31", "2026-04-30", "2026-12-05", "2100-02-28", "2100-03-01", "2400-02-29", "2999-12-31"} {
		day, err := time.Parse("2006-01-02", d)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []time.Duration{0, time.Second, 12 * time.Hour, 24*time.Hour - time.Second, 24 * time.Hour} {
			instants = append(instants, day.Add(off))
		}
	}
	for _, at := range instants {
		for _, r := range []Refill{RefillDaily, RefillMonthly} {
			v, err := b.rdb.Eval(t.Context(), sha, script, nil, int(r), at.Unix())
			if err != nil {
				t.Fatal(err)
			}
			got := v.([]any)
			cur, nxt := got[0].(int64), got[1].(int64)
			if want := RefillPeriod(r, at); cur != want {
				t.Errorf("%v at %v: period %d, want %d", r, at, cur, want)
			}
			if want := NextRefill(r, at).Unix(); nxt != want {
				t.Errorf("%v at %v: next refill %d (%v), want %d", r, at, nxt, time.Unix(nxt, 0).UTC(), want)
			}
		}
	}
}

// The script's semantics on a real redis-server and on the embedded store: spending, zero, refill when the period
// advances, no refill from an older clock, a missing balance, a balance above its quota.
func TestLimiterCredits(t *testing.T) {
	t.Parallel()
	for _, be := range limiterBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			testLimiterCredits(t, be.start(t))
		})
	}
}

func testLimiterCredits(t *testing.T, b *limiterBackend) {
	l := NewLimiter(b.rdb)
	ctx := t.Context()

	t.Run("spend to zero without refill", func(t *testing.T) {
		key := "cr:{spend}"
		lim := creditLimit(3, RefillNone)
		if _, err := InitCredits(ctx, b.rdb, key, 3, lim); err != nil {
			t.Fatal(err)
		}
		for want := int64(2); want >= 0; want-- {
			d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
			if !d.Allowed || d.Remaining != want || d.Limit != 3 || d.Reset != 0 {
				t.Fatalf("got %+v, want allowed with %d remaining of 3, no reset", d, want)
			}
		}
		d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
		if d.Allowed || d.Remaining != 0 || d.RetryAfter != MaxWindow || d.Reset != 0 {
			t.Fatalf("at zero: got %+v, want denied, retry after MaxWindow", d)
		}
		if got := b.admin.hget(t, key, "remaining"); got != "0" {
			t.Errorf("balance %q after the denial, want 0", got)
		}
	})

	t.Run("refill when the period advanced", func(t *testing.T) {
		key := "cr:{refill}"
		lim := creditLimit(5, RefillMonthly)
		cur := RefillPeriod(RefillMonthly, b.admin.serverNow(t))
		b.admin.do(t, "HSET", []string{key}, "remaining", "0", "period", strconv.FormatInt(cur-1, 10))
		d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
		if !d.Allowed || d.Remaining != 4 || d.Limit != 5 {
			t.Fatalf("got %+v, want allowed with 4 of 5 left after the refill", d)
		}
		now := b.admin.serverNow(t)
		if left := NextRefill(RefillMonthly, now).Sub(now); d.Reset < left-time.Second || d.Reset > left+time.Second {
			t.Errorf("reset %v, want about %v (the first of next month)", d.Reset, left)
		}
		if got := b.admin.hget(t, key, "period"); got != strconv.FormatInt(cur, 10) {
			t.Errorf("stored period %s, want %d", got, cur)
		}
		// The refill replaced the balance: 0 became 5, not 0+5 on top of something else.
		b.admin.do(t, "HSET", []string{key}, "remaining", "7", "period", strconv.FormatInt(cur-3, 10))
		if d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1}); d.Remaining != 4 {
			t.Errorf("a refill after three periods: remaining %d, want 4 (set to 5, not added)", d.Remaining)
		}
	})

	// On the embedded store's clock, which the test moves: a balance spent to zero is
	// refilled the first instant of the next UTC day or month, and not a second before.
	t.Run("refill at the boundary on the server's clock", func(t *testing.T) {
		if !b.exact {
			t.Skip("a real server's clock cannot be moved")
		}
		for _, r := range []Refill{RefillDaily, RefillMonthly} {
			key := "cr:{boundary" + r.String() + "}"
			lim := creditLimit(2, r)
			if _, err := SetCredits(ctx, b.rdb, key, 0, lim); err != nil {
				t.Fatal(err)
			}
			now := b.admin.serverNow(t)
			b.sleep(NextRefill(r, now).Sub(now) - time.Second)
			if d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1}); d.Allowed || d.RetryAfter != time.Second {
				t.Fatalf("%v: a second before the boundary: %+v, want denied, retry after 1s", r, d)
			}
			b.sleep(time.Second)
			d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
			if !d.Allowed || d.Remaining != 1 {
				t.Fatalf("%v: at the boundary: %+v, want refilled to 2 and 1 left", r, d)
			}
			if want := RefillLength(r, b.admin.serverNow(t)); d.Reset != want {
				t.Errorf("%v: reset %v, want the whole period %v", r, d.Reset, want)
			}
		}
	})

	t.Run("no refill from a clock behind the stored period", func(t *testing.T) {
		key := "cr:{behind}"
		lim := creditLimit(5, RefillDaily)
		cur := RefillPeriod(RefillDaily, b.admin.serverNow(t))
		ahead := strconv.FormatInt(cur+1, 10)
		b.admin.do(t, "HSET", []string{key}, "remaining", "0", "period", ahead)
		d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
		if d.Allowed || d.Remaining != 0 {
			t.Fatalf("got %+v, want denied: the balance belongs to a later period already", d)
		}
		if d.RetryAfter <= 0 || d.RetryAfter > 24*time.Hour {
			t.Errorf("retry after %v, want the time to the next midnight", d.RetryAfter)
		}
		b.admin.do(t, "HSET", []string{key}, "remaining", "2")
		if d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1}); !d.Allowed || d.Remaining != 1 {
			t.Fatalf("got %+v, want allowed with 1 left", d)
		}
		if got := b.admin.hget(t, key, "period"); got != ahead {
			t.Errorf("period moved back to %s from %s", got, ahead)
		}
	})

	t.Run("missing balance", func(t *testing.T) {
		key := "cr:{missing}"
		for _, r := range []Refill{RefillNone, RefillDaily} {
			d := allowOne(t, l, Request{Key: key, Limit: creditLimit(5, r), Cost: 1})
			if d.Allowed || d.Remaining != 0 {
				t.Fatalf("refill %v: got %+v, want denied", r, d)
			}
		}
		if n := b.admin.integer(t, "EXISTS", []string{key}); n != 0 {
			t.Errorf("a denial created the balance")
		}
	})

	t.Run("above the quota", func(t *testing.T) {
		key := "cr:{above}"
		lim := creditLimit(10, RefillDaily)
		if _, err := SetCredits(ctx, b.rdb, key, 50, lim); err != nil {
			t.Fatal(err)
		}
		d := allowOne(t, l, Request{Key: key, Limit: lim, Cost: 1})
		if !d.Allowed || d.Remaining != 49 || d.Limit != 49 {
			t.Fatalf("got %+v, want 49 remaining, limit 49", d)
		}
	})

	t.Run("not a balance", func(t *testing.T) {
		key := "cr:{bad}"
		b.admin.do(t, "HSET", []string{key}, "remaining", "x")
		if _, _, err := l.Allow(ctx, []Request{{Key: key, Limit: creditLimit(1, RefillNone), Cost: 1}}); err == nil {
			t.Fatal("a balance that is not a number was spent from")
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for name, lim := range map[string]Limit{
			"negative":       creditLimit(-1, RefillNone),
			"too large":      creditLimit(maxExact+1, RefillNone),
			"unknown refill": {Algorithm: AlgorithmCredits, Requests: 1, Refill: 7},
			"burst":          {Algorithm: AlgorithmCredits, Requests: 1, Burst: 2},
		} {
			if _, _, err := l.Allow(ctx, []Request{{Key: "cr:{x}", Limit: lim, Cost: 1}}); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("%s: err %v, want ErrInvalidRequest", name, err)
			}
		}
	})
}

// A call is all or nothing with credits in it, both ways: a rate limit that denies spends no
// credit, and a balance at zero counts against no limit.
func TestLimiterCreditsAllOrNothing(t *testing.T) {
	t.Parallel()
	for _, topo := range slotTopologies {
		t.Run(topo.name, func(t *testing.T) {
			t.Parallel()
			b := topo.start(t)
			l := NewLimiter(b.rdb, WithClusterSlots())
			ctx := t.Context()
			credits := Request{Key: "cr:{k_all}", Limit: creditLimit(5, RefillNone), Cost: 1}
			fixed := Request{Key: "rl:{p:l:apikey:k_all}", Limit: Limit{Requests: 1, Window: time.Hour}, Cost: 1}
			if b.cluster != nil {
				b.spread(t, credits.Key, fixed.Key)
			}
			if _, err := SetCredits(ctx, b.rdb, credits.Key, 2, credits.Limit); err != nil {
				t.Fatal(err)
			}
			call := func() []Decision {
				t.Helper()
				_, ds, err := l.Allow(ctx, []Request{fixed, credits})
				if err != nil {
					t.Fatal(err)
				}
				return ds
			}
			if ds := call(); !ds[0].Allowed || !ds[1].Allowed || ds[1].Remaining != 1 {
				t.Fatalf("first call: %+v, want both allowed, 1 credit left", ds)
			}
			// The limit denies: the credit is not spent (on a Cluster, taken back).
			if ds := call(); ds[0].Allowed || !ds[1].Allowed {
				t.Fatalf("second call: %+v, want the limit to deny", ds)
			}
			if got := b.admin.hget(t, credits.Key, "remaining"); got != "1" {
				t.Errorf("balance %s after a call the limit denied, want 1", got)
			}
			// Credits at zero: the limits are not counted.
			b.admin.do(t, "DEL", []string{fixed.Key})
			if _, err := SetCredits(ctx, b.rdb, credits.Key, 0, credits.Limit); err != nil {
				t.Fatal(err)
			}
			if ds := call(); !ds[0].Allowed || ds[1].Allowed {
				t.Fatalf("third call: %+v, want the credits to deny", ds)
			}
			if got := b.admin.get(t, fixed.Key); got != "" {
				t.Errorf("the limit counted %q for a call with no credits", got)
			}
		})
	}
}

// N credits admit exactly N of many concurrent calls, with a rate limit in the same call
// (on a Cluster in another slot, so that undo runs too).
func TestLimiterCreditsExactUnderConcurrency(t *testing.T) {
	t.Parallel()
	for _, topo := range slotTopologies {
		t.Run(topo.name, func(t *testing.T) {
			t.Parallel()
			b := topo.start(t)
			l := NewLimiter(b.rdb, WithClusterSlots())
			const n, callers, each = 40, 16, 10
			credits := Request{Key: "cr:{k_exact}", Limit: creditLimit(n, RefillDaily), Cost: 1}
			// A roomy limit that still denies now and then would make undo run; this one
			// never denies, so every denial is the balance's.
			limit := Request{Key: "rl:{exact}", Limit: Limit{Requests: 1000, Window: time.Hour, Algorithm: AlgorithmSliding}, Cost: 1}
			if _, err := SetCredits(t.Context(), b.rdb, credits.Key, n, credits.Limit); err != nil {
				t.Fatal(err)
			}
			var allowed, denied atomic.Int64
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					for range each {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						_, ds, err := l.Allow(ctx, []Request{limit, credits})
						cancel()
						switch {
						case err != nil:
							t.Error(err)
							return
						case ds[0].Allowed && ds[1].Allowed:
							allowed.Add(1)
						default:
							denied.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if allowed.Load() != n || denied.Load() != callers*each-n {
				t.Errorf("allowed %d, denied %d; want %d and %d", allowed.Load(), denied.Load(), n, callers*each-n)
			}
			if got := b.admin.hget(t, credits.Key, "remaining"); got != "0" {
				t.Errorf("balance %s, want 0", got)
			}
		})
	}
}

// On a Cluster, a call whose credits were spent in one slot while a limit denied in another
// gets its credit back, unless a refill replaced the balance in between.
func TestLimiterUndoScriptCredits(t *testing.T) {
	t.Parallel()
	b := startLimiterRedis(t)
	key := "cr:{undo}"
	undo := func(per int64) int64 {
		t.Helper()
		v, err := b.rdb.Eval(t.Context(), scriptSHA(limiterUndoScript), limiterUndoScript, []string{key},
			int(AlgorithmCredits), 1, per, 0)
		if err != nil {
			t.Fatal(err)
		}
		done, err := parseUndoReply(v, 1)
		if err != nil {
			t.Fatal(err)
		}
		return done[0]
	}
	b.admin.do(t, "HSET", []string{key}, "remaining", "3", "period", "100")
	if got := undo(100); got != undoDone || b.admin.hget(t, key, "remaining") != "4" {
		t.Errorf("same period: undo %d, balance %s; want done and 4", got, b.admin.hget(t, key, "remaining"))
	}
	if got := undo(99); got != undoSkipped || b.admin.hget(t, key, "remaining") != "4" {
		t.Errorf("refilled since: undo %d, balance %s; want skipped and 4", got, b.admin.hget(t, key, "remaining"))
	}
	if got := undo(-1); got != undoDone || b.admin.hget(t, key, "remaining") != "5" {
		t.Errorf("no refill: undo %d, balance %s; want done and 5", got, b.admin.hget(t, key, "remaining"))
	}
	b.admin.do(t, "DEL", []string{key})
	if got := undo(-1); got != undoSkipped || b.admin.integer(t, "EXISTS", []string{key}) != 0 {
		t.Errorf("missing balance: undo %d; want skipped and no balance made up", got)
	}
}

// The operator's operations, on a real redis-server and on the embedded store: set, add (also negative, never below 0), init (never over an
// existing balance), and a read that applies a due refill without storing it.
func TestCreditsAdmin(t *testing.T) {
	t.Parallel()
	for _, be := range limiterBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			testCreditsAdmin(t, be.start(t))
		})
	}
}

func testCreditsAdmin(t *testing.T, b *limiterBackend) {
	ctx := t.Context()
	key := "cr:{admin}"
	lim := creditLimit(100, RefillMonthly)
	if _, err := CreditsBalance(ctx, b.rdb, key, lim); !errors.Is(err, ErrNoBalance) {
		t.Fatalf("missing balance: err %v, want ErrNoBalance", err)
	}
	steps := []struct {
		name    string
		op      func() (Balance, error)
		want    int64
		written bool
	}{
		{"init", func() (Balance, error) { return InitCredits(ctx, b.rdb, key, 7, lim) }, 7, true},
		{"init again", func() (Balance, error) { return InitCredits(ctx, b.rdb, key, 9, lim) }, 7, false},
		{"set", func() (Balance, error) { return SetCredits(ctx, b.rdb, key, 10, lim) }, 10, true},
		{"add", func() (Balance, error) { return AddCredits(ctx, b.rdb, key, 5, lim) }, 15, true},
		{"take away", func() (Balance, error) { return AddCredits(ctx, b.rdb, key, -100, lim) }, 0, true},
		{"read", func() (Balance, error) { return CreditsBalance(ctx, b.rdb, key, lim) }, 0, false},
	}
	for _, s := range steps {
		got, err := s.op()
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got.Remaining != s.want || got.Written != s.written || got.NextRefill <= 0 {
			t.Fatalf("%s: got %+v, want %d remaining, written %v, a next refill", s.name, got, s.want, s.written)
		}
	}
	// A refill is due: read applies it without storing; add applies it first.
	cur := RefillPeriod(RefillMonthly, b.admin.serverNow(t))
	b.admin.do(t, "HSET", []string{key}, "remaining", "3", "period", strconv.FormatInt(cur-1, 10))
	if got, err := CreditsBalance(ctx, b.rdb, key, lim); err != nil || got.Remaining != 100 {
		t.Fatalf("read with a refill due: %+v, %v; want 100", got, err)
	}
	if got := b.admin.hget(t, key, "remaining"); got != "3" {
		t.Errorf("read stored %s", got)
	}
	if got, err := AddCredits(ctx, b.rdb, key, 1, lim); err != nil || got.Remaining != 101 {
		t.Fatalf("add with a refill due: %+v, %v; want 101 (the refill, then the add)", got, err)
	}
	if got := b.admin.hget(t, key, "period"); got != strconv.FormatInt(cur, 10) {
		t.Errorf("period %s after add, want %d", got, cur)
	}
	if _, err := SetCredits(ctx, b.rdb, key, -1, lim); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("set -1: err %v, want ErrInvalidRequest", err)
	}
	if _, err := AddCredits(ctx, b.rdb, key, maxExact, lim); err == nil {
		t.Errorf("an add past 2^51 was accepted")
	}
}

// The Guard leaves credits to Redis: a failure with credits in the call is an error without
// local decisions, and a denial by credits leaves no over-limit mark, so credits an operator
// adds work on the next request.
func TestGuardCredits(t *testing.T) {
	t.Parallel()
	b := startLimiterRedis(t)
	ctx := t.Context()
	sw := &switchable{real: NewLimiter(b.rdb)}
	g := NewGuard(sw, GuardOptions{Size: 100})
	credits := Request{Key: "cr:{guard}", Limit: creditLimit(1, RefillNone), Cost: 1}
	limit := Request{Key: "rl:{guard}", Limit: Limit{Requests: 10, Window: time.Hour}, Cost: 1}

	if _, ds, err := g.Allow(ctx, []Request{limit, credits}); err != nil || ds[1].Allowed {
		t.Fatalf("no balance: %+v, %v; want denied by credits", ds, err)
	}
	if _, err := SetCredits(ctx, b.rdb, credits.Key, 1, credits.Limit); err != nil {
		t.Fatal(err)
	}
	if _, ds, err := g.Allow(ctx, []Request{limit, credits}); err != nil || !ds[0].Allowed || !ds[1].Allowed {
		t.Fatalf("after set: %+v, %v; want allowed at once (no mark)", ds, err)
	}

	sw.fail.Store(true)
	_, ds, err := g.Allow(ctx, []Request{limit, credits})
	if err == nil || errors.Is(err, ErrFallback) || ds != nil {
		t.Fatalf("redis down with credits: %v, %v; want the error, no fallback decisions", ds, err)
	}
	if _, _, err := g.Allow(ctx, []Request{limit}); !errors.Is(err, ErrFallback) {
		t.Fatalf("redis down without credits: %v; want the fallback as before", err)
	}
}
