package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSessionIndexAndAdminAPI(t *testing.T) {
	c, err := parse("cfg.yaml", []byte("sessions: {secrets: [s]}\n"), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want := SessionIndex{Enabled: true, Prefix: "extauthz:sessions:", MaxPerUser: 50, SeenEvery: Duration(time.Minute)}
	if c.Sessions.Index != want {
		t.Errorf("sessions.index defaults = %+v, want %+v", c.Sessions.Index, want)
	}
	if !c.Admin.API || len(c.Admin.APIAllow) != 0 {
		t.Errorf("admin defaults = %+v, want api on, no allow list", c.Admin)
	}

	c, err = parse("cfg.yaml", []byte(`
sessions:
  secrets: [s]
  index: {enabled: false, prefix: "app:idx:", max_per_user: 7, seen_every: 30s}
admin:
  api: false
  api_allow: [10.0.0.0/8, "192.168.1.9", "fd00::1/64"]
`), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	want = SessionIndex{Enabled: false, Prefix: "app:idx:", MaxPerUser: 7, SeenEvery: Duration(30 * time.Second)}
	if c.Sessions.Index != want {
		t.Errorf("sessions.index = %+v, want %+v", c.Sessions.Index, want)
	}
	if c.Admin.API {
		t.Error("admin.api: false was not read")
	}
	got := c.Admin.APIAllowPrefixes()
	wantP := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.9/32"), netip.MustParsePrefix("fd00::/64")}
	if !reflect.DeepEqual(got, wantP) {
		t.Errorf("APIAllowPrefixes = %v, want %v", got, wantP)
	}
}

func TestSessionIndexAndAdminAPIBad(t *testing.T) {
	tests := []struct {
		name, yaml, path, text string
	}{
		{"prefix with a brace", "sessions: {index: {prefix: 'a{b}:'}}", "sessions.index.prefix", "braces"},
		{"empty prefix", "sessions: {index: {prefix: ''}}", "sessions.index.prefix", "non-empty"},
		{"zero cap", "sessions: {index: {max_per_user: 0}}", "sessions.index.max_per_user", "from 1 to 1000"},
		{"huge cap", "sessions: {index: {max_per_user: 5000}}", "sessions.index.max_per_user", "from 1 to 1000"},
		{"seen_every too short", "sessions: {index: {seen_every: 10ms}}", "sessions.index.seen_every", "at least 1s"},
		{"unknown index key", "sessions: {index: {max_per_users: 3}}", "sessions.index.max_per_users", "max_per_user"},
		{"bad cidr", "admin: {api_allow: [10.0.0.0/33]}", "admin.api_allow[0]", "not a CIDR"},
		{"host name", "admin: {api_allow: [localhost]}", "admin.api_allow[0]", "not a CIDR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml+"\n"), noEnv)
			if err == nil {
				t.Fatal("parse accepted the config")
			}
			if !strings.Contains(err.Error(), tt.path) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error does not name %s with %q:\n%v", tt.path, tt.text, err)
			}
		})
	}
}
