package main

import (
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/authz"
)

// creditsLines is the text of an API key's credits balance in explain's output: what the
// balance is and how it refills, then its Redis key (which names only the key's id).
func creditsLines(c *authz.ExplainedCredits) []string {
	refill := "no refill (only an operator adds credits)"
	if c.Refill != "none" {
		refill = fmt.Sprintf("refilled to %d every %s, next %s (in %s)", c.Quota, c.Refill, c.NextRefill,
			time.Duration(c.NextRefillMS)*time.Millisecond)
	}
	if c.Unread != "" {
		return []string{fmt.Sprintf("quota %d, %s: %s", c.Quota, refill, c.Unread), "key " + c.Key}
	}
	state := fmt.Sprintf("balance %d of %d, %s", c.Balance, c.Quota, refill)
	if c.RefillDue {
		state += "; the refill is due: the next request stores it"
	}
	next := "this request would be allowed"
	if !c.Allowed {
		next = "this request would be OUT OF CREDITS"
	}
	return []string{state + ": " + next, "key " + c.Key}
}
