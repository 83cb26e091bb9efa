package authz

import (
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// The reasons of a request the limiter denied.
const (
	reasonOverLimit   = "over_limit"
	reasonOverCredits = "over_credits"
)

// creditsQuotaName names a credits quota in draft-8 headers.
const creditsQuotaName = "credits"

// creditsRequest is the limiter request that spends one of the key's credits. It goes into
// the same Limiter.Allow call as the key's limits, so that one script decides both, all or
// nothing.
func creditsRequest(c apikeys.Credits) ratelimit.Request {
	return ratelimit.Request{Key: c.Key, Limit: c.Limit(), Cost: 1}
}

// creditsQuota is the RateLimit quota of a credits decision: the quota is the refill amount,
// the window the refill period (a day, or this month's length), the reset the time to the
// next refill. A balance without a refill never resets, which no draft-7 item can say (every
// item has a window and a reset, and reset=0 would tell clients to retry at once), so such a
// balance has no quota in the headers: ok is false.
func creditsQuota(req ratelimit.Request, dec ratelimit.Decision, now time.Time) (q ratelimit.Quota, ok bool) {
	if req.Limit.Refill == ratelimit.RefillNone {
		return ratelimit.Quota{}, false
	}
	return ratelimit.Quota{
		Name:      creditsQuotaName,
		Limit:     uint64(max(dec.Limit, 0)),
		Remaining: uint64(max(dec.Remaining, 0)),
		Window:    ratelimit.RefillLength(req.Limit.Refill, now),
		Reset:     dec.Reset,
		Key:       req.Key,
		Over:      !dec.Allowed,
	}, true
}
