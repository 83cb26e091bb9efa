package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// switchable is an inner limiter the test can break: it counts its calls and, while fail
// is set, answers with errFlaky (or, when block is set, waits for the caller to give up)
// instead of asking the real limiter.
type switchable struct {
	real  Allower
	calls atomic.Int64
	fail  atomic.Bool
	block atomic.Bool
}

var errFlaky = errors.New("flaky redis")

func (s *switchable) Allow(ctx context.Context, reqs []Request) (time.Time, []Decision, error) {
	s.calls.Add(1)
	switch {
	case s.block.Load():
		<-ctx.Done()
		return time.Time{}, nil, fmt.Errorf("ratelimit: limiter script: %w", ctx.Err())
	case s.fail.Load():
		return time.Time{}, nil, errFlaky
	}
	return s.real.Allow(ctx, reqs)
}

// newGuardOnRedis is a Guard around a Limiter on a fresh redis-server, the inner limiter
// wrapped so that the test sees and controls its calls, and the raw Limiter for checks
// that go around the Guard.
func newGuardOnRedis(t *testing.T, opts GuardOptions) (*Guard, *switchable, *Limiter) {
	t.Helper()
	s := redistest.Start(t)
	l := NewLimiter(newClient(t, s.URL(), true))
	inner := &switchable{real: l}
	return NewGuard(inner, opts), inner, l
}

func guardOne(t *testing.T, a Allower, r Request) (Decision, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, ds, err := a.Allow(ctx, []Request{r})
	if err != nil && !errors.Is(err, ErrFallback) {
		return Decision{}, err
	}
	if len(ds) != 1 {
		t.Fatalf("got %d decisions (err %v), want 1", len(ds), err)
	}
	return ds[0], err
}

var guardAlgorithms = []struct {
	name  string
	limit Limit
}{
	{"fixed", Limit{Requests: 3, Window: time.Minute, Algorithm: AlgorithmFixed}},
	{"sliding", Limit{Requests: 3, Window: time.Minute, Algorithm: AlgorithmSliding}},
	{"gcra", Limit{Requests: 3, Window: time.Minute, Algorithm: AlgorithmGCRA}},
}

// A key the limiter denied is answered locally, without Redis, until its retry-after.
func TestGuardOverLimitCache(t *testing.T) {
	for _, tc := range guardAlgorithms {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int64
			g, inner, _ := newGuardOnRedis(t, GuardOptions{Size: 100, OnCacheHit: func() { hits.Add(1) }})
			r := Request{Key: "{login}:" + tc.name, Limit: tc.limit, Cost: 1}
			for i := range 3 {
				if d, err := guardOne(t, g, r); err != nil || !d.Allowed {
					t.Fatalf("hit %d: %+v %v, want allowed", i+1, d, err)
				}
			}
			denied, err := guardOne(t, g, r)
			if err != nil || denied.Allowed || denied.RetryAfter <= 0 {
				t.Fatalf("hit 4: %+v %v, want denied by redis with a retry-after", denied, err)
			}
			callsBefore := inner.calls.Load()
			for i := range 10 {
				d, err := guardOne(t, g, r)
				if err != nil || d.Allowed || d.Remaining != 0 || d.Limit != 3 {
					t.Fatalf("cached hit %d: %+v %v, want denied with remaining 0 of 3", i+1, d, err)
				}
				if d.RetryAfter <= 0 || d.RetryAfter > denied.RetryAfter || d.Reset != d.RetryAfter {
					t.Fatalf("cached hit %d: retry after %v reset %v, want both in (0, %v]", i+1, d.RetryAfter, d.Reset, denied.RetryAfter)
				}
			}
			if got := inner.calls.Load() - callsBefore; got != 0 {
				t.Errorf("redis was asked %d times for a key known to be over, want 0", got)
			}
			if got := hits.Load(); got != 10 {
				t.Errorf("OnCacheHit called %d times, want 10", got)
			}
		})
	}
}

