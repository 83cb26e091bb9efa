package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/redis/go-redis/v9"
)

func TestFailureReason(t *testing.T) {
	timeoutErr := &net.OpError{Op: "read", Err: &timeoutError{}}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"deadline", fmt.Errorf("wrapped: %w", context.DeadlineExceeded), "timeout"},
		{"socket timeout", timeoutErr, "timeout"},
		{"pool timeout", redis.ErrPoolTimeout, "timeout"},
		{"canceled", context.Canceled, "canceled"},
		{"bad reply", fmt.Errorf("%w: short", ErrBadReply), "bad_reply"},
		{"refused", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), "unavailable"},
	}
	for _, tt := range tests {
		if got := FailureReason(tt.err); got != tt.want {
			t.Errorf("%s: FailureReason = %q, want %q", tt.name, got, tt.want)
		}
	}
}

type timeoutError struct{}

func (*timeoutError) Error() string   { return "i/o timeout" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }
