package ratelimit

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/extauthz/extauthz/internal/redisconn"
)

func TestParseFixedWindowReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reply  interface{}
		n      int
		want   []uint64
		wantOK bool
	}{
		{"integers", []interface{}{int64(1700000000), int64(123456), int64(1), int64(0)}, 2, []uint64{1, 0}, true},
		{"numeric strings", []interface{}{"1700000000", "5", "7"}, 1, []uint64{7}, true},
		{"integral floats", []interface{}{float64(1700000000), float64(0), float64(3)}, 1, []uint64{3}, true},
		{"no hits", []interface{}{int64(1), int64(2)}, 0, []uint64{}, true},

		{"not an array", "OK", 1, nil, false},
		{"nil", nil, 1, nil, false},
		{"integer", int64(3), 1, nil, false},
		{"too short", []interface{}{int64(1), int64(2)}, 1, nil, false},
		{"too long", []interface{}{int64(1), int64(2), int64(3), int64(4)}, 1, nil, false},
		{"empty", []interface{}{}, 0, nil, false},
		{"negative count", []interface{}{int64(1), int64(2), int64(-1)}, 1, nil, false},
		{"negative seconds", []interface{}{int64(-1), int64(2), int64(1)}, 1, nil, false},
		{"negative string", []interface{}{int64(1), int64(2), "-3"}, 1, nil, false},
		{"negative float", []interface{}{int64(1), int64(2), float64(-3)}, 1, nil, false},
		{"microseconds out of range", []interface{}{int64(1), int64(1_000_000), int64(1)}, 1, nil, false},
		{"fractional float", []interface{}{int64(1), int64(2), 1.5}, 1, nil, false},
		{"NaN", []interface{}{int64(1), int64(2), math.NaN()}, 1, nil, false},
		{"infinity", []interface{}{int64(1), int64(2), math.Inf(1)}, 1, nil, false},
		{"float too large", []interface{}{int64(1), int64(2), 1e19}, 1, nil, false},
		{"non-numeric string", []interface{}{int64(1), int64(2), "abc"}, 1, nil, false},
		{"bytes", []interface{}{int64(1), int64(2), []byte("1")}, 1, nil, false},
		{"nil element", []interface{}{int64(1), int64(2), nil}, 1, nil, false},
		{"bool", []interface{}{int64(1), int64(2), true}, 1, nil, false},
		{"nested array", []interface{}{int64(1), int64(2), []interface{}{int64(1)}}, 1, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, got, err := parseFixedWindowReply(tc.reply, tc.n)
			if !tc.wantOK {
				if !errors.Is(err, ErrBadReply) {
					t.Fatalf("error %v, want ErrBadReply", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if !equalCounts(got, tc.want...) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// fakeScripter answers every call with a fixed reply or error, to feed the package what a
// broken server or proxy might send.
type fakeScripter struct {
	reply any
	err   error
}

func (f fakeScripter) Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error) {
	return f.reply, f.err
}

// replyError is an error reply as the client reports one from the server.
type replyError string

func (e replyError) Error() string { return string(e) }

func TestAddBadReply(t *testing.T) {
	hits := []Hit{{Key: "k", Window: 60, Hits: 1}}
	for _, reply := range []interface{}{
		[]interface{}{int64(1), int64(2)},
		[]interface{}{1.5, int64(2), int64(3)},
		"garbage",
	} {
		_, err := NewFixedWindow(fakeScripter{reply: reply}).Add(t.Context(), hits)
		if !errors.Is(err, ErrBadReply) {
			t.Errorf("reply %#v: error %v, want ErrBadReply", reply, err)
		}
	}
}

// The client's errors come back wrapped, for errors.Is and FailureReason; a nil reply (which
// the script never gives) is the client's ErrNil, not a zero count.
func TestAddReturnsClientErrors(t *testing.T) {
	hits := []Hit{{Key: "k", Window: 60, Hits: 1}}
	for _, want := range []error{replyError("ERR something else"), redisconn.ErrNil, redisconn.ErrNotReady, context.DeadlineExceeded} {
		res, err := NewFixedWindow(fakeScripter{err: want}).Add(t.Context(), hits)
		if !errors.Is(err, want) || res.Counts != nil {
			t.Errorf("Add with the client failing %v: %+v, %v; want no counts and the error", want, res, err)
		}
	}
}
