package sessions

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTouchMemoryThrottles(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	m := newTouchMemory(time.Minute, start)
	steps := []struct {
		name  string
		after time.Duration
		sid   string
		want  bool
	}{
		{"first touch", 0, "a", true},
		{"again at once", 0, "a", false},
		{"another session", time.Second, "b", true},
		{"just before the interval", time.Minute - time.Nanosecond, "a", false},
		{"at the interval", time.Minute, "a", true},
		{"b still fresh after a rotation", time.Minute + 500*time.Millisecond, "b", false},
		{"b due", time.Minute + time.Second, "b", true},
		{"a fresh again", time.Minute + 59*time.Second, "a", false},
		{"a due long after", time.Hour, "a", true},
	}
	for _, s := range steps {
		if got := m.claim(s.sid, start.Add(s.after)); got != s.want {
			t.Errorf("%s: claim(%s, +%v) = %v, want %v", s.name, s.sid, s.after, got, s.want)
		}
	}
}

func TestTouchMemoryForgetsOldGenerations(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	m := newTouchMemory(time.Minute, start)
	for i := range 100 {
		m.claim(strconv.Itoa(i), start)
	}
	m.claim("x", start.Add(time.Minute))
	m.claim("y", start.Add(2*time.Minute))
	if got := m.size(); got != 2 {
		t.Errorf("size after two rotations = %d, want 2 (x and y)", got)
	}
}

func TestTouchMemoryIsBounded(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	m := newTouchMemory(time.Hour, start)
	for i := range 3 * touchGeneration {
		if !m.claim(strconv.Itoa(i), start) {
			t.Fatalf("claim %d = false for a new session", i)
		}
	}
	if got := m.size(); got > 2*touchGeneration {
		t.Errorf("size = %d, want at most %d", got, 2*touchGeneration)
	}
	// The newest generation is still remembered.
	if m.claim(strconv.Itoa(3*touchGeneration-1), start) {
		t.Error("the most recent touch was forgotten")
	}
}

func TestTouchMemoryConcurrentClaimsOnce(t *testing.T) {
	m := newTouchMemory(time.Minute, time.Now())
	now := time.Now()
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			if m.claim("same", now) {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if got := wins.Load(); got != 1 {
		t.Errorf("%d goroutines claimed the touch, want 1", got)
	}
}
