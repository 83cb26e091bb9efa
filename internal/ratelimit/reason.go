package ratelimit

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// FailureReason names a backend failure with a bounded word for metrics and logs, never
// echoing a key or value: "timeout" (a deadline, a socket timeout or an exhausted pool),
// "canceled", "bad_reply" (a reply of the wrong shape) or "unavailable".
func FailureReason(err error) string {
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, redis.ErrPoolTimeout),
		errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrBadReply):
		return "bad_reply"
	}
	return "unavailable"
}
