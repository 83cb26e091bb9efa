package ratelimit

import (
	"context"
	"errors"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"
)

// scriptCall is one script a slotRecorder received.
type scriptCall struct {
	script string // limiterScript, limiterGroupScript, limiterUndoScript or fixedWindowScript
	keys   []string
	args   []interface{}
}

// slotRecorder is a Scripter that answers this package's scripts from tables instead of
// Redis, records every call, and fails the test when a call's keys span slots, as a Cluster
// would (CROSSSLOT).
type slotRecorder struct {
	t *testing.T
	// deny are the keys the limiter scripts deny; fail are keys whose script fails.
	deny, fail map[string]bool
	// remaining is what a limiter script answers as Remaining for a key, and the count the
	// fixed window script answers.
	remaining map[string]int64
	// undoErr, when set, is what the undo script fails with.
	undoErr error
	// together, when above 1, holds each limiter or counter script until that many are in
	// flight, so that a test shows they are sent at once (or times out after 5s).
	together int

	mu      sync.Mutex
	calls   []scriptCall
	arrived int
	all     chan struct{}
}

var _ Scripter = (*slotRecorder)(nil)

func newSlotRecorder(t *testing.T) *slotRecorder {
	return &slotRecorder{t: t, deny: map[string]bool{}, fail: map[string]bool{}, remaining: map[string]int64{}, all: make(chan struct{})}
}

