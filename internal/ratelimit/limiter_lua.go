package ratelimit

import (
	"fmt"
	"math"
	"time"
)

// limiterArgs is the number of ARGV entries per request: algorithm, capacity (Requests, or
// the burst for GCRA), window in milliseconds, GCRA interval in microseconds, cost.
const limiterArgs = 5

// limiterReplyFields is the number of reply entries per request: allowed (0 or 1),
// remaining, reset and retry-after in microseconds.
const limiterReplyFields = 4

// limiterScript decides every request of one Allow call. It runs in two passes: the first
// reads each limit's state and decides it without writing, the second counts every request
// with a cost only when all were allowed (or when the call is one fixed-window request,
// which rate-limit-redis counts even when denied). The reply is {seconds, microseconds,
// then limiterReplyFields per request}.
//
// Redis's TIME is the clock so that every replica agrees; it is kept in integer
// microseconds (about 2^51 today), exact in Lua's float64 numbers. Every product the script
// forms is bounded by Limit.validate for the same reason, so comparisons never round.
// Numbers sent back to Redis go through string.format('%.0f') because Redis's own
// conversion of a Lua number ("%.17g") would write large ones in exponent form, which
// INCRBY and PX reject.
//
// Keys derived from KEYS[i] (the sliding sub-windows) only append to it, so a {hash tag}
// keeps them in the slot of KEYS[i]. replicate_commands is needed by servers before 5.0 to
// write after TIME, and is guarded because Redis 7 deprecates it.
const limiterScript = limiterHead + limiterSingle + limiterTail

// limiterGroupScript is limiterScript for one slot's share of a call whose keys span several
// slots (see Limiter.Allow). It differs in one line: no request is the call's only one, so
// a denied fixed window is never counted on its own.
const limiterGroupScript = limiterHead + "local single = false\n" + limiterTail

// limiterSingle is the line that lets a call made of one fixed-window request count it even
// when denied.
const limiterSingle = "local single = n == 1 and st[1].algo == 0\n"

