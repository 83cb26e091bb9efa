package rls

import (
	"testing"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// ShouldRateLimit's Redis deadline defaults to the one redis.timeout default, not a copy of it.
func TestDefaultTimeoutIsRedisDefault(t *testing.T) {
	if got, want := NewService(nil, nil, Options{}).timeout, redisurl.DefaultTimeout; got != want {
		t.Errorf("default Timeout = %v, want redisurl.DefaultTimeout %v", got, want)
	}
}
