package redisclientcheck

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/redistest"
)

// TestRueidisNeedsRedisAtStart records that rueidis.NewClient dials at once and fails when
// no node answers, where go-redis and the Pipe dial on first use: a sidecar that must start
// while Redis is down (issue 11, section 5) has to build the rueidis client in the
// background and report not-ready until it exists.
func TestRueidisNeedsRedisAtStart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	began := time.Now()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
	if err == nil {
		c.Close()
		t.Fatalf("rueidis.NewClient(%s) with nothing listening succeeded: it no longer dials at once", addr)
	}
	t.Logf("rueidis.NewClient with nothing listening: %v after %s", err, ms(time.Since(began)))
}