// limiterHead reads and decides every request without writing.
const limiterHead = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local now = sec * 1000000 + usec
local nowms = sec * 1000 + math.floor(usec / 1000)
local function int(s) return string.format('%.0f', s) end
-- count reads a counter: 0 when missing, nil when the value is not an integer.
local function count(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local n = tonumber(v)
  if n == nil or n ~= math.floor(n) then return nil end
  return n
end
local n = #KEYS
local st = {}
local all = true
for i = 1, n do
  local a = 5 * (i - 1)
  local s = {key = KEYS[i], algo = tonumber(ARGV[a+1]), limit = tonumber(ARGV[a+2]),
    w = tonumber(ARGV[a+3]), iv = tonumber(ARGV[a+4]), cost = tonumber(ARGV[a+5]), a = a}
  if s.algo == 0 then
    -- rate-limit-redis: a PTTL of 0 or less (missing, or no expiry) means the window is
    -- over, and the next hit opens a new one.
    s.pttl = redis.call('PTTL', s.key)
    s.c = 0
    if s.pttl > 0 then s.c = count(s.key) else s.pttl = 0 end
    if s.c == nil then return redis.error_reply('ERR fixed window counter ' .. i .. ' is not an integer') end
    s.ok = s.c + s.cost <= s.limit
  elseif s.algo == 1 then
    local start = nowms - nowms % s.w
    s.e = nowms - start
    s.start = start
    s.cur = s.key .. ':' .. int(start)
    s.c = count(s.cur)
    s.p = count(s.key .. ':' .. int(start - s.w))
    if s.c == nil or s.p == nil then return redis.error_reply('ERR sliding window counter ' .. i .. ' is not an integer') end
    -- Counts are scaled by the window in ms so that the weighting stays in integers.
    s.ok = s.p * (s.w - s.e) + (s.c + s.cost) * s.w <= s.limit * s.w
  elseif s.algo == 3 then` + limiterCreditsRead + `  else
    local v = redis.call('GET', s.key)
    s.tat = now
    if v then
      local tat = tonumber(v)
      if tat == nil then return redis.error_reply('ERR gcra arrival time ' .. i .. ' is not a number') end
      if tat > now then s.tat = tat end
    end
    s.new = s.tat + s.cost * s.iv
    s.ok = s.new - now <= s.limit * s.iv
  end
  if not s.ok then all = false end
  st[i] = s
end
`

// limiterTail counts (when the call is allowed, or single) and builds the reply.
const limiterTail = `local reply = {sec, usec}
for i = 1, n do
  local s = st[i]
  local counted = s.cost > 0 and (all or single)
  local remaining, reset, retry
  if s.algo == 0 then
    if counted then
      if s.pttl > 0 then
        -- A denied fixed window is still counted, but never past maxFixedCount: the count
        -- stays exact and INCRBY can never overflow, whatever a client keeps sending.
        if s.c + s.cost <= 4503599627370496 then
          s.c = redis.call('INCRBY', s.key, ARGV[s.a+5])
        end
      else
        redis.call('SET', s.key, ARGV[s.a+5], 'PX', ARGV[s.a+3])
        s.c = s.cost
        s.pttl = s.w
      end
    end
    remaining = s.limit - s.c
    reset = s.pttl * 1000
    retry = reset
  elseif s.algo == 1 then
    if counted then
      s.c = redis.call('INCRBY', s.cur, ARGV[s.a+5])
      if s.c == s.cost then
        -- The key outlives its window by one window: it is the previous one then.
        redis.call('PEXPIRE', s.cur, int(2 * s.w - s.e))
      end
    end
    local w, e = s.w, s.e
    remaining = math.floor((s.limit * w - s.p * (w - e) - s.c * w) / w)
    reset = (s.start + w) * 1000 - now
    -- RetryAfter: the first ms at which p*(w-e')/w + c + cost <= limit, still in this
    -- window when c + cost fits, else in the next one, where c becomes the previous count.
    if not s.ok and s.cost <= s.limit then
      local wait
      local room = s.limit - s.c - s.cost
      if room >= 0 then
        -- Denied with room left means p > 0.
        wait = w - e - math.floor(room * w / s.p)
      else
        -- c + cost > limit >= cost means c > 0.
        wait = w - e + w - math.floor((s.limit - s.cost) * w / s.c)
      end
      retry = (nowms + wait) * 1000 - now
    end
  elseif s.algo == 3 then` + limiterCreditsCount + `  else
    if counted then
      s.tat = s.new
      redis.call('SET', s.key, int(s.new), 'PX', int(math.ceil((s.new - now) / 1000)))
    end
    remaining = math.floor((s.limit * s.iv - (s.tat - now)) / s.iv)
    reset = s.tat - now
    retry = s.new - s.limit * s.iv - now
  end
  -- A credits balance may hold more than its quota (an operator added some).
  if remaining < 0 then remaining = 0 elseif remaining > s.limit and s.algo ~= 3 then remaining = s.limit end
  local allowed = 1
  if s.ok then
    retry = 0
  else
    allowed = 0
    if s.cost > s.limit and s.algo ~= 3 then retry = s.w * 1000 end
    if retry == nil or retry < 1 then retry = 1 end
  end
  reply[#reply+1] = allowed
  reply[#reply+1] = remaining
  reply[#reply+1] = reset
  reply[#reply+1] = retry
end
return reply
`

// undoArgs is the number of ARGV entries per key of limiterUndoScript: algorithm, amount
// (the cost; for GCRA the cost times the interval in microseconds), and for a fixed window
// the end of the window that was counted in Unix milliseconds and its length in milliseconds
// (for credits the refill period that was spent from, -1 without a refill, and 0; 0 and 0
// for the others).
const undoArgs = 4

// Values of each element of limiterUndoScript's reply.
const (
	undoSkipped = 0 // the count was no longer there to take back
	undoDone    = 1 // the amount was taken off
	undoDeleted = 2 // the amount was taken off and nothing was left, so the key is gone
)

// limiterUndoScript takes back what limiterGroupScript counted for one slot's requests of a
// call that another slot denied (see Limiter.Allow). KEYS are the keys the count touched: the
// request's key for fixed and GCRA, the current sub-window's for sliding. It replies with
// one undo* value per key.
//
// A fixed or sliding count comes off with DECRBY, which is exact whatever others counted in
// between, and a key left at 0 is deleted, as if never counted: for fixed, the next hit then
// opens a window of its own, as it would have. A fixed window is touched only when it is
// still the window that was counted: one opened since (after the counted one expired) ends
// at least a window later than ARGV's end, so an end within half a window of it (Redis's
// millisecond clocks round each side by under a millisecond) is the same window. GCRA moves
// the arrival time back by the amount and deletes the key when that is not in the future
// (a missing key means the same as an arrival time of now). Credits come back with HINCRBY
// only while the balance is still in the period they were spent from: once a refill has
// replaced it, what was spent before no longer counts.
const limiterUndoScript = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowms = math.floor(now / 1000)
local reply = {}
for i = 1, #KEYS do
  local a = 4 * (i - 1)
  local key, algo, amount = KEYS[i], tonumber(ARGV[a+1]), tonumber(ARGV[a+2])
  local v
  if algo ~= 3 then v = tonumber(redis.call('GET', key) or '') end
  local done = 0
  if algo == 3 then
    local b = redis.call('HMGET', key, 'remaining', 'period')
    local per = tonumber(ARGV[a+3])
    if tonumber(b[1] or '') ~= nil and (per < 0 or tonumber(b[2] or '') == per) then
      redis.call('HINCRBY', key, 'remaining', ARGV[a+2])
      done = 1
    end
  elseif v == nil or v ~= math.floor(v) then
    done = 0
  elseif algo == 2 then
    local tat = v - amount
    if tat <= now then
      redis.call('DEL', key)
      done = 2
    else
      redis.call('SET', key, string.format('%.0f', tat), 'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
      done = 1
    end
  elseif v >= amount then
    local same = true
    if algo == 0 then
      local pttl = redis.call('PTTL', key)
      same = pttl > 0 and math.abs(nowms + pttl - tonumber(ARGV[a+3])) * 2 < tonumber(ARGV[a+4])
    end
    if same then
      if redis.call('DECRBY', key, ARGV[a+2]) == 0 then
        redis.call('DEL', key)
        done = 2
      else
        done = 1
      end
    end
  end
  reply[i] = done
end
return reply
`

// parseUndoReply reads limiterUndoScript's reply for n keys, each element checked.
func parseUndoReply(v interface{}, n int) ([]int64, error) {
	items, ok := v.([]interface{})
	if !ok {
		return nil, fmt.Errorf("%w: got %T, want an array", ErrBadReply, v)
	}
	if len(items) != n {
		return nil, fmt.Errorf("%w: got %d elements, want %d", ErrBadReply, len(items), n)
	}
	done := make([]int64, n)
	for i := range items {
		d, err := replyInt(items[i])
		if err == nil && d > undoDeleted {
			err = fmt.Errorf("undo result %d out of range", d)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: undo %d: %v", ErrBadReply, i, err)
		}
		done[i] = d
	}
	return done, nil
}

// maxReplyMicros is the longest duration, in microseconds, a time.Duration holds.
const maxReplyMicros = math.MaxInt64 / int64(time.Microsecond)

// parseLimiterReply reads the script's reply for reqs. Every element is checked, so a
// server or proxy that answers the wrong shape, a negative number, a flag other than 0 or
// 1, or a Remaining above the limit becomes ErrBadReply instead of a panic or a made-up
// decision.
func parseLimiterReply(v interface{}, reqs []Request) (time.Time, []Decision, error) {
	items, ok := v.([]interface{})
	if !ok {
		return time.Time{}, nil, fmt.Errorf("%w: got %T, want an array", ErrBadReply, v)
	}
	if want := 2 + limiterReplyFields*len(reqs); len(items) != want {
		return time.Time{}, nil, fmt.Errorf("%w: got %d elements, want %d", ErrBadReply, len(items), want)
	}
	sec, err := replyInt(items[0])
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%w: time seconds: %v", ErrBadReply, err)
	}
	usec, err := replyInt(items[1])
	if err != nil {
		return time.Time{}, nil, fmt.Errorf("%w: time microseconds: %v", ErrBadReply, err)
	}
	if usec >= 1e6 {
		return time.Time{}, nil, fmt.Errorf("%w: time microseconds %d out of range", ErrBadReply, usec)
	}
	ds := make([]Decision, len(reqs))
	for i := range ds {
		var f [limiterReplyFields]int64
		for j := range f {
			if f[j], err = replyInt(items[2+limiterReplyFields*i+j]); err != nil {
				return time.Time{}, nil, fmt.Errorf("%w: decision %d field %d: %v", ErrBadReply, i, j, err)
			}
		}
		allowed, remaining, reset, retry := f[0], f[1], f[2], f[3]
		limit := reqs[i].Limit.capacity()
		if reqs[i].Limit.Algorithm == AlgorithmCredits {
			// A balance may hold more than its quota; it is then its own limit.
			limit = max(limit, min(remaining, maxExact))
		}
		switch {
		case allowed > 1:
			return time.Time{}, nil, fmt.Errorf("%w: decision %d: allowed flag %d", ErrBadReply, i, allowed)
		case remaining > limit:
			return time.Time{}, nil, fmt.Errorf("%w: decision %d: remaining %d above limit %d", ErrBadReply, i, remaining, limit)
		case reset > maxReplyMicros || retry > maxReplyMicros:
			return time.Time{}, nil, fmt.Errorf("%w: decision %d: duration out of range", ErrBadReply, i)
		case allowed == 1 && retry != 0:
			return time.Time{}, nil, fmt.Errorf("%w: decision %d: allowed with retry after %dµs", ErrBadReply, i, retry)
		case allowed == 0 && retry == 0:
			return time.Time{}, nil, fmt.Errorf("%w: decision %d: denied without retry after", ErrBadReply, i)
		}
		ds[i] = Decision{
			Allowed:    allowed == 1,
			Limit:      limit,
			Remaining:  remaining,
			Reset:      time.Duration(reset) * time.Microsecond,
			RetryAfter: time.Duration(retry) * time.Microsecond,
		}
	}
	return time.Unix(sec, usec*int64(time.Microsecond)), ds, nil
}
