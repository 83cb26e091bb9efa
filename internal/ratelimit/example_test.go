package ratelimit_test

import (
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// A request over a per-minute limit and within an hourly one: RateLimit describes the quota
// closest to its limit, RateLimit-Policy lists both, and Retry-After says when to come back.
func ExampleAppendHeaders() {
	now := time.Unix(1_700_000_000, 0)
	quotas := []ratelimit.Quota{
		{Limit: 100, Remaining: 0, Window: time.Minute, Reset: 20 * time.Second, Over: true},
		{Limit: 1000, Remaining: 880, Window: time.Hour, Reset: 20 * time.Minute},
	}
	for _, h := range ratelimit.AppendHeaders(nil, ratelimit.FormatDraft7, quotas, now) {
		fmt.Printf("%s: %s\n", h.Name, h.Value)
	}
	// Output:
	// RateLimit-Policy: 100;w=60, 1000;w=3600
	// RateLimit: limit=100, remaining=0, reset=20
	// Retry-After: 20
}

// Escaped values joined with separators give a counter key whose {hash tag} no value can
// move, and values that contain the separators stay apart.
func ExampleAppendEscaped() {
	key := func(k, v string) string {
		b := []byte("rls:{edge.")
		b = ratelimit.AppendEscaped(b, k)
		b = append(b, '_')
		b = ratelimit.AppendEscaped(b, v)
		return string(append(b, '}'))
	}
	fmt.Println(key("a_b", "c"))
	fmt.Println(key("a", "b_c"))
	fmt.Println(key("user", "}{evil"))
	// Output:
	// rls:{edge.a%5Fb_c}
	// rls:{edge.a_b%5Fc}
	// rls:{edge.user_%7D%7Bevil}
}
