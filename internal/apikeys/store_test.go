package apikeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
	"github.com/extauthz/extauthz/internal/redistest"
)

// clock is a settable time source for a Store under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// t0 is the start of every test clock: a whole second plus a fraction, so that truncation
// and rounding show.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 600_000_000, time.UTC)

// newRedisStore returns a Store with a test clock over rdb.
func newRedisStore(t *testing.T, rdb Redis, opts Options) (*Store, *clock) {
	t.Helper()
	s, err := New(rdb, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	c := &clock{t: t0}
	s.now = c.now
	return s, c
}

// newClient returns the sidecar's client for url once it has connected, with a generous
// per-call deadline (redisconntest.Ready): these tests are about answers, not latency.
func newClient(t *testing.T, url string) *redisconn.Client {
	t.Helper()
	return redisconntest.Ready(t, redisconn.Options{URL: url})
}

func startRedis(t *testing.T) (*redistest.Server, *redisconn.Client) {
	t.Helper()
	srv := redistest.Start(t)
	return srv, newClient(t, srv.URL())
}

// serverDo runs a command on srv over a connection of its own, around the client under test,
// and fails the test on an error reply; it returns the reply line.
func serverDo(t *testing.T, srv *redistest.Server, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	line, err := srv.Do(ctx, args...)
	if err != nil || strings.HasPrefix(line, "-") {
		t.Fatalf("%s: %q, %v", args[0], line, err)
	}
	return line
}

func TestStoreStandalone(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "{apikey}:", "tenant-a:"} {
		for _, cached := range []bool{false, true} {
			t.Run(fmt.Sprintf("prefix=%s/cached=%v", prefix, cached), func(t *testing.T) {
				t.Parallel()
				_, rdb := startRedis(t)
				runContract(t, rdb, contractOptions(prefix, cached))
			})
		}
	}
}

func TestStoreIncompleteCreate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, rdb := startRedis(t)
	s, _ := newRedisStore(t, rdb, Options{})
	// What a Create cut short after its first two writes leaves behind.
	key, err := s.Generate()
	if err != nil {
		t.Fatal(err)
	}
	const id = "k_AAAAAAAAAAAA"
	serverDo(t, srv, "SET", s.idKey(id), Hash(key))
	serverDo(t, srv, "SADD", s.indexKey(), id)
	if _, err := s.Lookup(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup = %v, want ErrNotFound", err)
	}
	if recs, err := s.List(ctx); err != nil || len(recs) != 0 {
		t.Errorf("List = %v, %v, want nothing", recs, err)
	}
	if err := s.Revoke(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Revoke = %v, want ErrNotFound", err)
	}
	if n := serverDo(t, srv, "EXISTS", s.recordKey(Hash(key))); n != ":0" {
		t.Errorf("Revoke of an incomplete id created a record (EXISTS %s)", n)
	}
}

func TestStoreCorruptRecordIsNoAnswer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, rdb := startRedis(t)
	s, _ := newRedisStore(t, rdb, Options{})
	key, rec, err := s.Create(ctx, CreateParams{Owner: "o"})
	if err != nil {
		t.Fatal(err)
	}
	serverDo(t, srv, "HSET", s.recordKey(Hash(key)), fieldDisabled, "maybe")
	if _, err := s.Lookup(ctx, key); err == nil || isAnswer(err) {
		t.Errorf("Lookup(corrupt record) = %v, want an error that is no answer", err)
	}
	if _, err := s.List(ctx); err == nil || isAnswer(err) {
		t.Errorf("List(corrupt record) = %v, want an error that is no answer", err)
	}
	serverDo(t, srv, "SET", s.idKey(rec.ID), "not-a-hash")
	if err := s.Revoke(ctx, rec.ID); err == nil || isAnswer(err) {
		t.Errorf("Revoke(corrupt id entry) = %v, want an error that is no answer", err)
	}
}

// scriptedRandom returns a Store random source that yields the given key bodies and ids in
// turn, each as one batch of bytes that randomBase62 accepts whole.
func scriptedRandom(parts ...string) io.Reader {
	var b bytes.Buffer
	for _, p := range parts {
		chunk := make([]byte, batchLen(len(p)))
		for i := 0; i < len(p); i++ {
			chunk[i] = byte(strings.IndexByte(base62, p[i]))
		}
		b.Write(chunk)
	}
	return &b
}

func TestStoreIDCollision(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "{apikey}:"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv, rdb := startRedis(t)
			s, _ := newRedisStore(t, rdb, Options{Prefix: prefix})
			body1, body2 := strings.Repeat("a", BodyLen), strings.Repeat("b", BodyLen)
			s.rand = scriptedRandom(body1, "AAAAAAAAAAAA", body2, "AAAAAAAAAAAA", "BBBBBBBBBBBB")
			key1, rec1, err := s.Create(ctx, CreateParams{Owner: "first"})
			if err != nil {
				t.Fatal(err)
			}
			key2, rec2, err := s.Create(ctx, CreateParams{Owner: "second"})
			if err != nil {
				t.Fatal(err)
			}
			if rec1.ID != "k_AAAAAAAAAAAA" || rec2.ID != "k_BBBBBBBBBBBB" {
				t.Fatalf("ids = %s, %s; want the second Create to draw a new id", rec1.ID, rec2.ID)
			}
			for _, tc := range []struct {
				key, owner string
			}{{key1, "first"}, {key2, "second"}} {
				if got, err := s.Lookup(ctx, tc.key); err != nil || got.Owner != tc.owner {
					t.Errorf("Lookup = %+v, %v, want owner %s", got, err, tc.owner)
				}
			}
			if err := s.Revoke(ctx, rec1.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Lookup(ctx, key2); err != nil {
				t.Errorf("revoking the first id touched the second key: %v", err)
			}
			if n := serverDo(t, srv, "DBSIZE"); n != ":5" {
				t.Errorf("DBSIZE %s, want 5 keys (two records, two ids, the index)", n)
			}
		})
	}
}

func TestStoreRedisDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, rdb := startRedis(t)
	s, _ := newRedisStore(t, rdb, Options{})
	key, rec, err := s.Create(ctx, CreateParams{Owner: "o"})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Lookup(ctx, key); err == nil || isAnswer(err) {
		t.Errorf("Lookup with redis down = %v, want an error that is no answer", err)
	}
	if _, _, err := s.Create(ctx, CreateParams{Owner: "o"}); err == nil || isAnswer(err) {
		t.Errorf("Create with redis down = %v, want an error that is no answer", err)
	}
	if _, err := s.List(ctx); err == nil || isAnswer(err) {
		t.Errorf("List with redis down = %v, want an error that is no answer", err)
	}
	if err := s.Revoke(ctx, rec.ID); err == nil || isAnswer(err) {
		t.Errorf("Revoke with redis down = %v, want an error that is no answer", err)
	}
}
