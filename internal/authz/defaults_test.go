package authz

import (
	"testing"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// The engine's Redis deadline defaults to the one redis.timeout default, not a copy of it.
func TestDefaultTimeoutIsRedisDefault(t *testing.T) {
	if got, want := New(nil, Options{}).opts.Timeout, redisurl.DefaultTimeout; got != want {
		t.Errorf("default Timeout = %v, want redisurl.DefaultTimeout %v", got, want)
	}
}
