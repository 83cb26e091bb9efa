package sessions

import (
	"hash/maphash"
	"sync"
	"time"
)

// touchGeneration bounds each of the two maps of touchMemory. With 16-byte entries a full
// generation takes a few MiB; a site that resolves more distinct sessions
// than this per TouchEvery gets extra EXPIREs (harmless) rather than unbounded memory.
const touchGeneration = 1 << 18

// touchMemory remembers which sessions this process touched recently, so that Store sends
// at most one EXPIRE per session per interval. It is safe for concurrent use.
//
// It keeps two generations of maps from a hash of the sid (never the sid itself) to the time
// of the touch. New touches go into cur. When cur is older than one interval, or full, prev
// is dropped and cur becomes prev. Every entry dropped by a timed rotation was recorded
// before the previous rotation, so more than one interval ago: forgetting it changes
// nothing. An early rotation (cur full) may forget entries that are still fresh, which only
// costs a redundant EXPIRE. Memory is thus bounded by two generations, and there is no
// goroutine to own or stop.
type touchMemory struct {
	every time.Duration
	seed  maphash.Seed
	base  time.Time // Offsets from base use the monotonic clock.

	mu        sync.Mutex
	cur, prev map[uint64]time.Duration
	rotated   time.Duration // offset of the last rotation
}

func newTouchMemory(every time.Duration, now time.Time) *touchMemory {
	return &touchMemory{
		every: every,
		seed:  maphash.MakeSeed(),
		base:  now,
		cur:   make(map[uint64]time.Duration),
	}
}

// claim reports whether sid is due for a touch at now, and if so records the touch, so that
// of two concurrent requests for one session only one sends EXPIRE. The touch is recorded
// even if the EXPIRE then fails: during an outage retrying on every request would only add
// load, and the next interval retries anyway.
func (m *touchMemory) claim(sid string, now time.Time) bool {
	h := maphash.String(m.seed, sid)
	t := now.Sub(m.base)

	m.mu.Lock()
	defer m.mu.Unlock()
	if t-m.rotated >= m.every || len(m.cur) >= touchGeneration {
		m.prev, m.cur = m.cur, make(map[uint64]time.Duration)
		m.rotated = t
	}
	if last, ok := m.cur[h]; ok && t-last < m.every {
		return false
	}
	if last, ok := m.prev[h]; ok && t-last < m.every {
		return false
	}
	m.cur[h] = t
	return true
}

// size returns the number of remembered touches, for tests.
func (m *touchMemory) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.cur) + len(m.prev)
}
