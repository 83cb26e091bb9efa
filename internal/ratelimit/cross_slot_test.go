package ratelimit

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// slotBackend is one topology the cross-slot suite runs on. admin goes around the client
// under test, so that observations cannot share its bugs.
type slotBackend struct {
	rdb   Scripter
	admin admin
	// cluster is set on a Redis Cluster, where spread checks that keys meant for different
	// masters land on them.
	cluster *redistest.Cluster
}

// slotTopologies: plain redis-server, miniredis (the embedded store) and a Redis Cluster of
// three masters and three replicas, each through a redisconn client as the Scripter. On the
// Cluster the client refuses a script over keys of several slots (redisconn.ErrCrossSlot),
// so a call the options failed to split fails the test.
var slotTopologies = []struct {
	name  string
	start func(t *testing.T) *slotBackend
}{
	{"redis-server", func(t *testing.T) *slotBackend {
		b := startLimiterRedis(t)
		return &slotBackend{rdb: b.rdb, admin: b.admin}
	}},
	{"miniredis", func(t *testing.T) *slotBackend {
		b := startLimiterMiniredis(t)
		return &slotBackend{rdb: b.rdb, admin: b.admin}
	}},
	{"cluster", func(t *testing.T) *slotBackend {
		c := redistest.StartCluster(t)
		rc := newClient(t, c.URL(), true)
		if !rc.Cluster() {
			t.Fatalf("client on %s does not report a Cluster", c.URL())
		}
		return &slotBackend{rdb: rc, admin: admin{newClient(t, c.URL(), false)}, cluster: c}
	}},
}

// get reads a key around the client under test: "" when it does not exist.
func (b *slotBackend) get(t *testing.T, key string) string {
	t.Helper()
	return b.admin.get(t, key)
}

// spread checks that keys are in different slots and, on the cluster, on different masters.
func (b *slotBackend) spread(t *testing.T, keys ...string) {
	t.Helper()
	slots, masters := map[int]bool{}, map[string]bool{}
	for _, k := range keys {
		slots[Slot(k)] = true
		if b.cluster != nil {
			masters[b.cluster.MasterFor(k)] = true
		}
	}
	if len(slots) != len(keys) || b.cluster != nil && len(masters) != len(keys) {
		t.Fatalf("keys %q: %d slots, %d masters; want %d of each", keys, len(slots), len(masters), len(keys))
	}
}

// counted reads what r's key holds, as the count the suite compares: the counter for fixed,
// the current sub-window's counter for sliding (at now), and for GCRA the Remaining a check
// sees.
func (b *slotBackend) counted(t *testing.T, l *Limiter, r Request, now time.Time) string {
	t.Helper()
	switch r.Limit.Algorithm {
	case AlgorithmSliding:
		ms, w := now.UnixMilli(), r.Limit.Window.Milliseconds()
		return b.get(t, r.Key+":"+strconv.FormatInt(ms-ms%w, 10))
	case AlgorithmGCRA:
		if b.get(t, r.Key) == "" {
			return ""
		}
		d := allowOne(t, l, Request{Key: r.Key, Limit: r.Limit})
		return "remaining " + strconv.FormatInt(d.Remaining, 10)
	}
	return b.get(t, r.Key)
}

// slotLimit is a limit of n requests counted by a: windows long enough (ten years for fixed
// and sliding, whose windows start on multiples of it since the epoch, the current one in
// 2019) that no test straddles a boundary, and for GCRA an hour with the whole quota as
// burst, so that an interval (at least 6 minutes) is far longer than a test.
func slotLimit(a Algorithm, n int64) Limit {
	if a == AlgorithmGCRA {
		return Limit{Requests: n, Window: time.Hour, Algorithm: a, Burst: n}
	}
	return Limit{Requests: n, Window: MaxWindow, Algorithm: a}
}

// wantCount is what counted answers after n requests of cost 1 under l.
func wantCount(l Limit, n int64) string {
	if n == 0 {
		return ""
	}
	if l.Algorithm == AlgorithmGCRA {
		return "remaining " + strconv.FormatInt(l.capacity()-n, 10)
	}
	return strconv.FormatInt(n, 10)
}

