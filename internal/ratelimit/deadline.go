package ratelimit

import (
	"context"
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
	return context.WithTimeout(ctx, d)
}