// A call with a key known to be over is denied without counting its other keys anywhere in
// Redis; the other keys report their full quota.
func TestGuardCachedCallCountsNothing(t *testing.T) {
	g, inner, raw := newGuardOnRedis(t, GuardOptions{Size: 100})
	over := Request{Key: "{c}:over", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1}
	other := Request{Key: "{c}:other", Limit: Limit{Requests: 5, Window: time.Minute, Algorithm: AlgorithmGCRA, Burst: 7}, Cost: 1}
	for range 2 {
		if _, err := guardOne(t, g, over); err != nil {
			t.Fatal(err)
		}
	}
	before := inner.calls.Load()
	_, ds, err := g.Allow(t.Context(), []Request{other, over})
	if err != nil {
		t.Fatal(err)
	}
	want := []Decision{{Allowed: true, Limit: 7, Remaining: 7}, {Allowed: false, Limit: 1}}
	if ds[1].RetryAfter <= 0 {
		t.Fatalf("over key: retry after %v, want > 0", ds[1].RetryAfter)
	}
	want[1].Reset, want[1].RetryAfter = ds[1].RetryAfter, ds[1].RetryAfter
	for i := range want {
		if ds[i] != want[i] {
			t.Errorf("decision %d: got %+v, want %+v", i, ds[i], want[i])
		}
	}
	if n := inner.calls.Load() - before; n != 0 {
		t.Errorf("inner limiter called %d times, want 0", n)
	}
	// Cost 0 reads the other key without counting: untouched, it has its whole burst.
	_, ds, err = raw.Allow(t.Context(), []Request{{Key: other.Key, Limit: other.Limit}})
	if err != nil || ds[0].Remaining != 7 {
		t.Errorf("other key in redis: %+v %v, want remaining 7 (never counted)", ds, err)
	}
}

// The mark is never a wrong denial: two Guards (two replicas) share one Redis, and every
// time either answers from its cache, the Limiter asked directly at that moment denies too.
func TestGuardCacheNeverDeniesWhatRedisAllows(t *testing.T) {
	for _, tc := range []struct {
		name  string
		limit Limit
	}{
		{"fixed", Limit{Requests: 3, Window: 300 * time.Millisecond, Algorithm: AlgorithmFixed}},
		{"sliding", Limit{Requests: 3, Window: 300 * time.Millisecond, Algorithm: AlgorithmSliding}},
		{"gcra", Limit{Requests: 3, Window: 300 * time.Millisecond, Algorithm: AlgorithmGCRA}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := redistest.Start(t)
			raw := NewLimiter(newClient(t, s.URL(), true))
			var inners [2]*switchable
			var replicas [2]*Guard
			for i := range replicas {
				inners[i] = &switchable{real: NewLimiter(newClient(t, s.URL(), true))}
				replicas[i] = NewGuard(inners[i], GuardOptions{Size: 100})
			}
			r := Request{Key: "{x}:" + tc.name, Limit: tc.limit, Cost: 1}
			rng := rand.New(rand.NewPCG(1, 2))
			cached, checked := 0, 0
			deadline := time.Now().Add(1500 * time.Millisecond)
			for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
				k := rng.IntN(2)
				g, before := replicas[k], inners[k].calls.Load()
				start := time.Now()
				_, ds, err := g.Allow(t.Context(), []Request{r})
				if err != nil {
					t.Fatal(err)
				}
				if !ds[0].Allowed && inners[k].calls.Load() == before {
					cached++
					_, direct, err := raw.Allow(t.Context(), []Request{r})
					if err != nil {
						t.Fatal(err)
					}
					// The mark ends no earlier than start plus the time it said was left,
					// and Redis decided before now: only an allow inside that span is
					// proof. On a loaded machine the span can run out; that call proves
					// nothing either way.
					if elapsed := time.Since(start); elapsed < ds[0].RetryAfter {
						checked++
						if direct[0].Allowed {
							t.Fatalf("call %d: a replica's cache denied for %v what redis allowed %v later", i, ds[0].RetryAfter, elapsed)
						}
					}
				}
				time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
			}
			t.Logf("%d cache denials, %d checked against redis", cached, checked)
			if checked < 5 {
				t.Fatalf("only %d cache denials checked, want at least 5", checked)
			}
		})
	}
}

// When the mark ends, the next call asks Redis again.
func TestGuardMarkEnds(t *testing.T) {
	g, inner, _ := newGuardOnRedis(t, GuardOptions{Size: 100})
	r := Request{Key: "{e}:k", Limit: Limit{Requests: 1, Window: 200 * time.Millisecond}, Cost: 1}
	if d, err := guardOne(t, g, r); err != nil || !d.Allowed {
		t.Fatalf("first: %+v %v", d, err)
	}
	d, err := guardOne(t, g, r)
	if err != nil || d.Allowed {
		t.Fatalf("second: %+v %v, want denied", d, err)
	}
	before := inner.calls.Load()
	if d, _ := guardOne(t, g, r); d.Allowed || inner.calls.Load() != before {
		t.Fatalf("third: %+v, asked redis %d times, want a cached denial", d, inner.calls.Load()-before)
	}
	time.Sleep(d.RetryAfter) // the event under test is the end of this duration
	if d, err := guardOne(t, g, r); err != nil || !d.Allowed || inner.calls.Load() != before+1 {
		t.Fatalf("after the retry-after: %+v %v, asked redis %d times, want allowed by redis", d, err, inner.calls.Load()-before)
	}
}

