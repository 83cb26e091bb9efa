package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
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
		// The client refuses these at once: Redis is not reachable yet, or the sidecar is
		// overloaded. Neither waited for anything, so neither is a timeout.
		{"not connected yet", redisconn.ErrNotReady, "unavailable"},
		{"not connected yet, wrapped", fmt.Errorf("ratelimit: limiter script: %w", redisconn.ErrNotReady), "unavailable"},
		{"too many in flight", fmt.Errorf("ratelimit: fixed window script: %w", redisconn.ErrBusy), "unavailable"},
		{"cross slot", fmt.Errorf("x: %w", redisconn.ErrCrossSlot), "unavailable"},
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

func TestCallReason(t *testing.T) {
	// canceledAt returns a context canceled when its deadline is left away.
	canceledAt := func(left time.Duration) context.Context {
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(left))
		t.Cleanup(cancel)
		cancel()
		return ctx
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	t.Cleanup(cancel)
	// passed has a deadline in the past but its timer has not fired: a socket deadline set
	// from it fires first. Its Err is nil, as a context's is until the timer runs.
	passed := deadlineOnly{time.Now().Add(-time.Millisecond)}
	canceled, cancelNow := context.WithCancel(context.Background())
	cancelNow()
	// boundCanceled is a Bound context whose caller went away, judged after Bound's own
	// deadline has passed, as a call on a client that ignores cancellations returns.
	caller, cancelCaller := context.WithCancel(context.Background())
	cancelCaller()
	boundCanceled, cancelBound := Bound(caller, time.Nanosecond)
	t.Cleanup(cancelBound)
	boundExpired, cancelExpired := Bound(context.Background(), time.Nanosecond)
	t.Cleanup(cancelExpired)
	<-boundExpired.Done()
	refused := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	socketTimeout := &net.OpError{Op: "read", Err: &timeoutError{}}
	tests := []struct {
		name    string
		ctx     context.Context
		err     error
		want    string
		wantCtx error
	}{
		{"live context, backend refused", context.Background(), refused, "unavailable", nil},
		{"live context, our deadline", context.Background(), context.DeadlineExceeded, "timeout", nil},
		{"live context, not connected", context.Background(), redisconn.ErrNotReady, "unavailable", nil},
		{"live context, busy", context.Background(), redisconn.ErrBusy, "unavailable", nil},
		{"expired context, socket error", expired, refused, "timeout", context.DeadlineExceeded},
		{"passed deadline, timer not fired", passed, socketTimeout, "timeout", context.DeadlineExceeded},
		{"canceled at the deadline (stream reset)", canceledAt(time.Millisecond), context.Canceled, "timeout", context.DeadlineExceeded},
		{"canceled 8 ms before the deadline (a reset that overtook late headers)", canceledAt(8 * time.Millisecond), context.Canceled, "timeout", context.DeadlineExceeded},
		{"canceled 15 ms before the deadline", canceledAt(15 * time.Millisecond), context.Canceled, "canceled", context.Canceled},
		{"canceled long before the deadline", canceledAt(time.Hour), context.Canceled, "canceled", context.Canceled},
		{"canceled, no deadline, socket timeout", canceled, socketTimeout, "canceled", context.Canceled},
		{"bound, caller canceled, our deadline passed", boundCanceled, socketTimeout, "canceled", context.Canceled},
		{"bound, our deadline", boundExpired, socketTimeout, "timeout", context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CallReason(tt.ctx, tt.err); got != tt.want {
				t.Errorf("CallReason = %q, want %q", got, tt.want)
			}
			if got := ContextErr(tt.ctx); got != tt.wantCtx {
				t.Errorf("ContextErr = %v, want %v", got, tt.wantCtx)
			}
		})
	}
}

// deadlineOnly is a context with a deadline and no error yet.
type deadlineOnly struct{ dl time.Time }

func (d deadlineOnly) Deadline() (time.Time, bool) { return d.dl, true }
func (deadlineOnly) Done() <-chan struct{}         { return nil }
func (deadlineOnly) Err() error                    { return nil }
func (deadlineOnly) Value(any) any                 { return nil }
