package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"
)

// Peek reads every algorithm's counters as Allow left them, agrees with Allow about what the
// next request gets, and changes nothing: no key created, no count, no TTL refreshed. On
// every topology, with the keys in three slots.
func TestPeekReadsWithoutCounting(t *testing.T) {
	for _, topo := range slotTopologies {
		t.Run(topo.name, func(t *testing.T) {
			b := topo.start(t)
			var opts []LimiterOption
			if b.cluster != nil {
				opts = append(opts, WithClusterSlots())
			}
			l := NewLimiter(b.rdb, opts...)
			ctx := context.Background()
			reqs := []Request{
				{Key: "rl:{peek-a}", Limit: Limit{Requests: 3, Window: time.Hour}},
				{Key: "rl:{peek-b}", Limit: Limit{Requests: 10, Window: time.Hour, Algorithm: AlgorithmSliding}},
				{Key: "rl:{peek-c}", Limit: Limit{Requests: 10, Window: time.Hour, Algorithm: AlgorithmGCRA, Burst: 5}},
			}
			b.spread(t, reqs[0].Key, reqs[1].Key, reqs[2].Key)

			_, fresh, err := l.Peek(ctx, reqs)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range fresh {
				if st.Count != 0 || st.Previous != 0 || !st.TAT.IsZero() || st.Remaining != reqs[i].Limit.capacity() || !st.Allowed ||
					st.Reset != 0 && reqs[i].Limit.Algorithm != AlgorithmSliding { // sliding's Reset is its sub-window's end
					t.Fatalf("fresh %d: %+v", i, st)
				}
				for _, k := range st.Keys {
					if n := b.admin.integer(t, "EXISTS", []string{k}); n != 0 {
						t.Fatalf("peek created %s", k)
					}
				}
			}

			for i := range 3 {
				one := make([]Request, len(reqs))
				for j, r := range reqs {
					r.Cost = 1
					one[j] = r
				}
				if _, ds, err := l.Allow(ctx, one); err != nil || !ds[0].Allowed || !ds[1].Allowed || !ds[2].Allowed {
					t.Fatalf("allow %d: %v %v", i, ds, err)
				}
			}
			ttls := func() map[string]int64 {
				out := map[string]int64{}
				for _, st := range fresh {
					for _, k := range st.Keys {
						out[k] = b.admin.integer(t, "PTTL", []string{k})
					}
				}
				return out
			}
			values := func() map[string]string {
				out := map[string]string{}
				for _, st := range fresh {
					for _, k := range st.Keys {
						out[k] = b.admin.get(t, k)
					}
				}
				return out
			}
			before, beforeTTL := values(), ttls()
			_, states, err := l.Peek(ctx, reqs)
			if err != nil {
				t.Fatal(err)
			}
			after, afterTTL := values(), ttls()
			for k, v := range before {
				if after[k] != v {
					t.Fatalf("peek changed %s: %q -> %q", k, v, after[k])
				}
				// A TTL only runs down: a refresh would put it back up.
				if afterTTL[k] > beforeTTL[k] {
					t.Fatalf("peek refreshed the TTL of %s: %d -> %d ms", k, beforeTTL[k], afterTTL[k])
				}
			}

			fixed, sliding, gcra := states[0], states[1], states[2]
			if fixed.Count != 3 || fixed.Remaining != 0 || fixed.Allowed || fixed.Reset <= 0 || fixed.Reset > time.Hour {
				t.Fatalf("fixed: %+v", fixed)
			}
			if sliding.Count+sliding.Previous != 3 || sliding.Remaining != 7 || !sliding.Allowed || len(sliding.Keys) != 2 {
				t.Fatalf("sliding: %+v", sliding)
			}
			if gcra.TAT.IsZero() || gcra.Remaining != 2 || !gcra.Allowed || gcra.Reset <= 0 {
				t.Fatalf("gcra: %+v", gcra)
			}
			// What Allow answers next agrees with the peek.
			next := make([]Request, len(reqs))
			for j, r := range reqs {
				r.Cost = 0
				next[j] = r
			}
			_, ds, err := l.Allow(ctx, next)
			if err != nil {
				t.Fatal(err)
			}
			for i, d := range ds {
				if d.Remaining != states[i].Remaining {
					t.Fatalf("limit %d: Allow says remaining %d, Peek %d", i, d.Remaining, states[i].Remaining)
				}
			}
			if _, ds, err = l.Allow(ctx, []Request{{Key: reqs[0].Key, Limit: reqs[0].Limit, Cost: 1}}); err != nil || ds[0].Allowed {
				t.Fatalf("fixed after the peek said over: %v %v", ds, err)
			}
		})
	}
}

