package redisconn_test

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// With no URL, New starts the embedded in-memory store; with one, the same code talks to Redis.
func ExampleNew() {
	c, err := redisconn.New(redisconn.Options{
		URL:     "",          // for example redis://redis:6379/0, redis-cluster://n1,n2,n3 or rediss://...
		Timeout: time.Second, // generous for an example; production wants tens of milliseconds
	}, zap.NewNop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// Every call runs under the per-call deadline when ctx has none of its own.
	n, err := c.Do(context.Background(), "INCR", []string{"hits"})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.Embedded(), n)
	// Output: true 1
}
