package sessions

import "sync"

// memo remembers the Session built from a session's JSON, keyed by session id, so that a
// request whose GET returns the very bytes seen before skips parsing them again. The memo
// never skips the GET, so it cannot hide a logout or a changed session: it only saves CPU.
// It is what makes a client-side cache hit (cache.go) cheap: the GET then costs no round trip,
// and the memo spares the JSON parse and the Session's allocations (comparing the bytes is
// quick, a cached reply being the very string seen before). It keeps two generations of at
// most max entries each.
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

// get returns the entry built from data for sid, if data is what was seen last.
func (m *memo) get(sid, data string) (memoEntry, bool) {
	m.mu.RLock()
	e, ok := m.cur[sid]
	if !ok {
		e, ok = m.old[sid]
	}
	m.mu.RUnlock()
	if !ok || e.data != data {
		return memoEntry{}, false
	}
	return e, true
}

func (m *memo) put(sid string, e memoEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.cur) >= m.max {
		m.old, m.cur = m.cur, make(map[string]memoEntry, m.max/2)
	}
	m.cur[sid] = e
}
