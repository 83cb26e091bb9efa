package ratelimit

import (
	"context"
	"errors"
	"time"
)

// noCancel is the CancelFunc of a context Bound did not derive.
var noCancel context.CancelFunc = func() {}

// Bound returns ctx bounded by d from now. When ctx already ends within d (Envoy sends its
// filter timeout as the call's grpc-timeout, 20 ms for ratelimit by default), ctx itself is
// returned: the result is the same deadline, without a timer and a cancelable context per
// request. Call the CancelFunc either way.
func Bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, noCancel
	}
	bctx, cancel := context.WithTimeout(ctx, d)
	return bounded{Context: bctx, caller: ctx}, cancel
}

// bounded is a context Bound derived, with the caller's context it came from. Its own
// deadline ends it with context.DeadlineExceeded; when it ends canceled, the caller's context
// ended (or the CancelFunc ran), and ContextErr judges the caller's instead: a call that
// does not stop at once on a cancellation (a client still writing or dialing) returns after
// our deadline has passed, which must not turn a caller that went away into a timeout.
type bounded struct {
	context.Context
	caller context.Context
}

// deadlineSlack is how close to its deadline a cancellation must come to count as the
// deadline. A gRPC client sends its deadline as grpc-timeout and, when it expires, resets the
// stream: grpc-go cancels the server's context for the reset (context.Canceled) at about the
// moment its own copy of the deadline would fire, sooner by however long the request's
// headers waited before the server read them (its copy starts then, the client's at the
// send). Envoy's filter timeout reaches us the same way; with a 20 ms grpc-go deadline against
// a stopped Redis, nine calls in ten ended Canceled, not DeadlineExceeded (rls
// TestCallerDeadlineIsTimeout). 5 ms was too tight on a busy 2-core machine (about one run in
// twenty of that test, and of authz's, read a deadline as a cancellation); a cancellation
// counted as a deadline only changes a label, so the slack errs wide.
const deadlineSlack = 10 * time.Millisecond

// ContextErr is ctx.Err() as a metric or a log should read it: a context whose deadline has
// passed is context.DeadlineExceeded even before its timer has fired (a socket deadline set
// from it fires first), and so is a cancellation within deadlineSlack of the deadline: that is
// the caller's deadline arriving as a stream reset, not a caller that went away.
func ContextErr(ctx context.Context) error {
	if b, ok := ctx.(bounded); ok && errors.Is(b.Err(), context.Canceled) {
		return ContextErr(b.caller)
	}
	err := ctx.Err()
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	dl, ok := ctx.Deadline()
	switch {
	case !ok:
	case err == nil && !time.Now().Before(dl):
		return context.DeadlineExceeded
	case err != nil && time.Until(dl) <= deadlineSlack:
		return context.DeadlineExceeded
	}
	return err
}
