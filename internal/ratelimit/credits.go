package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrNoBalance means a credits balance does not exist in Redis (CreditsBalance).
var ErrNoBalance = errors.New("ratelimit: no credits balance")

// maxWindowMicros is MaxWindow in microseconds: the RetryAfter of a denial by credits that
// never refill.
const maxWindowMicros = int64(MaxWindow / time.Microsecond)

// validateCredits checks an AlgorithmCredits limit for a request of cost and returns its
// Refill, which the script reads where the other algorithms read GCRA's interval.
func (l Limit) validateCredits(cost int64) (int64, error) {
	switch {
	case l.Requests < 0 || l.Requests > maxExact:
		return 0, fmt.Errorf("%w: credits %d out of range 0..%d (2^51)", ErrInvalidRequest, l.Requests, int64(maxExact))
	case l.Refill < RefillNone || l.Refill > RefillMonthly:
		return 0, fmt.Errorf("%w: unknown refill %d", ErrInvalidRequest, int(l.Refill))
	case l.Burst != 0:
		return 0, fmt.Errorf("%w: credits take no burst", ErrInvalidRequest)
	case cost < 0 || cost > maxExact:
		return 0, fmt.Errorf("%w: cost %d out of range 0..%d", ErrInvalidRequest, cost, int64(maxExact))
	}
	return int64(l.Refill), nil
}

// RefillPeriod is the number of the refill period t falls in: days since 1970-01-01 UTC for
// RefillDaily, months since January 1970 for RefillMonthly, 0 for RefillNone. The scripts
// compute the same number from Redis's clock (creditsPeriodLua).
func RefillPeriod(r Refill, t time.Time) int64 {
	switch r {
	case RefillDaily:
		return floorDiv(t.Unix(), 86400)
	case RefillMonthly:
		u := t.UTC()
		return int64(u.Year()-1970)*12 + int64(u.Month()) - 1
	}
	return 0
}

