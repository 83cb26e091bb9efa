package apikeys

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// errFake is what every countingRedis call fails with: a backend failure, not an answer.
var errFake = errors.New("fake redis: unavailable")

// countingRedis counts calls and fails each one, so that a test can prove a path makes no
// Redis call, or exactly as many as it should, and what a backend failure turns into.
type countingRedis struct{ calls atomic.Int64 }

var _ Redis = (*countingRedis)(nil)

func (f *countingRedis) count() { f.calls.Add(1) }

func (f *countingRedis) Get(ctx context.Context, _ string) *redis.StringCmd {
	f.count()
	c := redis.NewStringCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) HGetAll(ctx context.Context, _ string) *redis.MapStringStringCmd {
	f.count()
	c := redis.NewMapStringStringCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) SMembers(ctx context.Context, _ string) *redis.StringSliceCmd {
	f.count()
	c := redis.NewStringSliceCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) SetNX(ctx context.Context, _ string, _ interface{}, _ time.Duration) *redis.BoolCmd {
	f.count()
	c := redis.NewBoolCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) SAdd(ctx context.Context, _ string, _ ...interface{}) *redis.IntCmd {
	f.count()
	c := redis.NewIntCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) HSet(ctx context.Context, _ string, _ ...interface{}) *redis.IntCmd {
	f.count()
	c := redis.NewIntCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) Del(ctx context.Context, _ ...string) *redis.IntCmd {
	f.count()
	c := redis.NewIntCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) Eval(ctx context.Context, _ string, _ []string, _ ...interface{}) *redis.Cmd {
	f.count()
	c := redis.NewCmd(ctx)
	c.SetErr(errFake)
	return c
}

func (f *countingRedis) Pipelined(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	f.count()
	return nil, errFake
}

func (f *countingRedis) TxPipelined(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	f.count()
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

func TestUniversalClientFits(t *testing.T) {
	// store.go asserts this at compile time too; here it is also exercised, with the client
	// type the sidecar actually builds (redisconn returns a redis.UniversalClient).
	var rdb redis.UniversalClient = redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:1"}})
	defer rdb.Close()
	if _, err := New(rdb, Options{}); err != nil {
		t.Fatalf("New(UniversalClient): %v", err)
	}
}
