package redisclientcheck

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// call is one counting call of a load run.
type call struct {
	at   time.Time // when it returned
	key  string
	n    int64
	err  error
	kind string // "", or what was wrong with the reply
	// last and since are the worker's state before the call: the count of its last success
	// and the failed calls after it.
	last, since int64
}

// Kinds of wrong outcome a call can have beyond failing.
const (
	// wrongReply: the reply carried another call's nonce, or had the wrong shape: the
	// client matched a reply to the wrong command.
	wrongReply = "wrong reply"
	// jumped: the count is above the number of calls made on the key so far: some call ran
	// twice. (Above the last count + 1 + the failures since is no proof: a call that timed
	// out may run after later calls that went out on another connection.)
	jumped = "count jumped"
	// regressed: the count went back: writes the old master acknowledged were lost with it
	// (Redis replicates asynchronously). The server's doing, not the client's.
	regressed = "count went back"
)

// runLoad makes counting calls on every key, one goroutine per key at perKey calls a second,
// each under the 25 ms deadline, until ctx ends. Every success is checked against the
// worker's own history: its nonce echoed, its count above the last one and at most the
// number of calls made on the key.
func runLoad(ctx context.Context, rdb scripter, keys []string, perKey int) []call {
	var mu sync.Mutex
	var calls []call
	var wg sync.WaitGroup
	interval := time.Second / time.Duration(perKey)
	for w, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last int64
			var since int64 // failed calls since the last success
			began := time.Now()
			for i := 0; ctx.Err() == nil; i++ {
				if d := time.Until(began.Add(time.Duration(i) * interval)); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				cctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				n, err := count(cctx, rdb, key, fmt.Sprintf("%d-%d", w, i))
				cancel()
				c := call{at: time.Now(), key: key, n: n, err: err, last: last, since: since}
				switch {
				case errors.Is(err, errWrongReply) || errors.Is(err, errBadReply):
					c.kind = wrongReply
				case err != nil:
					since++
				case n <= last:
					c.kind = regressed
				case n > int64(i+1):
					c.kind = jumped
				}
				if err == nil {
					last, since = n, 0
				}
				mu.Lock()
				calls = append(calls, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return calls
}

// outageMin is how long a run of failed calls in a row on one key must last (from its first
// failure to the success that ends it) to be an outage rather than stray timeouts. At first
// it was 3 calls in a row (40 ms at 75 calls/s). But this box is shared, and under -race
// beside other test binaries (load averages of 10-20 on 2 cores) a healthy Redis now and
// then leaves 3-4 calls in a row unanswered, and such a run late in a failover read as a
// recovery after 5.3 s. A failover's outage lasts seconds, CLUSTERDOWN on the other masters
// most of a second; 200 ms is 15 calls.
const outageMin = 200 * time.Millisecond

// loadStats sums up a load run around an event (a kill, a partition, a reshard).
type loadStats struct {
	calls, failed int
	kinds         map[string]int
	firstErr      error
	// recovery is from the event to the end of the last key's first outage (failed calls in
	// a row on a key for outageMin or more) that ended after the event, at the success that
	// ended it; tail is from there to the end of the run. never is set when an outage lasted
	// to the end of the run. strays are the failed calls outside outages.
	recovery, tail time.Duration
	never          bool
	failedSpan     time.Duration // from the first failure to the last
	strays         int
	// last is the outage that ended last (or never ended), for the log.
	last outage
	// later counts the outages on a key after its first one that ended after the event (the
	// one the event caused): a client that loses the server again after it recovered.
	// laterLongest is the longest of them.
	later        int
	laterLongest time.Duration
	// longest is the longest run of failed calls in a row on one key, outage or not.
	longest time.Duration
}

// outage is a run of failed calls in a row on one key that lasted outageMin or more.
type outage struct {
	key      string
	from, to time.Duration // after the event: its first failure and the success that ended it
	calls    int
	err      error // its last failure
}

func (o outage) String() string {
	if o.key == "" {
		return "none"
	}
	return fmt.Sprintf("%s: %d failed calls from %s to %s after the event, the last: %v", o.key, o.calls, ms(o.from), ms(o.to), o.err)
}

func stats(calls []call, event time.Time, keys map[string]bool) loadStats {
	s := loadStats{kinds: map[string]int{}}
	var firstFail, lastFail, end, recovered time.Time
	byKey := map[string][]call{}
	for _, c := range calls {
		if keys != nil && !keys[c.key] {
			continue
		}
		byKey[c.key] = append(byKey[c.key], c)
		s.calls++
		if c.at.After(end) {
			end = c.at
		}
		if c.kind != "" {
			s.kinds[c.kind]++
		}
		if c.err != nil {
			s.failed++
			if s.firstErr == nil {
				s.firstErr = c.err
			}
			if firstFail.IsZero() || c.at.Before(firstFail) {
				firstFail = c.at
			}
			if c.at.After(lastFail) {
				lastFail = c.at
			}
		}
	}
	var lastEnd time.Time // the end of the outage that ended last
	for key, cs := range byKey {
		primary := false // whether this key's outage at the event has been seen
		// outageAt records the run of n failed calls before cs[i] (i == len(cs): the run
		// lasted to the end of the load).
		outageAt := func(i, n int) {
			first, endAt := cs[i-n].at, cs[len(cs)-1].at
			if i < len(cs) {
				endAt = cs[i].at
			}
			span := endAt.Sub(first)
			s.longest = max(s.longest, span)
			if span < outageMin {
				s.strays += n
				return
			}
			o := outage{key: key, from: first.Sub(event), to: endAt.Sub(event), calls: n, err: cs[i-1].err}
			if i == len(cs) {
				s.never = true
			}
			switch {
			case !primary && endAt.After(event):
				primary = true
				if endAt.After(recovered) {
					recovered = endAt
				}
			case primary:
				s.later++
				s.laterLongest = max(s.laterLongest, span)
			}
			if endAt.After(lastEnd) {
				lastEnd, s.last = endAt, o
			}
		}
		run := 0
		for i, c := range cs {
			if c.err != nil {
				run++
				continue
			}
			if run > 0 {
				outageAt(i, run)
			}
			run = 0
		}
		if run > 0 {
			outageAt(len(cs), run)
		}
	}
	if !firstFail.IsZero() {
		s.failedSpan = lastFail.Sub(firstFail)
	}
	switch {
	case s.never:
		s.recovery = end.Sub(event)
	case recovered.IsZero():
		s.tail = end.Sub(event)
	default:
		s.recovery = recovered.Sub(event)
		s.tail = end.Sub(recovered)
	}
	return s
}

func (s loadStats) String() string {
	recovered := fmt.Sprintf("recovered %s after the event, %s before the end of the run (failures spanned %s, %d of them stray; %d later outages, the longest %s)",
		ms(s.recovery), ms(s.tail), ms(s.failedSpan), s.strays, s.later, ms(s.laterLongest))
	if s.never {
		recovered = fmt.Sprintf("NOT recovered by the end of the run, %s after the event", ms(s.recovery))
	}
	return fmt.Sprintf("%d calls, %d failed (%.2f%%), wrong replies %d, ran twice %d, lost acknowledged counts %d; %s; last outage: %v; longest run of failures on a key %s",
		s.calls, s.failed, 100*float64(s.failed)/float64(max(s.calls, 1)), s.kinds[wrongReply], s.kinds[jumped], s.kinds[regressed], recovered, s.last, ms(s.longest))
}

// logOdd logs every call whose reply was wrong or whose count jumped, with the calls on its
// key just before it, so that a failure says what happened.
func logOdd(t *testing.T, calls []call, event time.Time) {
	t.Helper()
	byKey := map[string][]call{}
	for _, c := range calls {
		byKey[c.key] = append(byKey[c.key], c)
	}
	logged := 0
	for key, cs := range byKey {
		for i, c := range cs {
			if c.kind != wrongReply && c.kind != jumped || logged >= 5 {
				continue
			}
			logged++
			t.Logf("%s at %s: %s: count %d after last %d with %d failed calls since; err %v", key, ms(c.at.Sub(event)), c.kind, c.n, c.last, c.since, c.err)
			for _, p := range cs[max(0, i-4):i] {
				t.Logf("  before it, at %s: count %d, err %v", ms(p.at.Sub(event)), p.n, p.err)
			}
		}
	}
}

// lastCounts is each key's count after its last call, when that call succeeded.
func lastCounts(calls []call) map[string]int64 {
	out := map[string]int64{}
	last := map[string]time.Time{}
	for _, c := range calls {
		if c.at.After(last[c.key]) {
			last[c.key] = c.at
			if c.err == nil {
				out[c.key] = c.n
			} else {
				delete(out, c.key)
			}
		}
	}
	return out
}

// checkExact fails t unless every key whose last call succeeded holds that call's count.
func checkExact(t *testing.T, calls []call, get func(key string) int64) {
	t.Helper()
	for key, want := range lastCounts(calls) {
		if got := get(key); got != want {
			t.Errorf("%s holds %d after the run, want %d, the count of its last call", key, got, want)
		}
	}
}