func (r *slotRecorder) Eval(ctx context.Context, sha, script string, keys []string, args ...any) (any, error) {
	if scriptSHA(script) != sha {
		r.t.Errorf("script named %s, not by its SHA1 %s", sha, scriptSHA(script))
	}
	known := false
	for _, s := range []string{limiterScript, limiterGroupScript, limiterUndoScript, fixedWindowScript} {
		known = known || s == script
	}
	if !known {
		r.t.Errorf("a script this package does not have: %.40q", script)
	}
	for _, k := range keys[1:] {
		if Slot(k) != Slot(keys[0]) {
			r.t.Errorf("one script over keys of several slots: %q", keys)
			return nil, replyError("CROSSSLOT Keys in request don't hash to the same slot")
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, scriptCall{script: script, keys: append([]string(nil), keys...), args: append([]any(nil), args...)})
	if script != limiterUndoScript {
		if r.arrived++; r.arrived == r.together {
			close(r.all)
		}
	}
	r.mu.Unlock()
	if r.together > 1 && script != limiterUndoScript {
		select {
		case <-r.all:
		case <-time.After(5 * time.Second):
			r.t.Errorf("script for %q waited 5s for %d scripts in flight: not sent together", keys, r.together)
		}
	}
	for _, k := range keys {
		if r.fail[k] {
			return nil, replyError("ERR injected failure")
		}
	}
	// Each slot's script reads its own clock: a second plus the slot in microseconds.
	reply := []any{int64(1_700_000_000), int64(Slot(keys[0]))}
	switch script {
	case limiterUndoScript:
		if r.undoErr != nil {
			return nil, r.undoErr
		}
		reply = reply[:0]
		for range keys {
			reply = append(reply, int64(undoDone))
		}
	case fixedWindowScript:
		for _, k := range keys {
			reply = append(reply, r.remaining[k])
		}
	default:
		for _, k := range keys {
			if r.deny[k] {
				reply = append(reply, int64(0), int64(0), int64(30e6), int64(30e6))
			} else {
				reply = append(reply, int64(1), r.remaining[k], int64(30e6), int64(0))
			}
		}
	}
	return reply, nil
}

// scripts are the recorded calls of one script, in no particular order but sorted by
// their first key's slot.
func (r *slotRecorder) scripts(script string) []scriptCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []scriptCall
	for _, c := range r.calls {
		if c.script == script {
			out = append(out, c)
		}
	}
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if Slot(out[j].keys[0]) < Slot(out[i].keys[0]) {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func (r *slotRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func TestAllowOneSlotIsTodaysScript(t *testing.T) {
	minute := Limit{Requests: 10, Window: time.Minute}
	for _, tc := range []struct {
		name string
		reqs []Request
		args []interface{}
	}{
		{"one tag, three algorithms", []Request{
			{Key: "rl:{p:s}f", Limit: minute, Cost: 1},
			{Key: "{p:s}s", Limit: Limit{Requests: 10, Window: time.Minute, Algorithm: AlgorithmSliding}, Cost: 1},
			{Key: "{p:s}g", Limit: Limit{Requests: 10, Window: time.Minute, Algorithm: AlgorithmGCRA, Burst: 3}, Cost: 1},
		}, []interface{}{0, int64(10), int64(60000), int64(0), int64(1), 1, int64(10), int64(60000), int64(0), int64(1), 2, int64(3), int64(60000), int64(6e6), int64(1)}},
		{"shared_prefix key alone (no tag)", []Request{{Key: "rl:1.2.3.4", Limit: minute, Cost: 1}},
			[]interface{}{0, int64(10), int64(60000), int64(0), int64(1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newSlotRecorder(t)
			if _, ds, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), tc.reqs); err != nil || len(ds) != len(tc.reqs) {
				t.Fatalf("Allow: %v, %d decisions", err, len(ds))
			}
			if n := rec.count(); n != 1 {
				t.Fatalf("%d script calls, want 1", n)
			}
			c := rec.calls[0]
			var keys []string
			for _, r := range tc.reqs {
				keys = append(keys, r.Key)
			}
			if c.script != limiterScript || !reflect.DeepEqual(c.keys, keys) || !reflect.DeepEqual(c.args, tc.args) {
				t.Fatalf("call %q %v (limiter script %t), want %q %v and the limiter script", c.keys, c.args, c.script == limiterScript, keys, tc.args)
			}
		})
	}
}

// crossSlot are five requests over three slots, interleaved: {a} holds 0 and 2 (a sliding
// limit and a check), {b} holds 1 and 4 (fixed, GCRA), {c} holds 3 (fixed).
func crossSlot() []Request {
	return []Request{
		{Key: "{a}s", Limit: Limit{Requests: 100, Window: time.Second, Algorithm: AlgorithmSliding}, Cost: 2},
		{Key: "rl:{b}f", Limit: Limit{Requests: 100, Window: time.Minute}, Cost: 1},
		{Key: "{a}check", Limit: Limit{Requests: 100, Window: time.Minute}},
		{Key: "rl:{c}f", Limit: Limit{Requests: 100, Window: time.Minute}, Cost: 1},
		{Key: "{b}g", Limit: Limit{Requests: 100, Window: time.Second, Algorithm: AlgorithmGCRA}, Cost: 3},
	}
}

func TestAllowSplitsBySlot(t *testing.T) {
	reqs := crossSlot()
	rec := newSlotRecorder(t)
	rec.together = 3
	for i, r := range reqs {
		rec.remaining[r.Key] = int64(10 + i)
	}
	now, ds, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if !d.Allowed || d.Remaining != int64(10+i) {
			t.Fatalf("decision %d: %+v, want allowed with remaining %d: results out of order", i, d, 10+i)
		}
	}
	got := rec.scripts(limiterGroupScript)
	var keys [][]string
	for _, c := range got {
		keys = append(keys, c.keys)
	}
	want := [][]string{{"{a}s", "{a}check"}, {"rl:{b}f", "{b}g"}, {"rl:{c}f"}}
	// Sorted by slot, as scripts() returns them.
	for i := range want {
		for j := i + 1; j < len(want); j++ {
			if Slot(want[j][0]) < Slot(want[i][0]) {
				want[i], want[j] = want[j], want[i]
			}
		}
	}
	if !reflect.DeepEqual(keys, want) || rec.count() != 3 {
		t.Fatalf("group scripts over %q (%d calls in all), want %q and nothing else", keys, rec.count(), want)
	}
	for _, c := range got {
		if c.keys[0] == "{a}s" {
			if want := []interface{}{1, int64(100), int64(1000), int64(0), int64(2), 0, int64(100), int64(60000), int64(0), int64(0)}; !reflect.DeepEqual(c.args, want) {
				t.Fatalf("args of slot {a}: %v, want %v", c.args, want)
			}
		}
	}
	// The fake's clocks are 1_700_000_000 s plus the slot in µs: now is the earliest.
	first := min(Slot("a"), Slot("b"), Slot("c"))
	if want := time.Unix(1_700_000_000, int64(first)*1000); !now.Equal(want) {
		t.Fatalf("now %v, want the earliest clock %v", now, want)
	}
}

func TestAllowUndoesWhenASlotDenies(t *testing.T) {
	reqs := crossSlot()
	rec := newSlotRecorder(t)
	rec.deny["rl:{c}f"] = true
	for i, r := range reqs {
		rec.remaining[r.Key] = int64(10 + i)
	}
	_, ds, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), reqs)
	if err != nil {
		t.Fatal(err)
	}
	// {a} and {b} counted and are taken back: their Remaining gets the cost back.
	for i, want := range []int64{12, 12, 12, 0, 17} {
		if ds[i].Remaining != want || ds[i].Allowed != (i != 3) {
			t.Fatalf("decision %d: %+v, want remaining %d, allowed %t", i, ds[i], want, i != 3)
		}
	}
	// The fake's GCRA reset was 30s; taking back 3 requests of 10ms each leaves 29.97s.
	if want := 30*time.Second - 30*time.Millisecond; ds[4].Reset != want {
		t.Fatalf("gcra reset after the undo %v, want %v", ds[4].Reset, want)
	}
	undo := rec.scripts(limiterUndoScript)
	if len(undo) != 2 {
		t.Fatalf("%d undo scripts, want 2 (slots {a} and {b})", len(undo))
	}
	aNow := time.Unix(1_700_000_000, int64(Slot("a"))*1000).UnixMilli()
	bNow := time.Unix(1_700_000_000, int64(Slot("b"))*1000).UnixMilli()
	want := map[string]scriptCall{
		// Sliding: the sub-window counted, by the slot's clock; the check (cost 0) not at all.
		"a": {keys: []string{"{a}s:" + strconv.FormatInt(aNow-aNow%1000, 10)}, args: []interface{}{1, int64(2), 0, 0}},
		// Fixed: the window's end, its clock plus the 30s reset; GCRA: cost x 10ms in µs.
		"b": {keys: []string{"rl:{b}f", "{b}g"}, args: []interface{}{0, int64(1), bNow + 30000, int64(60000), 2, int64(30000), 0, 0}},
	}
	for _, c := range undo {
		tag := "a"
		if Slot(c.keys[0]) == Slot("b") {
			tag = "b"
		}
		if w := want[tag]; !reflect.DeepEqual(c.keys, w.keys) || !reflect.DeepEqual(c.args, w.args) {
			t.Fatalf("undo of slot {%s}: %q %v, want %q %v", tag, c.keys, c.args, w.keys, w.args)
		}
	}
}