// When the inner limiter fails, the error says so and wraps the cause, and the decisions
// come from local counts: the limit's Requests per process.
func TestGuardFallback(t *testing.T) {
	tests := []struct {
		name  string
		block bool
		cause error
	}{
		{"error", false, errFlaky},
		{"deadline", true, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var allowed, denied atomic.Int64
			g, inner, _ := newGuardOnRedis(t, GuardOptions{Size: 100, OnFallback: func(ok bool) {
				if ok {
					allowed.Add(1)
				} else {
					denied.Add(1)
				}
			}})
			inner.fail.Store(!tc.block)
			inner.block.Store(tc.block)
			r := Request{Key: "{f}:k", Limit: Limit{Requests: 3, Window: time.Minute, Algorithm: AlgorithmSliding}, Cost: 1}
			for i := range 5 {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
				_, ds, err := g.Allow(ctx, []Request{r})
				cancel()
				if !errors.Is(err, ErrFallback) || !errors.Is(err, tc.cause) {
					t.Fatalf("hit %d: err %v, want ErrFallback wrapping %v", i+1, err, tc.cause)
				}
				want := i < 3
				d := ds[0]
				if d.Allowed != want || d.Limit != 3 || d.Remaining != max(2-int64(i), 0) {
					t.Fatalf("hit %d: %+v, want allowed=%v remaining %d of 3", i+1, d, want, max(2-i, 0))
				}
				if d.Reset <= 0 || d.Reset > time.Minute || (!want && d.RetryAfter != d.Reset) {
					t.Fatalf("hit %d: reset %v retry after %v, want the local window's rest", i+1, d.Reset, d.RetryAfter)
				}
			}
			if allowed.Load() != 3 || denied.Load() != 2 {
				t.Errorf("OnFallback: %d allowed, %d denied, want 3 and 2", allowed.Load(), denied.Load())
			}
		})
	}
}

// Hits the fallback allowed count against what Redis allows next, so an outage followed by
// recovery still admits about the limit.
func TestGuardDebt(t *testing.T) {
	for _, tc := range guardAlgorithms {
		t.Run(tc.name, func(t *testing.T) {
			g, inner, _ := newGuardOnRedis(t, GuardOptions{Size: 100})
			r := Request{Key: "{d}:" + tc.name, Limit: tc.limit, Cost: 1}
			inner.fail.Store(true)
			total := 0
			for range 2 {
				if d, _ := guardOne(t, g, r); d.Allowed {
					total++
				}
			}
			inner.fail.Store(false)
			for range 6 {
				if d, _ := guardOne(t, g, r); d.Allowed {
					total++
				}
			}
			if total != 3 {
				t.Errorf("allowed %d across the outage, want the limit, 3", total)
			}
		})
	}
}

// scripted is an inner limiter whose calls each wait for the answer the test sends them.
type scripted struct {
	arrived chan chan guardAnswer
}

type guardAnswer struct {
	ds  []Decision
	err error
}

func (s *scripted) Allow(context.Context, []Request) (time.Time, []Decision, error) {
	c := make(chan guardAnswer)
	s.arrived <- c
	a := <-c
	return time.Now(), a.ds, a.err
}

