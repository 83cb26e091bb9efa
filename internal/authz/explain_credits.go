package authz

import (
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// ExplainedCredits is an API key's credits balance, read as the decision reads it and not
// spent. It holds no secret: the balance's key names only the API key's id.
type ExplainedCredits struct {
	// Key is the balance's Redis key.
	Key string `json:"key"`
	// Balance is what a decision would see now, a refill that is due applied. It may exceed
	// Quota when an operator added credits.
	Balance int64 `json:"balance"`
	// Quota is the refill amount, or the initial credits of a balance that never refills.
	Quota int64 `json:"quota"`
	// Refill is the refill period, "1d" or "1mo", or "none".
	Refill string `json:"refill"`
	// NextRefill is when the balance is next set back to Quota (RFC 3339, UTC); empty
	// without a refill. NextRefillMS is the time until then.
	NextRefill   string `json:"next_refill,omitempty"`
	NextRefillMS int64  `json:"next_refill_ms"`
	// RefillDue reports that the stored balance belongs to an earlier period: Balance is the
	// refill, which the next request stores.
	RefillDue bool `json:"refill_due,omitempty"`
	// Allowed reports whether the balance alone would let the request through now.
	Allowed bool `json:"allowed"`
	// Unread says why the balance could not be read; Balance and Allowed mean nothing then.
	Unread string `json:"unread,omitempty"`
}

// explainedCredits fills in req's balance from what was read of it (s, at now), or marks it
// unread when nothing was. req is creditsRequest's, the request the decision spends.
func explainedCredits(req ratelimit.Request, s ratelimit.State, read bool, now time.Time) *ExplainedCredits {
	c := &ExplainedCredits{Key: req.Key, Quota: req.Limit.Requests, Refill: req.Limit.Refill.String()}
	if c.Refill == "" {
		c.Refill = "none"
	}
	if !read {
		c.Unread = "the balance could not be read"
		return c
	}
	c.Balance, c.Allowed, c.RefillDue = s.Remaining, s.Allowed, s.Refilled
	if req.Limit.Refill != ratelimit.RefillNone {
		c.NextRefill = ratelimit.NextRefill(req.Limit.Refill, now).Format(time.RFC3339)
		c.NextRefillMS = s.Reset.Milliseconds()
	}
	return c
}