func TestAllowNoUndo(t *testing.T) {
	for _, tc := range []struct {
		name string
		deny []string
		reqs []Request
	}{
		{"every slot allows", nil, crossSlot()},
		{"the slot that allows only checks", []string{"{b}x"}, []Request{
			{Key: "{a}x", Limit: Limit{Requests: 1, Window: time.Minute}},
			{Key: "{b}x", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1},
		}},
		{"every slot denies", []string{"{a}x", "{b}x"}, []Request{
			{Key: "{a}x", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1},
			{Key: "{b}x", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1},
		}},
		{"the slot with a denial is not undone", []string{"{a}x"}, []Request{
			{Key: "{a}x", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1},
			{Key: "{a}y", Limit: Limit{Requests: 1, Window: time.Minute}, Cost: 1},
			{Key: "{b}x", Limit: Limit{Requests: 1, Window: time.Minute}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := newSlotRecorder(t)
			for _, k := range tc.deny {
				rec.deny[k] = true
			}
			if _, _, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), tc.reqs); err != nil {
				t.Fatal(err)
			}
			if n := len(rec.scripts(limiterUndoScript)); n != 0 {
				t.Fatalf("%d undo scripts, want none", n)
			}
		})
	}
}

func TestAllowUndoFails(t *testing.T) {
	reqs := crossSlot()
	rec := newSlotRecorder(t)
	rec.deny["rl:{c}f"] = true
	rec.undoErr = errors.New("ERR injected undo failure")
	var mu sync.Mutex
	var heard []error
	l := NewLimiter(rec, WithClusterSlots(), WithUndoFailed(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, err)
	}))
	_, ds, err := l.Allow(t.Context(), reqs)
	if err != nil || len(ds) != len(reqs) || ds[3].Allowed {
		t.Fatalf("Allow: %+v, %v; want the decisions, {c} denied, and no error", ds, err)
	}
	if ds[1].Remaining != 0 {
		t.Fatalf("decision 1 after a failed undo: %+v, want it as counted (remaining 0)", ds[1])
	}
	if len(heard) != 2 || !errors.Is(heard[0], rec.undoErr) {
		t.Fatalf("WithUndoFailed heard %v, want the injected error twice (two slots)", heard)
	}
	// Without the option a failed undo is still not the caller's error.
	if _, _, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), reqs); err != nil {
		t.Fatal(err)
	}
}

