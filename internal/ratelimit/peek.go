package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// State is what Peek read of one limit's counters, and what they mean now.
type State struct {
	// Keys are the Redis keys read: the Request's Key for fixed, GCRA and credits, the
	// current and the previous sub-window's keys for sliding.
	Keys []string
	// Count is what the open window holds: a fixed window's count (0 when no window is
	// open), the current sub-window's count for sliding. GCRA keeps no count: 0.
	Count int64
	// Previous is the previous sub-window's count for sliding; 0 for the others.
	Previous int64
	// TAT is GCRA's theoretical arrival time; zero when the key is missing. A TAT in the
	// past means a full burst is available.
	TAT time.Time
	// Remaining is the quota left now, as Decision.Remaining counts it. For credits it is
	// the balance a decision would see now, a refill that is due applied; like
	// Decision.Remaining it may exceed the quota after an operator added credits.
	Remaining int64
	// Reset is when the quota is whole again (fixed: the window's end; sliding: the current
	// sub-window's end; GCRA: the TAT); 0 when nothing is counted. For credits it is the time
	// to the next refill, 0 without a refill.
	Reset time.Duration
	// Refilled is set for credits whose refill is due: the stored balance belongs to an
	// earlier period, so Remaining is the refill amount, which the next decision stores.
	Refilled bool
	// Allowed reports whether a request of cost 1 would be allowed by this limit alone now.
	Allowed bool
}

// peekScript reads, for each KEYS entry, the raw state of its algorithm without writing
// anything, with Redis's TIME as the clock. ARGV holds two values per key: the algorithm and
// the window in milliseconds. The reply is {seconds, microseconds, then three values per
// key}: fixed: PTTL (0 when missing or without expiry: no open window), the count or "";
// sliding: the current sub-window's start in Unix ms, its count or "", the previous one's or
// ""; gcra: 0, the arrival time or "", ""; credits: 0, the balance's remaining field or "",
// its period field or "". Values are sent back as Redis stored them, so that Go, not Lua's
// float64, reads them; the refill that is due is worked out in Go too (peekState), from the
// same clock.
const peekScript = `
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local nowms = sec * 1000 + math.floor(usec / 1000)
local reply = {sec, usec}
for i = 1, #KEYS do
  local algo, w = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local key = KEYS[i]
  if algo == 0 then
    local pttl = redis.call('PTTL', key)
    local v = ''
    if pttl > 0 then v = redis.call('GET', key) or '' else pttl = 0 end
    reply[#reply+1] = pttl
    reply[#reply+1] = v
    reply[#reply+1] = ''
  elseif algo == 1 then
    local start = nowms - nowms % w
    reply[#reply+1] = start
    reply[#reply+1] = redis.call('GET', key .. ':' .. string.format('%.0f', start)) or ''
    reply[#reply+1] = redis.call('GET', key .. ':' .. string.format('%.0f', start - w)) or ''
  elseif algo == 3 then
    reply[#reply+1] = 0
    reply[#reply+1] = redis.call('HGET', key, 'remaining') or ''
    reply[#reply+1] = redis.call('HGET', key, 'period') or ''
  else
    reply[#reply+1] = 0
    reply[#reply+1] = redis.call('GET', key) or ''
    reply[#reply+1] = ''
  end
end
return reply
`

// peekFields is the number of reply entries per key of peekScript.
const peekFields = 3

var peekSHA = scriptSHA(peekScript)

// Peek reads the state of every request's limit without counting anything, creating or
// refreshing a key: one read-only script with Redis's TIME (with WithClusterSlots and keys in
// several slots, one per slot, all at once). Costs are ignored; Allowed answers for a request
// of cost 1. It is for tools that show counters (`extauthz explain`), never for decisions: a
// peek and a later Allow are two calls, and other requests may count in between. Errors wrap
// ErrInvalidRequest for bad input, ErrBadReply for a reply of the wrong shape, and otherwise
// the client's error or the context's.
func (l *Limiter) Peek(ctx context.Context, reqs []Request) (time.Time, []State, error) {
	if len(reqs) == 0 {
		return time.Time{}, nil, nil
	}
	keys := make([]string, len(reqs))
	args := make([]any, 0, 2*len(reqs))
	for i, r := range reqs {
		if _, err := r.Limit.validate(1); err != nil {
			return time.Time{}, nil, fmt.Errorf("request %d: %w", i, err)
		}
		if r.Key == "" {
			return time.Time{}, nil, fmt.Errorf("request %d: %w: empty key", i, ErrInvalidRequest)
		}
		keys[i] = r.Key
		args = append(args, int(r.Limit.Algorithm), r.Limit.Window.Milliseconds())
	}
	groups := [][]int{nil}
	if l.clusterSlots && !oneSlot(keys) {
		groups = bySlot(keys)
	} else {
		for i := range reqs {
			groups[0] = append(groups[0], i)
		}
	}
	states := make([]State, len(reqs))
	nows := make([]time.Time, len(groups))
	errs := make([]error, len(groups))
	eachGroup(len(groups), func(g int) {
		idx := groups[g]
		gkeys, gargs := groupOf(idx, keys, args, 2)
		v, err := l.rdb.Eval(ctx, peekSHA, peekScript, gkeys, gargs...)
		if err != nil {
			errs[g] = fmt.Errorf("ratelimit: peek script: %w", err)
			return
		}
		now, raw, err := parsePeekReply(v, len(idx))
		if err != nil {
			errs[g] = err
			return
		}
		nows[g] = now
		for j, i := range idx {
			states[i], errs[g] = peekState(reqs[i], raw[j], now)
			if errs[g] != nil {
				errs[g] = fmt.Errorf("%w: key %d: %v", ErrBadReply, i, errs[g])
				return
			}
		}
	})
	for _, err := range errs {
		if err != nil {
			return time.Time{}, nil, err
		}
	}
	return earliest(nows), states, nil
}