// Peek reads a credits balance as a decision would see it now, changing nothing: a balance
// without refill as stored, a refill that is due applied (not stored), a balance above its
// quota unclamped, a missing balance as 0 and never refilled. What Allow answers next agrees.
// On every topology, with the balances in three slots.
func TestPeekCredits(t *testing.T) {
	for _, topo := range slotTopologies {
		t.Run(topo.name, func(t *testing.T) {
			b := topo.start(t)
			var opts []LimiterOption
			if b.cluster != nil {
				opts = append(opts, WithClusterSlots())
			}
			l := NewLimiter(b.rdb, opts...)
			ctx := context.Background()
			plain := Request{Key: "cr:{peek-a}", Limit: creditLimit(2, RefillNone)}
			due := Request{Key: "cr:{peek-b}", Limit: creditLimit(5, RefillMonthly)}
			notDue := Request{Key: "cr:{peek-c}", Limit: creditLimit(2, RefillDaily)}
			missing := Request{Key: "cr:{peek-a}:missing", Limit: creditLimit(4, RefillDaily)}
			b.spread(t, plain.Key, due.Key, notDue.Key)
			reqs := []Request{plain, due, notDue, missing}

			if _, err := InitCredits(ctx, b.rdb, plain.Key, 2, plain.Limit); err != nil {
				t.Fatal(err)
			}
			now := b.admin.serverNow(t)
			// A balance spent to 0 last month is due its refill; one of 3 (above its quota of
			// 2, an operator added some) stored this day is not.
			b.admin.do(t, "HSET", []string{due.Key}, "remaining", "0", "period", strconv.FormatInt(RefillPeriod(RefillMonthly, now)-1, 10))
			b.admin.do(t, "HSET", []string{notDue.Key}, "remaining", "3", "period", strconv.FormatInt(RefillPeriod(RefillDaily, now), 10))
			dump := func() string {
				out := ""
				for _, r := range reqs {
					out += fmt.Sprintf("%s=%v ttl %d; ", r.Key, b.admin.do(t, "HGETALL", []string{r.Key}), b.admin.integer(t, "PTTL", []string{r.Key}))
				}
				return out
			}
			before := dump()
			_, states, err := l.Peek(ctx, reqs)
			if err != nil {
				t.Fatal(err)
			}
			if after := dump(); after != before {
				t.Fatalf("peek changed the balances:\n%s\n%s", before, after)
			}
			if n := b.admin.integer(t, "EXISTS", []string{missing.Key}); n != 0 {
				t.Fatal("peek created the missing balance")
			}
			near := func(got time.Duration, r Refill) bool {
				left := NextRefill(r, now).Sub(now)
				return got > left-5*time.Second && got <= left
			}
			if s := states[0]; s.Remaining != 2 || !s.Allowed || s.Reset != 0 || s.Refilled || len(s.Keys) != 1 || s.Keys[0] != plain.Key {
				t.Fatalf("no refill: %+v", s)
			}
			if s := states[1]; s.Remaining != 5 || !s.Allowed || !s.Refilled || !near(s.Reset, RefillMonthly) {
				t.Fatalf("refill due: %+v, want the refill amount 5 and the next month in %v", s, NextRefill(RefillMonthly, now).Sub(now))
			}
			if s := states[2]; s.Remaining != 3 || !s.Allowed || s.Refilled || !near(s.Reset, RefillDaily) {
				t.Fatalf("refill not due: %+v, want the stored 3 (not clamped to 2) and the next day", s)
			}
			if s := states[3]; s.Remaining != 0 || s.Allowed || s.Refilled || !near(s.Reset, RefillDaily) {
				t.Fatalf("missing: %+v, want 0, not allowed, never refilled", s)
			}

			// What Allow answers next agrees with the peek, one balance at a time (a
			// denial in one call would spend nothing in the others).
			for i, r := range reqs {
				r.Cost = 1
				_, ds, err := l.Allow(ctx, []Request{r})
				if err != nil {
					t.Fatal(err)
				}
				want := states[i].Remaining
				if states[i].Allowed {
					want--
				}
				if d := ds[0]; d.Allowed != states[i].Allowed || d.Remaining != want || d.Reset != 0 && !near(d.Reset, r.Limit.Refill) {
					t.Fatalf("%s: Allow gave %+v after a peek of %+v", r.Key, d, states[i])
				}
			}
			// Spent to 0, the balance peeks as over.
			_, states, err = l.Peek(ctx, reqs[:1])
			if err != nil {
				t.Fatal(err)
			}
			_, ds, err := l.Allow(ctx, []Request{{Key: plain.Key, Limit: plain.Limit, Cost: 1}})
			if err != nil || states[0].Remaining != 1 || !states[0].Allowed || !ds[0].Allowed {
				t.Fatalf("peek %+v, then allow %v %v", states[0], ds, err)
			}
			if _, states, err = l.Peek(ctx, reqs[:1]); err != nil || states[0].Remaining != 0 || states[0].Allowed {
				t.Fatalf("at 0: %+v %v", states, err)
			}
		})
	}
}