func TestAllowSlotFails(t *testing.T) {
	reqs := crossSlot()
	rec := newSlotRecorder(t)
	rec.fail["rl:{c}f"] = true
	rec.deny["{a}s"] = true
	_, ds, err := NewLimiter(rec, WithClusterSlots()).Allow(t.Context(), reqs)
	if err == nil || ds != nil {
		t.Fatalf("Allow with a failing slot: %+v, %v; want no decisions and the error", ds, err)
	}
	if n := len(rec.scripts(limiterUndoScript)); n != 0 {
		t.Fatalf("%d undo scripts after a failure, want none", n)
	}
}

func TestAddSplitsBySlot(t *testing.T) {
	hits := []Hit{
		{Key: "rls:{d.a}", Window: 60, Hits: 1},
		{Key: "rls:{d.b}", Window: 60, Hits: 2},
		{Key: "rls:{d.a}", Window: 3600, Hits: 3},
		{Key: "rls:{d.c}", Window: 60},
	}
	t.Run("one slot is one script", func(t *testing.T) {
		rec := newSlotRecorder(t)
		same := []Hit{hits[0], hits[2]}
		if _, err := NewFixedWindow(rec, FixedWindowClusterSlots()).Add(t.Context(), same); err != nil {
			t.Fatal(err)
		}
		want := scriptCall{fixedWindowScript, []string{"rls:{d.a}", "rls:{d.a}"}, []interface{}{int64(60), uint64(1), int64(3600), uint64(3)}}
		if rec.count() != 1 || !reflect.DeepEqual(rec.calls[0], want) {
			t.Fatalf("calls %+v, want exactly %+v", rec.calls, want)
		}
	})
	t.Run("several slots", func(t *testing.T) {
		rec := newSlotRecorder(t)
		rec.together = 3
		rec.remaining = map[string]int64{"rls:{d.a}": 7, "rls:{d.b}": 8, "rls:{d.c}": 9}
		res, err := NewFixedWindow(rec, FixedWindowClusterSlots()).Add(t.Context(), hits)
		if err != nil {
			t.Fatal(err)
		}
		if want := []uint64{7, 8, 7, 9}; !reflect.DeepEqual(res.Counts, want) {
			t.Fatalf("counts %v, want %v: out of the hits' order", res.Counts, want)
		}
		first := min(Slot("d.a"), Slot("d.b"), Slot("d.c"))
		if want := time.Unix(1_700_000_000, int64(first)*1000); !res.Now.Equal(want) {
			t.Fatalf("now %v, want the earliest clock %v", res.Now, want)
		}
		for _, c := range rec.scripts(fixedWindowScript) {
			if c.keys[0] == "rls:{d.a}" {
				if want := []interface{}{int64(60), uint64(1), int64(3600), uint64(3)}; len(c.keys) != 2 || !reflect.DeepEqual(c.args, want) {
					t.Fatalf("slot {d.a}: %q %v, want both of its hits in order, args %v", c.keys, c.args, want)
				}
			}
		}
		if rec.count() != 3 {
			t.Fatalf("%d scripts, want one per slot (3)", rec.count())
		}
	})
	t.Run("a failing slot fails the call", func(t *testing.T) {
		rec := newSlotRecorder(t)
		rec.fail["rls:{d.b}"] = true
		if _, err := NewFixedWindow(rec, FixedWindowClusterSlots()).Add(t.Context(), hits); err == nil {
			t.Fatal("Add with a failing slot: no error")
		}
	})
}

