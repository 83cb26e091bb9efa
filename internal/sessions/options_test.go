package sessions

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
)

const testSecret = "s3cr3t-do-not-print"

func validOptions() Options {
	return Options{Secrets: []string{testSecret}, Subject: "userId"}
}

// idleClient is a client New accepts, for tests that make no Redis call: building it does no
// network I/O, and nothing listens on its port.
func idleClient(t *testing.T) *redisconn.Client {
	t.Helper()
	rc, err := redisconn.New(redisconn.Options{URL: "redis://127.0.0.1:1/0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

func TestNewRejects(t *testing.T) {
	rdb := idleClient(t)
	tests := []struct {
		name    string
		rdb     Redis
		mutate  func(*Options)
		wantErr []string
	}{
		{"nil client", nil, func(*Options) {}, []string{"nil redis client"}},
		{"no secrets", rdb, func(o *Options) { o.Secrets = nil }, []string{"Secrets: at least one"}},
		{"empty secret", rdb, func(o *Options) { o.Secrets = []string{testSecret, ""} }, []string{"Secrets[1]: empty"}},
		{"no subject", rdb, func(o *Options) { o.Subject = "" }, []string{"Subject: required"}},
		{"bad subject path", rdb, func(o *Options) { o.Subject = "passport..user" }, []string{"Subject:", "empty key"}},
		{"bad roles path", rdb, func(o *Options) { o.Roles = "roles." }, []string{"Roles:"}},
		{"bad cookie name", rdb, func(o *Options) { o.CookieName = "connect sid" }, []string{"CookieName:"}},
		{"cookie name with =", rdb, func(o *Options) { o.CookieName = "a=b" }, []string{"CookieName:"}},
		{"bad header name", rdb, func(o *Options) { o.Headers = map[string]string{"x user": "userId"} }, []string{`Headers["x user"]: not an HTTP header name`}},
		{"header twice", rdb, func(o *Options) { o.Headers = map[string]string{"X-User": "userId", "x-user": "userId"} }, []string{"in different cases"}},
		{"bad header path", rdb, func(o *Options) { o.Headers = map[string]string{"x-user": ""} }, []string{`Headers["x-user"]: path`}},
		{"negative TouchTTL", rdb, func(o *Options) { o.TouchTTL = -time.Second }, []string{"TouchTTL: negative"}},
		{"sub-second TouchTTL", rdb, func(o *Options) { o.TouchTTL = 500 * time.Millisecond }, []string{"TouchTTL:", "under a second"}},
		{"negative TouchEvery", rdb, func(o *Options) { o.TouchEvery = -1 }, []string{"TouchEvery: negative"}},
		{"zero cache TTL", rdb, func(o *Options) { o.Cache = &CacheOptions{} }, []string{"Cache.TTL:", "not positive"}},
		{"every problem at once", nil, func(o *Options) { o.Secrets = nil; o.Subject = ""; o.TouchTTL = -1 },
			[]string{"nil redis client", "Secrets:", "Subject:", "TouchTTL:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := validOptions()
			tt.mutate(&opts)
			s, err := New(tt.rdb, opts)
			if err == nil {
				t.Fatalf("New = %v, nil; want an error", s)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error %q quotes a secret", err)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	rdb := idleClient(t)
	opts := validOptions()
	opts.Headers = map[string]string{"X-User": "userId", "a-role": "role", "X-Passport": "passport.user"}
	opts.TouchTTL = 1500 * time.Millisecond
	s, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CookieName(); got != "connect.sid" {
		t.Errorf("CookieName() = %q, want connect.sid", got)
	}
	if s.cfg.prefix != "sess:" {
		t.Errorf("prefix = %q, want sess:", s.cfg.prefix)
	}
	var names []string
	for _, h := range s.cfg.headers {
		names = append(names, h.name)
	}
	if want := []string{"a-role", "x-passport", "x-user"}; !reflect.DeepEqual(names, want) {
		t.Errorf("header names = %q, want %q", names, want)
	}
	if s.cfg.touchTTL != 2*time.Second || s.cfg.touchEvery != time.Minute || s.touch == nil {
		t.Errorf("touch = %v every %v (memory %v), want 2s every 1m", s.cfg.touchTTL, s.cfg.touchEvery, s.touch != nil)
	}

	opts.TouchTTL = 0
	if s, err = New(rdb, opts); err != nil || s.touch != nil {
		t.Errorf("TouchTTL 0: err %v, touch memory %v; want touching off", err, s.touch != nil)
	}
}

// TestStringsRedactSecrets checks every way a value may end up in a log line.
func TestStringsRedactSecrets(t *testing.T) {
	rdb := idleClient(t)
	opts := validOptions()
	s, err := New(rdb, opts)
	if err != nil {
		t.Fatal(err)
	}
	const sid = "the-session-id"
	sess := &Session{ID: sid, Subject: "u1", Roles: []string{"admin"}}
	for _, v := range []any{opts, &opts, s, sess, *sess} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, testSecret) || strings.Contains(out, sid) {
				t.Errorf("Sprintf(%q, %T) = %q: leaks a secret", verb, v, out)
			}
		}
	}
	if out := fmt.Sprint(sess); !strings.Contains(out, "u1") {
		t.Errorf("Session string %q lost the subject", out)
	}
}
