package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestRedactArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		want []string
	}{
		{"url flag value", []string{"serve", "--redis-url", "redis://:s3cret@db:6379/0"},
			[]string{"serve", "--redis-url", "redis://:***@db:6379/0"}},
		{"url with user", []string{"--redis-url=rediss://app:s3cret@db/1"},
			[]string{"--redis-url=rediss://app:***@db/1"}},
		{"single-word user info", []string{"redis://s3cret@db"}, []string{"redis://***@db"}},
		{"password with a slash", []string{"redis://u:ab/s3cret@db:6379"}, []string{"redis://u:***@db:6379"}},
		{"password with an at", []string{"redis://u:a@s3cret@db"}, []string{"redis://u:***@db"}},
		{"two urls in one arg", []string{"a=redis://u:p1@h1 b=redis://u:p2@h2"}, []string{"a=redis://u:***@h1 b=redis://u:***@h2"}},
		{"no credentials", []string{"--redis-url", "redis://db:6379/0", "--config", "/etc/x.yaml"},
			[]string{"--redis-url", "redis://db:6379/0", "--config", "/etc/x.yaml"}},
		{"password flag separate", []string{"--redis-password", "s3cret", "--config", "c"},
			[]string{"--redis-password", "***", "--config", "c"}},
		{"password flag joined", []string{"-session-secret=s3cret"}, []string{"-session-secret=***"}},
		{"token flag", []string{"--Auth-Token", "s3cret"}, []string{"--Auth-Token", "***"}},
		{"password flag last", []string{"--password"}, []string{"--password"}},
		{"sentinel password in the query", []string{"--redis-url", "redis-sentinel://:s3cret@h1,h2/m/0?sentinel_password=s3cret&tls=true"},
			[]string{"--redis-url", "redis-sentinel://:***@h1,h2/m/0?sentinel_password=***&tls=true"}},
		{"secret query parameter last", []string{"x=https://h/p?a=1&token=s3cret"}, []string{"x=https://h/p?a=1&token=***"}},
		{"plain query kept", []string{"redis-cluster://h1,h2?tls=true&x=1"}, []string{"redis-cluster://h1,h2?tls=true&x=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := redactArgs(tc.in)
			if strings.Join(got, "\x00") != strings.Join(tc.want, "\x00") {
				t.Fatalf("redactArgs(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(strings.Join(got, " "), "s3cret") {
				t.Fatalf("secret left in %q", got)
			}
		})
	}
}

// timeoutErr is a net.Error timeout, as a Redis read past its deadline fails.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "read tcp 10.1.2.3:6379: i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// /readyz answers fixed phrases and never the ping's error text; the detail is logged once
// per change.
func TestReadyzNamesNoAddress(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"refused", errors.New("redisconn: ping redis://10.1.2.3:6379/0: dial tcp 10.1.2.3:6379: connect: connection refused"), "not ready: redis unreachable\n"},
		{"timeout", fmt.Errorf("redisconn: ping redis://10.1.2.3:6379/0: %w", timeoutErr{}), "not ready: redis timeout\n"},
		{"deadline", fmt.Errorf("redisconn: ping redis://10.1.2.3:6379/0: %w", context.DeadlineExceeded), "not ready: redis timeout\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			be := &fakeBackend{err: tc.err}
			be.down.Store(true)
			s := start(t, Options{Backend: be, Logger: zap.New(core)})
			admin := "http://" + s.AdminAddr().String()
			for range 3 {
				code, body := get(t, admin+"/readyz")
				if code != 503 || body != tc.want {
					t.Fatalf("/readyz = %d %q, want 503 %q", code, body, tc.want)
				}
			}
			// The gRPC health loop may have noted the change first and still be writing its
			// line: wait for it, then make sure it is the only one.
			for deadline := time.Now().Add(2 * time.Second); logs.FilterMessage("not ready").Len() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			notReady := logs.FilterMessage("not ready").All()
			if len(notReady) != 1 {
				t.Fatalf("%d 'not ready' log lines for one change, want 1", len(notReady))
			}
			if got := fmt.Sprint(notReady[0].ContextMap()["error"]); !strings.Contains(got, "10.1.2.3") {
				t.Fatalf("the log line lacks the ping's detail: %q", got)
			}
		})
	}
}