// TestLimiterUndoScript runs the undo script alone on each backend: it takes back exactly
// the amount, deletes what it empties, and leaves alone what is no longer the count it
// took: a fixed window opened since, a missing key, a value of another kind.
func TestLimiterUndoScript(t *testing.T) {
	for _, be := range limiterBackends {
		t.Run(be.name, func(t *testing.T) {
			b := be.start(t)
			undo := func(t *testing.T, key string, args ...interface{}) int64 {
				t.Helper()
				v, err := b.rdb.Eval(t.Context(), scriptSHA(limiterUndoScript), limiterUndoScript, []string{key}, args...)
				if err != nil {
					t.Fatalf("undo %s %v: %v", key, args, err)
				}
				done, err := parseUndoReply(v, 1)
				if err != nil {
					t.Fatal(err)
				}
				return done[0]
			}
			set := func(t *testing.T, key, v string, ttl time.Duration) {
				t.Helper()
				b.admin.set(t, key, v, ttl)
			}
			clock := func(t *testing.T) time.Time {
				t.Helper()
				return b.admin.time(t)
			}
			const w = 60000 // ms
			for _, tc := range []struct {
				name  string
				value string // "" for no key
				args  func(now time.Time) []interface{}
				done  int64
				want  string // the value after, "" for no key
			}{
				{"fixed: the window counted", "3", func(now time.Time) []interface{} { return []interface{}{0, 1, now.UnixMilli() + w, w} }, undoDone, "2"},
				{"fixed: the last count deletes the window", "2", func(now time.Time) []interface{} { return []interface{}{0, 2, now.UnixMilli() + w, w} }, undoDeleted, ""},
				// The counted window ended now; the key's window ends a whole window later.
				{"fixed: a window opened since", "3", func(now time.Time) []interface{} { return []interface{}{0, 1, now.UnixMilli(), w} }, undoSkipped, "3"},
				{"fixed: no key", "", func(now time.Time) []interface{} { return []interface{}{0, 1, now.UnixMilli() + w, w} }, undoSkipped, ""},
				{"fixed: less than the amount", "1", func(now time.Time) []interface{} { return []interface{}{0, 2, now.UnixMilli() + w, w} }, undoSkipped, "1"},
				{"sliding", "5", func(time.Time) []interface{} { return []interface{}{1, 2, 0, 0} }, undoDone, "3"},
				{"sliding: not an integer", "abc", func(time.Time) []interface{} { return []interface{}{1, 2, 0, 0} }, undoSkipped, "abc"},
				{"gcra: the arrival time moves back", "tat+10s", func(time.Time) []interface{} { return []interface{}{2, int64(4e6), 0, 0} }, undoDone, "tat+6s"},
				{"gcra: an arrival time past is deleted", "tat+10s", func(time.Time) []interface{} { return []interface{}{2, int64(20e6), 0, 0} }, undoDeleted, ""},
			} {
				t.Run(tc.name, func(t *testing.T) {
					key := "{u}" + tc.name
					now := clock(t)
					tat := func(s string) string {
						if len(s) > 4 && s[:4] == "tat+" {
							d, _ := time.ParseDuration(s[4:])
							return strconv.FormatInt(now.Add(d).UnixMicro(), 10)
						}
						return s
					}
					if tc.value != "" {
						set(t, key, tat(tc.value), w*time.Millisecond)
					}
					if got := undo(t, key, tc.args(now)...); got != tc.done {
						t.Fatalf("undo answered %d, want %d", got, tc.done)
					}
					if v := b.admin.get(t, key); v != tat(tc.want) {
						t.Fatalf("value after undo %q, want %q", v, tat(tc.want))
					}
				})
			}
		})
	}
}
