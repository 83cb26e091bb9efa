package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// A per-minute and a per-hour limit decided together: the third request is denied by the
// hourly limit, and because a denied call counts nothing, the per-minute quota it would have
// spent is still there. The client is the sidecar's embedded store (no URL); a real Redis
// URL works the same way.
func ExampleLimiter_Allow() {
	rc, err := redisconn.New(redisconn.Options{}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()

	l := ratelimit.NewLimiter(rc)
	reqs := []ratelimit.Request{
		{Key: "rl:{user42}:min", Limit: ratelimit.Limit{Requests: 5, Window: time.Minute, Algorithm: ratelimit.AlgorithmGCRA}, Cost: 1},
		{Key: "rl:{user42}:hour", Limit: ratelimit.Limit{Requests: 2, Window: time.Hour, Algorithm: ratelimit.AlgorithmGCRA}, Cost: 1},
	}
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, ds, err := l.Allow(ctx, reqs)
		cancel()
		if err != nil {
			fmt.Println(err)
			return
		}
		// The clock runs between calls: round what it moves.
		fmt.Printf("minute %t %d left; hour %t %d left, retry after %v\n",
			ds[0].Allowed, ds[0].Remaining, ds[1].Allowed, ds[1].Remaining, ds[1].RetryAfter.Round(time.Minute))
	}
	// Output:
	// minute true 4 left; hour true 1 left, retry after 0s
	// minute true 3 left; hour true 0 left, retry after 0s
	// minute true 3 left; hour false 0 left, retry after 30m0s
}
