package redisurl

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks Parse on arbitrary strings: it never panics; it refuses with an *Error or
// accepts a URL whose Redacted form holds no credential and reads back as the same server.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"redis://127.0.0.1:6379/0",
		"rediss://app:PASSWORD@redis.example.com:6380/2",
		"redis://:PASSWORD@[fe80::1%25eth0]:6379",
		"unix://:PASSWORD@/run/redis.sock?db=3",
		"redis-sentinel://app:PASSWORD@s1:26379,s2,[::1]:26380/mymaster/1?sentinel_username=w&sentinel_password=PASSWORD",
		"rediss-sentinel://s1/my%2Fmaster?tls=true",
		"redis-cluster://:PASSWORD@n1:7000,n2:7001/0?tls=true",
		"rediss-cluster://n1,n2",
		"redis://app:PASSWORD/x@h",
		"redis-sentinel://s1,,s2/m",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		check(t, raw)
		// Each "PASSWORD" becomes a password with DEL bytes in it, percent-encoded. Parse refuses
		// control characters everywhere but in credentials, so a DEL in Redacted is a leak, never
		// a coincidence.
		if strings.Contains(raw, "PASSWORD") {
			u := check(t, strings.ReplaceAll(raw, "PASSWORD", "%7Fpw%7F"))
			if u != nil && strings.Contains(u.Redacted(), "\x7f") {
				t.Fatalf("Redacted() = %q shows a password", u.Redacted())
			}
		}
	})
}

// check parses raw and checks the result; it returns the URL when Parse accepted raw.
func check(t *testing.T, raw string) *URL {
	t.Helper()
	u, err := Parse(raw)
	if err != nil {
		var ue *Error
		if !errors.As(err, &ue) || ue.Part == "" || ue.Msg == "" {
			t.Fatalf("Parse(%q) error %#v, want an *Error with a part and a message", raw, err)
		}
		return nil
	}
	if len(u.Addrs) == 0 || u.Topology < Single || u.Topology > Cluster {
		t.Fatalf("Parse(%q) accepted %s: no address or no topology", raw, dump(u))
	}
	red := u.Redacted()
	for _, secret := range []string{u.Password, u.SentinelPassword} {
		// A password with a control character cannot come from any other part of the URL.
		if strings.ContainsFunc(secret, isControl) && strings.Contains(red, secret) {
			t.Fatalf("Parse(%q).Redacted() = %q shows a password", raw, red)
		}
	}
	bare := withoutCredentials(u)
	if bare.Redacted() != red {
		t.Fatalf("Parse(%q): Redacted() = %q depends on the credentials (%q without them)", raw, red, bare.Redacted())
	}
	back, err := Parse(red)
	if err != nil {
		t.Fatalf("Parse(%q).Redacted() = %q, which Parse refuses: %v", raw, red, err)
	}
	if !reflect.DeepEqual(back, bare) {
		t.Fatalf("Parse(%q).Redacted() = %q reads back as\n  %s\nwant\n  %s", raw, red, dump(back), dump(bare))
	}
	return &u
}