var algorithms = []Algorithm{AlgorithmFixed, AlgorithmSliding, AlgorithmGCRA}

var crossSlotCases = []struct {
	name string
	run  func(t *testing.T, b *slotBackend, prefix string)
}{
	{"three limits on three masters: exact counts, a denied call counts nowhere", func(t *testing.T, b *slotBackend, prefix string) {
		for _, a := range algorithms {
			t.Run(a.String(), func(t *testing.T) {
				l := NewLimiter(b.rdb, WithClusterSlots())
				tags := spreadTags(prefix+a.String()+":", 3)
				reqs := make([]Request, 3)
				for i, n := range []int64{3, 5, 10} {
					reqs[i] = Request{Key: "rl:{" + tags[i] + "}", Limit: slotLimit(a, n), Cost: 1}
				}
				b.spread(t, reqs[0].Key, reqs[1].Key, reqs[2].Key)
				for call := int64(1); call <= 3; call++ {
					_, ds := allow(t, l, reqs...)
					for i, d := range ds {
						if want := reqs[i].Limit.Requests - call; !d.Allowed || d.Remaining != want {
							t.Fatalf("call %d, limit %d: %+v, want allowed with remaining %d", call, i, d, want)
						}
					}
				}
				var now time.Time
				for call := 4; call <= 6; call++ {
					var ds []Decision
					now, ds = allow(t, l, reqs...)
					if ds[0].Allowed || !ds[1].Allowed || ds[1].Remaining != 2 || !ds[2].Allowed || ds[2].Remaining != 7 {
						t.Fatalf("call %d: %+v, want the first limit denied and the others allowed with 2 and 7 left, not counted", call, ds)
					}
				}
				for i, r := range reqs {
					if got, want := b.counted(t, l, r, now), wantCount(r.Limit, 3); got != want {
						t.Fatalf("limit %d after 3 allowed and 3 denied calls: %q, want %q", i, got, want)
					}
				}
				// The second limit alone, one slot, one script: the fourth of its five.
				if d := allowOne(t, l, reqs[1]); !d.Allowed || d.Remaining != 1 {
					t.Fatalf("second limit alone: %+v, want allowed with remaining 1", d)
				}
			})
		}
	}},
	{"a denied call leaves no key behind", func(t *testing.T, b *slotBackend, prefix string) {
		l := NewLimiter(b.rdb, WithClusterSlots())
		tags := spreadTags(prefix, 3)
		// A fixed window alone in its slot, used up; two limits in the second slot and one
		// in the third, never counted before.
		used := Request{Key: "rl:{" + tags[0] + "}", Limit: slotLimit(AlgorithmFixed, 1), Cost: 1}
		fresh := []Request{
			{Key: "{" + tags[1] + "}s", Limit: slotLimit(AlgorithmSliding, 5), Cost: 1},
			{Key: "rl:{" + tags[1] + "}f", Limit: slotLimit(AlgorithmFixed, 5), Cost: 1},
			{Key: "{" + tags[2] + "}g", Limit: slotLimit(AlgorithmGCRA, 5), Cost: 1},
		}
		b.spread(t, used.Key, fresh[0].Key, fresh[2].Key)
		allowOne(t, l, used)
		reqs := append([]Request{used}, fresh...)
		for call := range 3 {
			now, ds := allow(t, l, reqs...)
			if ds[0].Allowed {
				t.Fatalf("call %d: %+v, want the used-up window denied", call, ds)
			}
			for i, r := range fresh {
				d := ds[i+1]
				if !d.Allowed || d.Remaining != 5 || r.Limit.Algorithm != AlgorithmSliding && d.Reset != 0 {
					t.Fatalf("call %d, fresh limit %d: %+v, want allowed, not counted: remaining 5 and (fixed, gcra) reset 0", call, i, d)
				}
				if got := b.counted(t, l, r, now); got != "" {
					t.Fatalf("call %d, fresh limit %d: key holds %q after a denied call, want no key", call, i, got)
				}
			}
		}
		// In a call of several slots the used-up window was not counted when denied...
		if got := b.get(t, used.Key); got != "1" {
			t.Fatalf("used-up window %q after denied calls of several slots, want \"1\"", got)
		}
		// ...while alone it is, as rate-limit-redis counts.
		allowOne(t, l, used)
		if got := b.get(t, used.Key); got != "2" {
			t.Fatalf("used-up window %q after a call of its own, want \"2\"", got)
		}
	}},
	{"checks across slots write nothing", func(t *testing.T, b *slotBackend, prefix string) {
		l := NewLimiter(b.rdb, WithClusterSlots())
		tags := spreadTags(prefix, 3)
		var reqs []Request
		for i, a := range algorithms {
			reqs = append(reqs, Request{Key: "{" + tags[i] + "}", Limit: slotLimit(a, 4)})
		}
		now, ds := allow(t, l, reqs...)
		for i, d := range ds {
			if !d.Allowed || d.Remaining != 4 {
				t.Fatalf("check %d: %+v, want allowed with the whole quota", i, d)
			}
			if got := b.counted(t, l, reqs[i], now); got != "" {
				t.Fatalf("check %d created %q", i, got)
			}
		}
	}},
	{"shared_prefix keys with tagged limits", func(t *testing.T, b *slotBackend, prefix string) {
		l := NewLimiter(b.rdb, WithClusterSlots())
		tags := spreadTags(prefix, 3)
		// rate-limit-redis's own key: no hash tag, so it hashes whole.
		shared := Request{Key: "rl:" + prefix + "203.0.113.7", Limit: Limit{Requests: 4, Window: time.Hour}, Cost: 1}
		var reqs []Request
		for _, tag := range tags {
			if Slot(tag) != Slot(shared.Key) {
				reqs = append(reqs, Request{Key: "rl:{" + tag + "}", Limit: slotLimit(AlgorithmGCRA, 10), Cost: 1})
			}
		}
		reqs = append(reqs[:2], shared)
		b.spread(t, reqs[0].Key, reqs[1].Key)
		// An Express app counts one hit on the shared key first.
		b.admin.eval(t, rlrIncrement, []string{shared.Key}, "0", "3600000")
		for call := int64(1); call <= 3; call++ {
			if _, ds := allow(t, l, reqs...); !ds[2].Allowed || ds[2].Remaining != 3-call {
				t.Fatalf("call %d: %+v, want the shared limit allowed with %d left", call, ds, 3-call)
			}
		}
		_, ds := allow(t, l, reqs...)
		if ds[2].Allowed || !ds[0].Allowed || ds[0].Remaining != 7 {
			t.Fatalf("fifth hit: %+v, want the shared limit denied, the others not counted", ds)
		}
		if got := b.get(t, shared.Key); got != "4" {
			t.Fatalf("shared counter %q, want \"4\" (the app's hit and 3 allowed calls)", got)
		}
	}},
	{"concurrent calls: exactly the smallest limit, every other slot undone", func(t *testing.T, b *slotBackend, prefix string) {
		const workers, perWorker = 16, 4
		l := NewLimiter(b.rdb, WithClusterSlots())
		tags := spreadTags(prefix, 3)
		// The sliding limit in the middle slot denies; the fixed and GCRA ones, in the other
		// two, never do, so everything they count for a denied call must be taken back.
		reqs := []Request{
			{Key: "rl:{" + tags[0] + "}", Limit: slotLimit(AlgorithmFixed, 50), Cost: 1},
			{Key: "{" + tags[1] + "}", Limit: slotLimit(AlgorithmSliding, 20), Cost: 1},
			{Key: "{" + tags[2] + "}", Limit: slotLimit(AlgorithmGCRA, 50), Cost: 1},
		}
		b.spread(t, reqs[0].Key, reqs[1].Key, reqs[2].Key)
		var allowed, failed atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range perWorker {
					ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
					_, ds, err := l.Allow(ctx, reqs)
					cancel()
					if err != nil {
						failed.Add(1)
						return
					}
					if ds[0].Allowed && ds[1].Allowed && ds[2].Allowed {
						allowed.Add(1)
					}
				}
			})
		}
		wg.Wait()
		if n := failed.Load(); n > 0 {
			t.Fatalf("%d workers failed", n)
		}
		if got := allowed.Load(); got != 20 {
			t.Fatalf("%d of %d calls allowed, want exactly 20", got, workers*perWorker)
		}
		now, _ := allow(t, l, Request{Key: reqs[0].Key, Limit: reqs[0].Limit})
		for i, r := range reqs {
			if got, want := b.counted(t, l, r, now), wantCount(r.Limit, 20); got != want {
				t.Fatalf("limit %d after the flood: %q, want %q", i, got, want)
			}
		}
	}},
	{"RLS: every descriptor counted on its own slot", func(t *testing.T, b *slotBackend, prefix string) {
		f := NewFixedWindow(b.rdb, FixedWindowClusterSlots())
		tags := spreadTags(prefix, 3)
		hits := []Hit{
			{Key: "rls:{" + tags[0] + "}", Window: longWindow, Hits: 1},
			{Key: "rls:{" + tags[1] + "}", Window: longWindow, Hits: 2},
			{Key: "rls:{" + tags[0] + "}", Window: 3600, Hits: 5},
			{Key: "rls:{" + tags[2] + "}", Window: longWindow, Hits: 3},
			{Key: "rls:{" + tags[2] + "}x", Window: longWindow},
		}
		b.spread(t, hits[0].Key, hits[1].Key, hits[3].Key)
		var res FixedWindowResult
		for call := uint64(1); call <= 4; call++ {
			res = add(t, f, hits...)
			for i, h := range hits {
				if want := h.Hits * call; res.Counts[i] != want {
					t.Fatalf("call %d, hit %d: count %d, want %d", call, i, res.Counts[i], want)
				}
			}
		}
		for i, h := range hits[:4] {
			if got, want := b.get(t, windowKey(h, res.Now)), strconv.FormatUint(4*h.Hits, 10); got != want {
				t.Fatalf("hit %d: counter %q, want %q", i, got, want)
			}
		}
	}},
	{"without the slot options: one script, which a Cluster refuses before sending", func(t *testing.T, b *slotBackend, prefix string) {
		tags := spreadTags(prefix, 2)
		reqs := []Request{
			{Key: "rl:{" + tags[0] + "}", Limit: slotLimit(AlgorithmFixed, 5), Cost: 1},
			{Key: "rl:{" + tags[1] + "}", Limit: slotLimit(AlgorithmFixed, 5), Cost: 1},
		}
		hits := []Hit{{Key: "rls:{" + tags[0] + "}", Window: longWindow, Hits: 1}, {Key: "rls:{" + tags[1] + "}", Window: longWindow, Hits: 1}}
		b.spread(t, reqs[0].Key, reqs[1].Key)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, _, lerr := NewLimiter(b.rdb).Allow(ctx, reqs)
		res, ferr := NewFixedWindow(b.rdb).Add(ctx, hits)
		if b.cluster == nil {
			// One server runs any keys in one script: the options are for a Cluster only.
			if lerr != nil || ferr != nil {
				t.Fatalf("one server, keys of two slots in one script: %v, %v; want both counted", lerr, ferr)
			}
			if got := b.get(t, reqs[1].Key); got != "1" {
				t.Fatalf("counter %q, want \"1\"", got)
			}
			return
		}
		for _, err := range []error{lerr, ferr} {
			if !errors.Is(err, redisconn.ErrCrossSlot) || FailureReason(err) != "unavailable" {
				t.Fatalf("a Cluster, keys of two slots in one script: %v, want ErrCrossSlot (unavailable)", err)
			}
		}
		for _, k := range []string{reqs[0].Key, reqs[1].Key} {
			if got := b.get(t, k); got != "" {
				t.Fatalf("a refused script counted %s: %q", k, got)
			}
		}
		if res.Counts != nil {
			t.Fatalf("a refused Add returned counts %v", res.Counts)
		}
	}},
}

// TestCrossSlot runs the suite on every topology; on the Cluster no call may fail with
// CROSSSLOT, which allow and add would report.
func TestCrossSlot(t *testing.T) {
	for _, top := range slotTopologies {
		t.Run(top.name, func(t *testing.T) {
			b := top.start(t)
			for i, tc := range crossSlotCases {
				t.Run(tc.name, func(t *testing.T) {
					tc.run(t, b, "t"+strconv.Itoa(i)+":")
				})
			}
		})
	}
}
