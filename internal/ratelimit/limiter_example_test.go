package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// A per-minute and a per-hour limit decided together: the third request is denied by the
// hourly limit, and because a denied call counts nothing, the per-minute quota it would have
// spent is still there.
func ExampleLimiter_Allow() {
	m, err := miniredis.Run()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()
	m.SetTime(time.Unix(1_700_000_000, 0)) // a clock that stands still, for stable output
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	l := ratelimit.NewLimiter(rdb)
	reqs := []ratelimit.Request{
		{Key: "rl:{user42}:min", Limit: ratelimit.Limit{Requests: 5, Window: time.Minute, Algorithm: ratelimit.AlgorithmGCRA}, Cost: 1},
		{Key: "rl:{user42}:hour", Limit: ratelimit.Limit{Requests: 2, Window: time.Hour, Algorithm: ratelimit.AlgorithmGCRA}, Cost: 1},
	}
	for range 3 {
		_, ds, err := l.Allow(context.Background(), reqs)
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("minute %t %d left; hour %t %d left, retry after %v\n",
			ds[0].Allowed, ds[0].Remaining, ds[1].Allowed, ds[1].Remaining, ds[1].RetryAfter)
	}
	// Output:
	// minute true 4 left; hour true 1 left, retry after 0s
	// minute true 3 left; hour true 0 left, retry after 0s
	// minute true 3 left; hour false 0 left, retry after 30m0s
}