// Redis allowing calls that started after the fallback's candidates leaves the fallback
// nothing to give: the hits this process let through stay within the limit whichever
// answer is handled first.
func TestGuardFallbackAfterRedisAllowed(t *testing.T) {
	inner := &scripted{arrived: make(chan chan guardAnswer)}
	g := NewGuard(inner, GuardOptions{Size: 100})
	r := Request{Key: "k", Limit: Limit{Requests: 2, Window: time.Minute}, Cost: 1}
	type result struct {
		allowed bool
		err     error
	}
	results := make(chan result, 4)
	var answers []chan guardAnswer
	for range 4 { // noted in order: local counts 1, 2, 3, 4
		go func() {
			_, ds, err := g.Allow(t.Context(), []Request{r})
			results <- result{len(ds) == 1 && ds[0].Allowed, err}
		}()
		answers = append(answers, <-inner.arrived)
	}
	// Redis has seen only the last two calls and allows both; then the first two fail.
	for i, rem := range []int64{1, 0} {
		answers[3-i] <- guardAnswer{ds: []Decision{{Allowed: true, Limit: 2, Remaining: rem}}}
		if res := <-results; !res.allowed || res.err != nil {
			t.Fatalf("redis-allowed call %d: %+v, want allowed", i, res)
		}
	}
	for i := range 2 {
		answers[i] <- guardAnswer{err: errFlaky}
		if res := <-results; res.allowed || !errors.Is(res.err, ErrFallback) {
			t.Errorf("fallback call %d: %+v, want denied: the limit is already granted", i, res)
		}
	}
}

// While Redis flaps, one process lets through about the limit: calls that failed and were
// allowed locally count against what Redis allows after, and the other way round.
func TestGuardFlapping(t *testing.T) {
	s := redistest.Start(t)
	l := NewLimiter(newClient(t, s.URL(), true))
	var n atomic.Int64
	flaky := allowFunc(func(ctx context.Context, reqs []Request) (time.Time, []Decision, error) {
		if n.Add(1)%2 == 0 {
			return time.Time{}, nil, errFlaky
		}
		return l.Allow(ctx, reqs)
	})
	for _, tc := range guardAlgorithms {
		t.Run(tc.name, func(t *testing.T) {
			g := NewGuard(flaky, GuardOptions{Size: 100})
			r := Request{Key: "{flap}:" + tc.name, Limit: Limit{Requests: 5, Window: time.Minute, Algorithm: tc.limit.Algorithm}, Cost: 1}
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range 10 {
						_, ds, err := g.Allow(t.Context(), []Request{r})
						if err != nil && !errors.Is(err, ErrFallback) {
							t.Error(err)
							return
						}
						if ds[0].Allowed {
							allowed.Add(1)
						}
					}
				}()
			}
			wg.Wait()
			t.Logf("allowed %d of 640", allowed.Load())
			// Replies handled out of the order Redis decided them in can each add one.
			if got := allowed.Load(); got < 5 || got > 7 {
				t.Errorf("allowed %d, want 5, or at most 2 more", got)
			}
		})
	}
}

type allowFunc func(ctx context.Context, reqs []Request) (time.Time, []Decision, error)

func (f allowFunc) Allow(ctx context.Context, reqs []Request) (time.Time, []Decision, error) {
	return f(ctx, reqs)
}

// Calls racing on one key through a failing limiter are admitted exactly up to the limit.
func TestGuardFallbackConcurrent(t *testing.T) {
	inner := &switchable{}
	inner.fail.Store(true)
	g := NewGuard(inner, GuardOptions{Size: 1000})
	r := Request{Key: "{p}:ip", Limit: Limit{Requests: 5, Window: 15 * time.Minute, Algorithm: AlgorithmSliding}, Cost: 1}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				_, ds, err := g.Allow(t.Context(), []Request{r})
				if !errors.Is(err, ErrFallback) {
					t.Errorf("err %v, want ErrFallback", err)
					return
				}
				if ds[0].Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 5 {
		t.Errorf("allowed %d of 2560, want 5", got)
	}
}

// The local window follows the fake clock; a changed limit starts the key over.
func TestGuardLocalWindow(t *testing.T) {
	inner := &switchable{}
	inner.fail.Store(true)
	g := NewGuard(inner, GuardOptions{Size: 100})
	var now time.Duration
	g.clock = func() time.Duration { return now }
	r := Request{Key: "k", Limit: Limit{Requests: 2, Window: time.Minute}, Cost: 1}
	step := func(name string, r Request, want bool) {
		t.Helper()
		_, ds, _ := g.Allow(t.Context(), []Request{r})
		if ds[0].Allowed != want {
			t.Fatalf("%s: %+v, want allowed=%v", name, ds[0], want)
		}
	}
	step("1st", r, true)
	now = 30 * time.Second
	step("2nd", r, true)
	step("3rd", r, false)
	now = time.Minute - time.Nanosecond
	step("just before the window ends", r, false)
	now = time.Minute
	step("new window", r, true)
	bigger := r
	bigger.Limit.Requests = 10
	step("changed limit", bigger, true)
	if _, ds, _ := g.Allow(t.Context(), []Request{bigger}); ds[0].Remaining != 8 {
		t.Errorf("changed limit: remaining %d, want 8: the key starts over", ds[0].Remaining)
	}
	step("cost 0 when used up exactly", Request{Key: "z", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1}, true)
	step("cost 0 reads", Request{Key: "z", Limit: Limit{Requests: 1, Window: time.Minute}}, true)
}

