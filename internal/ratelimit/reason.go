package ratelimit

import (
	"context"
	"errors"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// FailureReason names a backend failure with a bounded word for metrics and logs, never
// echoing a key or value: "timeout" (a deadline or a socket timeout), "canceled",
// "bad_reply" (a reply of the wrong shape) or "unavailable" (anything else: a refused or
// broken connection, an error reply, and the client's own refusals below). When the call ran
// under a caller's context, use CallReason: the error alone cannot tell a caller's deadline
// from a cancellation.
//
// redisconn.ErrNotReady (no connection to Redis yet) and redisconn.ErrBusy (too many commands
// in flight) are "unavailable", never "timeout", even when they come with a deadline close
// by: the client refuses them at once without waiting, so a timeout alert must not fire for
// a Redis that is down or a sidecar that is overloaded, and those have their own signals.
func FailureReason(err error) string {
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, redisconn.ErrNotReady), errors.Is(err, redisconn.ErrBusy):
		return "unavailable"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
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