// A credits balance that is not a number is ErrBadReply, never a made-up balance.
func TestPeekCreditsBadReplies(t *testing.T) {
	r := Request{Key: "k", Limit: creditLimit(1, RefillDaily)}
	for name, reply := range map[string]any{
		"balance not an int": []any{int64(1), int64(2), int64(0), "1.5", "3"},
		"period not an int":  []any{int64(1), int64(2), int64(0), "1", "x"},
	} {
		t.Run(name, func(t *testing.T) {
			l := NewLimiter(replyScripter{reply})
			if _, _, err := l.Peek(context.Background(), []Request{r}); !errors.Is(err, ErrBadReply) {
				t.Fatalf("err = %v, want ErrBadReply", err)
			}
		})
	}
}

// Peek refuses what Allow refuses, before any Redis call.
func TestPeekRejectsBadRequests(t *testing.T) {
	l := NewLimiter(failScripter{})
	for _, r := range []Request{
		{Key: "", Limit: Limit{Requests: 1, Window: time.Second}},
		{Key: "k", Limit: Limit{Requests: 0, Window: time.Second}},
		{Key: "k", Limit: Limit{Requests: 1, Window: time.Microsecond}},
	} {
		if _, _, err := l.Peek(context.Background(), []Request{r}); !errors.Is(err, ErrInvalidRequest) {
			t.Fatalf("%+v: err = %v, want ErrInvalidRequest", r, err)
		}
	}
}

// failScripter answers every call with a reply of the wrong shape: bad input must be refused
// before it, with ErrInvalidRequest.
type failScripter struct{}

func (failScripter) Eval(context.Context, string, string, []string, ...any) (any, error) {
	return "not an array", nil
}

// A reply of the wrong shape is ErrBadReply, never a made-up count.
func TestPeekBadReplies(t *testing.T) {
	r := Request{Key: "k", Limit: Limit{Requests: 1, Window: time.Second}}
	for name, reply := range map[string]any{
		"not an array":    "x",
		"short":           []any{int64(1), int64(2)},
		"negative ttl":    []any{int64(1), int64(2), int64(-5), "", ""},
		"count not a int": []any{int64(1), int64(2), int64(5), "1.5", ""},
		"count missing":   []any{int64(1), int64(2), int64(5), nil, ""},
	} {
		t.Run(name, func(t *testing.T) {
			l := NewLimiter(replyScripter{reply})
			if _, _, err := l.Peek(context.Background(), []Request{r}); !errors.Is(err, ErrBadReply) {
				t.Fatalf("err = %v, want ErrBadReply", err)
			}
		})
	}
}

type replyScripter struct{ reply any }

func (s replyScripter) Eval(context.Context, string, string, []string, ...any) (any, error) {
	return s.reply, nil
}
