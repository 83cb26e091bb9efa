package ratelimit

import (
	"context"
	"errors"
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