// NextRefill is when the refill period of t ends: the next UTC midnight, or the first of the
// next month at 00:00 UTC; the zero time for RefillNone.
func NextRefill(r Refill, t time.Time) time.Time {
	u := t.UTC()
	switch r {
	case RefillDaily:
		return time.Date(u.Year(), u.Month(), u.Day()+1, 0, 0, 0, 0, time.UTC)
	case RefillMonthly:
		return time.Date(u.Year(), u.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}

// RefillLength is the length of the refill period t falls in (a day, or that month's
// length), which the RateLimit headers show as the window of a credits quota; 0 for
// RefillNone.
func RefillLength(r Refill, t time.Time) time.Duration {
	u := t.UTC()
	switch r {
	case RefillDaily:
		return 24 * time.Hour
	case RefillMonthly:
		start := time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC)
		return NextRefill(r, t).Sub(start)
	}
	return 0
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// creditsPeriodLua computes, from the refill kind in kind and Redis's clock in sec (whole
// seconds since 1970), the current refill period in cur and its end in nxt (Unix seconds):
// days for kind 1; for kind 2 months, through the civil-from-days and days-from-civil
// algorithms (H. Hinnant), which need only integer arithmetic and so stay exact in Lua's
// float64 numbers. RefillPeriod and NextRefill are its Go twins.
const creditsPeriodLua = `
    local cur, nxt
    if kind == 1 then
      cur = math.floor(sec / 86400)
      nxt = (cur + 1) * 86400
    else
      local z = math.floor(sec / 86400) + 719468
      local era = math.floor(z / 146097)
      local doe = z - era * 146097
      local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
      local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
      local mp = math.floor((5 * doy + 2) / 153)
      local m = mp + 3
      if mp >= 10 then m = mp - 9 end
      local y = yoe + era * 400
      if m <= 2 then y = y + 1 end
      cur = (y - 1970) * 12 + m - 1
      -- The first day of the next month, back to days since 1970.
      y, m = y, m + 1
      if m > 12 then y, m = y + 1, 1 end
      if m <= 2 then y = y - 1 end
      era = math.floor(y / 400)
      yoe = y - era * 400
      mp = m - 3
      if m <= 2 then mp = m + 9 end
      doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + math.floor((153 * mp + 2) / 5)
      nxt = (era * 146097 + doe - 719468) * 86400
    end
`

// limiterCreditsRead is the limiter script's first pass for a credits request s (s.iv holds
// the Refill): it reads the balance, applies a refill that is due without writing it, and
// decides. s.c is the balance, s.per the period to store, s.next the time to the next refill
// in microseconds (nil without a refill).
const limiterCreditsRead = `
    local b = redis.call('HMGET', s.key, 'remaining', 'period')
    s.c, s.per = 0, 0
    if b[1] then
      s.c, s.per = tonumber(b[1]), tonumber(b[2] or '0')
      if s.c == nil or s.c ~= math.floor(s.c) or s.per == nil then
        return redis.error_reply('ERR credits balance ' .. i .. ' is not an integer')
      end
    end
    if s.iv > 0 then
      local kind = s.iv
` + creditsPeriodLua + `
      -- A balance that exists is refilled when its period is over; a missing one is not
      -- made up. The stored period only ever grows.
      if b[1] and cur > s.per then s.c, s.per = s.limit, cur end
      s.next = nxt * 1000000 - now
    end
    s.ok = s.c >= s.cost
`

// limiterCreditsCount is the second pass for a credits request: it spends the cost when the
// call counts and sets remaining, reset and retry for the reply.
const limiterCreditsCount = `
    if counted then
      s.c = s.c - s.cost
      redis.call('HSET', s.key, 'remaining', int(s.c), 'period', int(s.per))
    end
    remaining = s.c
    reset = s.next or 0
    retry = s.next or ` + "315360000000000" + `
`

// creditsAdminScript reads or changes one balance (KEYS[1]) with the refill that is due
// applied first, so that an operator's change is never lost to a refill computed from an
// older period. ARGV: op (get, set, add or init), the amount, the Refill, the refill amount.
// get writes nothing; set stores the amount; add adds it (a negative amount takes credits
// away, never below 0) and creates a missing balance; init stores the amount only when no
// balance exists (apikeys.Create, which must not touch another key's balance). Every write
// stores the current period, so the next refill is at the next boundary. The reply is
// {exists, remaining, microseconds to the next refill (0 without refill), written}.
const creditsAdminScript = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local now = sec * 1000000 + tonumber(t[2])
local op, n, kind, amount = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'remaining', 'period')
local exists = b[1] and 1 or 0
local c, per = 0, 0
if b[1] then
  c, per = tonumber(b[1]), tonumber(b[2] or '0')
  if c == nil or c ~= math.floor(c) or per == nil then
    return redis.error_reply('ERR credits balance is not an integer')
  end
end
local reset = 0
if kind > 0 then
` + creditsPeriodLua + `
  if b[1] and cur > per then c = amount end
  if cur > per then per = cur end
  reset = nxt * 1000000 - now
end
local written = 1
if op == 'get' then
  written = 0
elseif op == 'set' then
  c = n
elseif op == 'add' then
  c = c + n
  if c < 0 then c = 0 end
  if c > 2251799813685248 then return redis.error_reply('ERR credits balance would exceed 2^51') end
elseif op == 'init' then
  if b[1] then written = 0 else c = n end
else
  return redis.error_reply('ERR unknown credits operation')
end
if written == 1 then
  redis.call('HSET', KEYS[1], 'remaining', string.format('%.0f', c), 'period', string.format('%.0f', per))
end
return {exists, c, reset, written}
`

var creditsAdminSHA = scriptSHA(creditsAdminScript)

// Balance is a credits balance as the admin script saw it.
type Balance struct {
	// Remaining is the balance, with a refill that was due applied.
	Remaining int64
	// NextRefill is the time until the next refill; 0 without a refill.
	NextRefill time.Duration
	// Existed reports that the balance existed before the call.
	Existed bool
	// Written reports that the call stored the balance.
	Written bool
}

// CreditsBalance reads the balance at key as a decision would see it: a refill that is due
// is applied to the answer but not stored. A missing balance is ErrNoBalance. refill is the
// key's credits limit (Requests the refill amount, Refill its period).
func CreditsBalance(ctx context.Context, rdb Scripter, key string, refill Limit) (Balance, error) {
	b, err := creditsAdmin(ctx, rdb, "get", key, 0, refill)
	if err == nil && !b.Existed {
		err = ErrNoBalance
	}
	return b, err
}

// SetCredits stores n as the balance at key, which counts as the current period's refill.
func SetCredits(ctx context.Context, rdb Scripter, key string, n int64, refill Limit) (Balance, error) {
	if n < 0 || n > maxExact {
		return Balance{}, fmt.Errorf("%w: credits %d out of range 0..%d", ErrInvalidRequest, n, int64(maxExact))
	}
	return creditsAdmin(ctx, rdb, "set", key, n, refill)
}

// AddCredits adds n (negative: takes away, never below 0) to the balance at key after the
// refill that is due, creating a missing balance.
func AddCredits(ctx context.Context, rdb Scripter, key string, n int64, refill Limit) (Balance, error) {
	if n < -maxExact || n > maxExact {
		return Balance{}, fmt.Errorf("%w: credits %d out of range -%d..%d", ErrInvalidRequest, n, int64(maxExact), int64(maxExact))
	}
	return creditsAdmin(ctx, rdb, "add", key, n, refill)
}

// InitCredits stores n as the balance at key unless one exists; Balance.Written says which.
func InitCredits(ctx context.Context, rdb Scripter, key string, n int64, refill Limit) (Balance, error) {
	if n < 0 || n > maxExact {
		return Balance{}, fmt.Errorf("%w: credits %d out of range 0..%d", ErrInvalidRequest, n, int64(maxExact))
	}
	return creditsAdmin(ctx, rdb, "init", key, n, refill)
}

func creditsAdmin(ctx context.Context, rdb Scripter, op, key string, n int64, refill Limit) (Balance, error) {
	if key == "" {
		return Balance{}, fmt.Errorf("%w: empty key", ErrInvalidRequest)
	}
	if refill.Refill < RefillNone || refill.Refill > RefillMonthly || refill.Requests < 0 || refill.Requests > maxExact {
		return Balance{}, fmt.Errorf("%w: refill of %d every %v", ErrInvalidRequest, refill.Requests, refill.Refill)
	}
	v, err := rdb.Eval(ctx, creditsAdminSHA, creditsAdminScript, []string{key},
		op, strconv.FormatInt(n, 10), int(refill.Refill), refill.Requests)
	if err != nil {
		return Balance{}, fmt.Errorf("ratelimit: credits %s: %w", op, err)
	}
	items, ok := v.([]interface{})
	if !ok || len(items) != 4 {
		return Balance{}, fmt.Errorf("%w: credits %s: got %T, want 4 elements", ErrBadReply, op, v)
	}
	var f [4]int64
	for i := range f {
		if f[i], err = replyInt(items[i]); err != nil {
			return Balance{}, fmt.Errorf("%w: credits %s element %d: %v", ErrBadReply, op, i, err)
		}
	}
	if f[0] > 1 || f[3] > 1 || f[2] > maxReplyMicros {
		return Balance{}, fmt.Errorf("%w: credits %s: reply %v out of range", ErrBadReply, op, f)
	}
	return Balance{Existed: f[0] == 1, Remaining: f[1], NextRefill: time.Duration(f[2]) * time.Microsecond, Written: f[3] == 1}, nil
}
