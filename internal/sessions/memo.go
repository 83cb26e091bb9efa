package sessions

import "sync"

// memo remembers the Session built from a session's JSON, keyed by session id, so that a
// request whose GET returns the very bytes seen before skips parsing them again. Redis is
// still asked on every request: a logout (the key deleted) or a changed session is seen at
// once, and the memo only saves CPU. It keeps two generations of at most max entries each.
type memo struct {
	mu       sync.RWMutex
	cur, old map[string]memoEntry
	max      int
}

type memoEntry struct {
	data string
	sess *Session
	// touchSec is ceil(cookie.originalMaxAge / 1000), or 0.
	touchSec int64
}

func newMemo(max int) *memo {
	return &memo{cur: make(map[string]memoEntry), max: max}
}

// get returns the Session built from data for sid, if data is what was seen last.
func (m *memo) get(sid, data string) (*Session, int64, bool) {
	m.mu.RLock()
	e, ok := m.cur[sid]
	if !ok {
		e, ok = m.old[sid]
	}
	m.mu.RUnlock()
	if !ok || e.data != data {
		return nil, 0, false
	}
	return e.sess, e.touchSec, true
}

func (m *memo) put(sid, data string, sess *Session, touchSec int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cur) >= m.max {
		m.old, m.cur = m.cur, make(map[string]memoEntry, m.max/2)
	}
	m.cur[sid] = memoEntry{data: data, sess: sess, touchSec: touchSec}
}
