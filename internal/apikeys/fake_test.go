package apikeys

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

// errFake is what every countingRedis call fails with: a backend failure, not an answer.
var errFake = errors.New("fake redis: unavailable")

// countingRedis counts calls and fails each one, so that a test can prove a path makes no
// Redis call, or exactly as many as it should, and what a backend failure turns into.
type countingRedis struct{ calls atomic.Int64 }

var _ Redis = (*countingRedis)(nil)

func (f *countingRedis) HGetAll(context.Context, string) (map[string]string, error) {
	f.calls.Add(1)
	return nil, errFake
}

func (f *countingRedis) HGetAllCached(context.Context, string, time.Duration) (map[string]string, bool, error) {
	f.calls.Add(1)
	return nil, false, errFake
}

func (f *countingRedis) Do(context.Context, string, []string, ...string) (any, error) {
	f.calls.Add(1)
	return nil, errFake
}

func (f *countingRedis) Tx(context.Context, []redisconn.Cmd) ([]any, error) {
	f.calls.Add(1)
	return nil, errFake
}

func (f *countingRedis) Eval(context.Context, string, string, []string, ...any) (any, error) {
	f.calls.Add(1)
	return nil, errFake
}

// isAnswer reports whether err is one of the four answers about a key.
func isAnswer(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrRevoked) || errors.Is(err, ErrExpired)
}

func TestMalformedInputMakesNoRedisCall(t *testing.T) {
	s, f := newUnitStore(t, Options{})
	ctx := context.Background()
	for _, key := range []string{"", "Bearer", "eak_", "eak_abcdefghijklmnopqrstuvwxyzABCDEF2Wym5S", "x" + string(make([]byte, 4096))} {
		if _, err := s.Lookup(ctx, key); !errors.Is(err, ErrMalformed) {
			t.Errorf("Lookup(malformed) = %v, want ErrMalformed", err)
		}
	}
	for _, id := range []string{"", "k_", "k_short", "k_abcdefghijk!", "../k_abcdefghijkl", "k_abcdefghijkl\n"} {
		if err := s.Revoke(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Revoke(%q) = %v, want ErrNotFound", id, err)
		}
	}
	if _, _, err := s.Create(ctx, CreateParams{Owner: " ", Scopes: []string{"a,b"}, TTL: -time.Second}); err == nil {
		t.Error("Create(invalid params): want an error")
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d Redis calls for malformed input, want 0", n)
	}
}

func TestBackendFailureIsNoAnswer(t *testing.T) {
	s, f := newUnitStore(t, Options{})
	ctx := context.Background()
	key, err := s.Generate()
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Lookup(ctx, key)
	if !errors.Is(err, errFake) || isAnswer(err) {
		t.Errorf("Lookup with a failing backend = %v, want the backend error and no answer", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("Lookup made %d Redis calls, want exactly 1", n)
	}
	cached, _ := newUnitStore(t, Options{Cache: &CacheOptions{TTL: time.Minute}})
	if _, err := cached.Lookup(ctx, key); !errors.Is(err, errFake) || isAnswer(err) {
		t.Errorf("cached Lookup with a failing backend = %v, want the backend error and no answer", err)
	}
	if _, _, err := s.Create(ctx, CreateParams{Owner: "o"}); !errors.Is(err, errFake) || isAnswer(err) {
		t.Errorf("Create = %v, want the backend error", err)
	}
	if _, err := s.List(ctx); !errors.Is(err, errFake) || isAnswer(err) {
		t.Errorf("List = %v, want the backend error", err)
	}
	if err := s.Revoke(ctx, "k_abcdefghijkl"); !errors.Is(err, errFake) || isAnswer(err) {
		t.Errorf("Revoke = %v, want the backend error", err)
	}
}