// peekRaw is one key's part of peekScript's reply.
type peekRaw struct {
	n    int64
	a, b string
}

func parsePeekReply(v any, n int) (time.Time, []peekRaw, error) {
	items, ok := v.([]any)
	if !ok {
		return time.Time{}, nil, fmt.Errorf("%w: got %T, want an array", ErrBadReply, v)
	}
	if want := 2 + peekFields*n; len(items) != want {
		return time.Time{}, nil, fmt.Errorf("%w: got %d elements, want %d", ErrBadReply, len(items), want)
	}
	sec, err := replyInt(items[0])
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%w: time seconds: %v", ErrBadReply, err)
	}
	usec, err := replyInt(items[1])
	if err != nil || usec >= 1e6 {
		return time.Time{}, nil, fmt.Errorf("%w: time microseconds: %v", ErrBadReply, items[1])
	}
	out := make([]peekRaw, n)
	for i := range out {
		f := items[2+peekFields*i:]
		if out[i].n, err = replyInt(f[0]); err != nil {
			return time.Time{}, nil, fmt.Errorf("%w: key %d: %v", ErrBadReply, i, err)
		}
		if out[i].a, ok = f[1].(string); !ok {
			return time.Time{}, nil, fmt.Errorf("%w: key %d: got %T, want a string", ErrBadReply, i, f[1])
		}
		if out[i].b, ok = f[2].(string); !ok {
			return time.Time{}, nil, fmt.Errorf("%w: key %d: got %T, want a string", ErrBadReply, i, f[2])
		}
	}
	return time.Unix(sec, usec*1000), out, nil
}

// peekState reads one key's raw values as its algorithm does and works out what they mean at
// now, with the arithmetic of limiterScript for a request of cost 1. For credits that is the
// refill of limiterCreditsRead, with RefillPeriod and NextRefill, the Go twins of its Lua.
func peekState(r Request, raw peekRaw, now time.Time) (State, error) {
	counter := func(s string) (int64, error) {
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("counter %q is not a count", s)
		}
		return n, nil
	}
	lim := r.Limit
	capacity := lim.capacity()
	var st State
	var err error
	switch lim.Algorithm {
	case AlgorithmFixed:
		st.Keys = []string{r.Key}
		if st.Count, err = counter(raw.a); err != nil {
			return st, err
		}
		st.Remaining = lim.Requests - st.Count
		st.Reset = time.Duration(raw.n) * time.Millisecond
		st.Allowed = st.Count+1 <= lim.Requests
	case AlgorithmSliding:
		start := raw.n
		w := lim.Window.Milliseconds()
		st.Keys = []string{r.Key + ":" + strconv.FormatInt(start, 10), r.Key + ":" + strconv.FormatInt(start-w, 10)}
		if st.Count, err = counter(raw.a); err != nil {
			return st, err
		}
		if st.Previous, err = counter(raw.b); err != nil {
			return st, err
		}
		e := now.UnixMilli() - start
		if e < 0 || e >= w {
			e = min(max(e, 0), w-1) // the clocks of one reply agree; this only guards the sums
		}
		st.Remaining = (lim.Requests*w - st.Previous*(w-e) - st.Count*w) / w
		st.Reset = time.Duration(start+w)*time.Millisecond - time.Duration(now.UnixMicro())*time.Microsecond
		st.Allowed = st.Previous*(w-e)+(st.Count+1)*w <= lim.Requests*w
	case AlgorithmCredits:
		return peekCredits(r, raw, now)
	default:
		st.Keys = []string{r.Key}
		nowus := now.UnixMicro()
		tat := nowus
		if raw.a != "" {
			v, err := strconv.ParseInt(raw.a, 10, 64)
			if err != nil {
				return st, fmt.Errorf("arrival time %q is not a number", raw.a)
			}
			st.TAT = time.UnixMicro(v)
			tat = max(v, nowus)
		}
		iv := lim.interval()
		st.Remaining = (capacity*iv - (tat - nowus)) / iv
		st.Reset = time.Duration(tat-nowus) * time.Microsecond
		st.Allowed = tat+iv-nowus <= capacity*iv
	}
	st.Remaining = min(max(st.Remaining, 0), capacity)
	st.Reset = max(st.Reset, 0)
	return st, nil
}

// peekCredits is peekState for a credits balance: a missing hash is a balance of 0 that is
// never refilled (credits are not made up); one whose stored period is earlier than now's is
// the refill amount; a stored period later than now's (a clock behind after a failover) is
// not refilled backwards. The balance is not clamped to the quota: an operator may have
// added more.
func peekCredits(r Request, raw peekRaw, now time.Time) (State, error) {
	st := State{Keys: []string{r.Key}}
	var balance, period int64
	if raw.a != "" {
		var err error
		if balance, err = strconv.ParseInt(raw.a, 10, 64); err != nil {
			return st, fmt.Errorf("credits balance %q is not an integer", raw.a)
		}
		if raw.b != "" {
			if period, err = strconv.ParseInt(raw.b, 10, 64); err != nil {
				return st, fmt.Errorf("credits period %q is not an integer", raw.b)
			}
		}
	}
	if lim := r.Limit; lim.Refill != RefillNone {
		if raw.a != "" && RefillPeriod(lim.Refill, now) > period {
			balance, st.Refilled = lim.Requests, true
		}
		st.Reset = max(NextRefill(lim.Refill, now).Sub(now), 0)
	}
	st.Remaining = max(balance, 0)
	st.Allowed = balance >= 1
	return st, nil
}
