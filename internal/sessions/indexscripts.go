package sessions

import (
	"crypto/sha1"
	"encoding/hex"
)

// recordScript adds or refreshes one session. KEYS: the sorted set, the meta hash. ARGV: sid,
// the session key's PTTL (ms; -1 when it has none), cookie.expires (Unix ms, 0 when none), ip,
// user agent, max per user, the life of a session with neither (ms). The score is the later of
// now + PTTL and cookie.expires. It keeps first_seen from an earlier entry, prunes what has
// expired, drops the soonest-expiring past the cap, lets both keys expire with the latest
// session, and returns the session's remaining life in ms. Redis's clock is the one that counts.
const recordScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local sid, pttl, cexp, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[6])
local exp
if pttl >= 0 then
  exp = now + pttl
elseif cexp > now then
  exp = cexp
else
  exp = now + tonumber(ARGV[7])
end
if cexp > exp then
  exp = cexp
end
local function drop(list)
  for _, m in ipairs(list) do
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[2], m)
  end
end
drop(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now))
local first = now
local old = redis.call('HGET', KEYS[2], sid)
if old then
  local ok, m = pcall(cjson.decode, old)
  if ok and type(m) == 'table' and tonumber(m.first_seen) then
    first = tonumber(m.first_seen)
  end
end
redis.call('ZADD', KEYS[1], exp, sid)
redis.call('HSET', KEYS[2], sid, cjson.encode({first_seen = first, last_seen = now, ip = ARGV[4], ua = ARGV[5]}))
local n = redis.call('ZCARD', KEYS[1])
if n > max then
  drop(redis.call('ZRANGE', KEYS[1], 0, n - max - 1))
end
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  local at = math.floor(tonumber(last[2]))
  redis.call('PEXPIREAT', KEYS[1], at)
  redis.call('PEXPIREAT', KEYS[2], at)
end
return exp - now
`

// readScript prunes what has expired and returns the rest as flat triples of sid, score and
// meta JSON (false when a session has none). KEYS: the sorted set, the meta hash.
const readScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #z, 2 do
  out[#out + 1] = z[i]
  out[#out + 1] = z[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], z[i])
end
return out
`

// removeScript removes the sids in ARGV from the index. KEYS: the sorted set, the meta hash.
const removeScript = `
local n = 0
for _, m in ipairs(ARGV) do
  n = n + redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
return n
`

// The scripts' SHA-1s, which EVALSHA names them by.
var (
	recordSHA = scriptSHA(recordScript)
	readSHA   = scriptSHA(readScript)
	removeSHA = scriptSHA(removeScript)
)

func scriptSHA(src string) string {
	sum := sha1.Sum([]byte(src))
	return hex.EncodeToString(sum[:])
}