// Bad requests are the caller's error, never a fallback, and reach no limiter.
func TestGuardInvalidRequests(t *testing.T) {
	inner := &switchable{}
	inner.fail.Store(true)
	g := NewGuard(inner, GuardOptions{Size: 100})
	l := Limit{Requests: 1, Window: time.Minute}
	tests := []struct {
		name string
		reqs []Request
	}{
		{"empty key", []Request{{Limit: l, Cost: 1}}},
		{"repeated key", []Request{{Key: "a", Limit: l, Cost: 1}, {Key: "a", Limit: l, Cost: 1}}},
		{"zero requests", []Request{{Key: "a", Limit: Limit{Window: time.Minute}, Cost: 1}}},
		{"window not in ms", []Request{{Key: "a", Limit: Limit{Requests: 1, Window: time.Microsecond}, Cost: 1}}},
		{"negative cost", []Request{{Key: "a", Limit: l, Cost: -1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ds, err := g.Allow(t.Context(), tc.reqs)
			if !errors.Is(err, ErrInvalidRequest) || errors.Is(err, ErrFallback) || ds != nil {
				t.Errorf("got %v %v, want ErrInvalidRequest alone and no decisions", ds, err)
			}
		})
	}
	if n := inner.calls.Load(); n != 0 {
		t.Errorf("inner limiter called %d times, want 0", n)
	}
}

// Size 0 turns the Guard off: calls and errors pass through untouched.
func TestGuardOff(t *testing.T) {
	inner := &switchable{}
	inner.fail.Store(true)
	g := NewGuard(inner, GuardOptions{Size: 0})
	_, ds, err := g.Allow(t.Context(), []Request{{Key: "a", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1}})
	if err != errFlaky || ds != nil {
		t.Errorf("got %v %v, want the inner error unchanged and no decisions", ds, err)
	}
}

// The table stays within Size however many keys pass.
func TestGuardBounded(t *testing.T) {
	inner := &switchable{}
	inner.fail.Store(true)
	g := NewGuard(inner, GuardOptions{Size: 256})
	l := Limit{Requests: 1, Window: time.Hour}
	for i := range 20000 {
		r := Request{Key: "k" + strconv.Itoa(i), Limit: l, Cost: 1}
		if _, ds, _ := g.Allow(t.Context(), []Request{r}); !ds[0].Allowed {
			t.Fatalf("key %d: a new key was denied", i)
		}
	}
	n := 0
	for i := range g.shards {
		n += len(g.shards[i].m)
	}
	if n > 256 || n < 128 {
		t.Errorf("%d entries after 20000 keys, want between 128 and Size 256", n)
	}
}

type allowAll struct{ ds []Decision }

func (a allowAll) Allow(context.Context, []Request) (time.Time, []Decision, error) {
	return time.Time{}, a.ds, nil
}

// BenchmarkGuardAllow measures what the Guard adds to a call of two limits: the inner
// limiter answers at once (no Redis), or the over-limit cache answers.
func BenchmarkGuardAllow(b *testing.B) {
	l := Limit{Requests: 100, Window: time.Minute}
	reqs := []Request{{Key: "{rl}:policy:ip:192.0.2.1", Limit: l, Cost: 1}, {Key: "{rl}:policy:user:42", Limit: l, Cost: 1}}
	b.Run("allowed", func(b *testing.B) {
		g := NewGuard(allowAll{ds: []Decision{{Allowed: true, Limit: 100, Remaining: 50}, {Allowed: true, Limit: 100, Remaining: 50}}}, GuardOptions{Size: DefaultGuardSize})
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _, _ = g.Allow(ctx, reqs)
			}
		})
	})
	b.Run("cached", func(b *testing.B) {
		g := NewGuard(allowAll{ds: []Decision{{Allowed: true, Limit: 100, Remaining: 50}, {Limit: 100, RetryAfter: time.Hour}}}, GuardOptions{Size: DefaultGuardSize})
		ctx := context.Background()
		_, _, _ = g.Allow(ctx, reqs)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_, _, _ = g.Allow(ctx, reqs)
			}
		})
	})
}
