package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ErrBadReply means Redis answered a script with a reply of the wrong shape: wrong length,
// a non-integer or a negative number. It points at a proxy or server that is not Redis
// enough, never at the request, so callers treat it like an outage.
var ErrBadReply = errors.New("ratelimit: malformed reply from redis")

// fixedWindowScript adds hits to epoch-aligned fixed windows, one per KEYS entry, in a
// single atomic call. Every key it creates gets a TTL in the same call: Hit.validate bounds
// the window so that EXPIRE always accepts it. ARGV holds two values per key: the window in seconds and the hits to
// add (0 reads without writing). It returns {seconds, microseconds, count1, count2, ...},
// the Redis clock followed by each count after adding.
//
// The touched key is KEYS[i]..":"..window..":"..windowStart: the suffix keeps different
// windows of one counter apart and lets each key die with its window. It adds no braces, so
// a {hash tag} in KEYS[i] keeps its Cluster slot.
//
// Redis's TIME is the clock so that every sidecar agrees on window boundaries whatever its
// own clock says. Servers before 5.0 refuse writes after a non-deterministic command
// unless the script asks for effects replication, hence replicate_commands, guarded
// because Redis 7 deprecates it and a future server may drop it.
const fixedWindowScript = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1])
local reply = {now, tonumber(t[2])}
for i = 1, #KEYS do
  local window = tonumber(ARGV[2*i-1])
  local hits = tonumber(ARGV[2*i])
  local start = now - now % window
  local key = KEYS[i] .. ':' .. ARGV[2*i-1] .. ':' .. string.format('%d', start)
  local count
  if hits > 0 then
    count = redis.call('INCRBY', key, ARGV[2*i])
    if count == hits then
      redis.call('EXPIRE', key, start + window - now + 1)
    elseif count > 4503599627370496 then
      -- MaxHits: a counter stops growing at 2^52 (far above any limit), so that counts
      -- stay exact in Lua and INCRBY can never overflow; the reply still shows it over.
      redis.call('DECRBY', key, ARGV[2*i])
    end
  else
    count = tonumber(redis.call('GET', key) or '0')
    if count == nil then
      return redis.error_reply('ERR fixed window counter ' .. i .. ' is not an integer')
    end
  end
  reply[i+2] = count
end
return reply
`

// parseFixedWindowReply reads the script's reply for n hits. Every element is checked, so a
// server that answers floats or strings, or a truncated reply, becomes ErrBadReply instead
// of a panic or a made-up count.
func parseFixedWindowReply(v interface{}, n int) (sec, usec int64, counts []uint64, err error) {
	items, ok := v.([]interface{})
	if !ok {
		return 0, 0, nil, fmt.Errorf("%w: got %T, want an array", ErrBadReply, v)
	}
	if len(items) != n+2 {
		return 0, 0, nil, fmt.Errorf("%w: got %d elements, want %d", ErrBadReply, len(items), n+2)
	}
	if sec, err = replyInt(items[0]); err != nil {
		return 0, 0, nil, fmt.Errorf("%w: time seconds: %v", ErrBadReply, err)
	}
	if usec, err = replyInt(items[1]); err != nil {
		return 0, 0, nil, fmt.Errorf("%w: time microseconds: %v", ErrBadReply, err)
	}
	if usec >= 1e6 {
		return 0, 0, nil, fmt.Errorf("%w: time microseconds %d out of range", ErrBadReply, usec)
	}
	counts = make([]uint64, n)
	for i := range counts {
		c, err := replyInt(items[i+2])
		if err != nil {
			return 0, 0, nil, fmt.Errorf("%w: count %d: %v", ErrBadReply, i, err)
		}
		counts[i] = uint64(c)
	}
	return sec, usec, counts, nil
}

// replyInt reads one non-negative integer element. Redis answers Lua numbers as integers;
// proxies and Redis-alikes have been seen to answer numeric strings or doubles, which are
// accepted only when they hold an exact integer.
func replyInt(v interface{}) (int64, error) {
	var n int64
	switch x := v.(type) {
	case int64:
		n = x
	case string:
		i, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", x)
		}
		n = i
	case float64:
		// The upper bound is exclusive because float64(math.MaxInt64) rounds up to 2^63,
		// which does not fit. NaN fails the first test.
		if x != math.Trunc(x) || x < math.MinInt64 || x >= math.MaxInt64 {
			return 0, fmt.Errorf("%v is not an integer", x)
		}
		n = int64(x)
	default:
		return 0, fmt.Errorf("got %T, want an integer", v)
	}
	if n < 0 {
		return 0, fmt.Errorf("%d is negative", n)
	}
	return n, nil
}
