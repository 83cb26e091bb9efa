package rls_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
)

// newClient returns a ready redisconn client on url (its first PING answered: the client
// connects in the background and refuses calls until then), closed when the test ends.
func newClient(t testing.TB, url string) *redisconn.Client {
	t.Helper()
	return newClientWith(t, redisconn.Options{URL: url})
}

// newClientWith is newClient with every option (redisconntest.Ready; a zero Timeout is
// 5 s there, so tests that rely on the sidecar's 25 ms set it).
func newClientWith(t testing.TB, opts redisconn.Options) *redisconn.Client {
	t.Helper()
	return redisconntest.Ready(t, opts)
}

// doer runs one command; *redisconn.Client is one, and so is each master ForEachMaster
// hands out on a Cluster.
type doer interface {
	Do(ctx context.Context, name string, keys []string, args ...string) (any, error)
}

// do runs one command around the client under test and fails the test on an error; a nil
// reply is nil.
func do(t testing.TB, d doer, name string, keys []string, args ...string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := d.Do(ctx, name, keys, args...)
	if errors.Is(err, redisconn.ErrNil) {
		return nil
	}
	if err != nil {
		t.Fatalf("%s %q %q: %v", name, keys, args, err)
	}
	return v
}

// get is the value of key, "" when it does not exist.
func get(t testing.TB, d doer, key string) string {
	t.Helper()
	v, _ := do(t, d, "GET", []string{key}).(string)
	return v
}

// scan returns every key of one server matching pattern, with SCAN.
func scan(t testing.TB, d doer, pattern string) []string {
	t.Helper()
	var out []string
	cursor := "0"
	for {
		v, ok := do(t, d, "SCAN", nil, cursor, "MATCH", pattern, "COUNT", "100").([]any)
		if !ok || len(v) != 2 {
			t.Fatalf("SCAN: reply %v", v)
		}
		keys, _ := v[1].([]any)
		for _, k := range keys {
			out = append(out, k.(string))
		}
		if cursor, _ = v[0].(string); cursor == "0" {
			return out
		}
	}
}

// ttl is the key's TTL in seconds: -1 without expiry, -2 when missing.
func ttl(t testing.TB, d doer, key string) int64 {
	t.Helper()
	n, ok := do(t, d, "TTL", []string{key}).(int64)
	if !ok {
		t.Fatalf("TTL %s: not an integer", key)
	}
	return n
}
