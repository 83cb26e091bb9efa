package ratelimit

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// FailureReason names a backend failure with a bounded word for metrics and logs, never
// echoing a key or value: "timeout" (a deadline, a socket timeout or an exhausted pool),
// "canceled", "bad_reply" (a reply of the wrong shape) or "unavailable". When the call ran
// under a caller's context, use CallReason: the error alone cannot tell a caller's deadline
// from a cancellation.
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

// CallReason names the failure err of a backend call made under ctx, the request's context.
// Once ctx has ended, ctx decides whatever err says: a deadline, the caller's or ours, is
// "timeout", and only a cancellation that did not come at the deadline is "canceled" (see
// ContextErr). While ctx is live it is FailureReason(err).
func CallReason(ctx context.Context, err error) string {
	switch cerr := ContextErr(ctx); {
	case cerr == nil:
		return FailureReason(err)
	case errors.Is(cerr, context.DeadlineExceeded):
		return "timeout"
	}
	return "canceled"
}
