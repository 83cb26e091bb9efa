package config

import (
	"strings"
	"testing"
)

// auth: optional is a policy's auth mode with the API key settings (scopes, tiers, by: apikey)
// available, and sessions.scopes is a dotted path like sessions.roles.
func TestOptionalAuthAndSessionScopes(t *testing.T) {
	c, err := parse("cfg.yaml", []byte(`
sessions: {secrets: [s], scopes: perms.scopes}
policies:
  - name: feed
    auth: optional
    scopes: [read]
    limits: [{by: apikey, requests: 1, window: 1m}, {requests: 1, window: 1m}]
    tiers: {pro: [{requests: 5, window: 1m}]}
  - name: staff
    match: {path_prefix: /staff}
    auth: session
    scopes: [staff]
`), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c.Policies[0].Auth != "optional" || c.Sessions.Scopes != "perms.scopes" {
		t.Fatalf("auth %q, sessions.scopes %q", c.Policies[0].Auth, c.Sessions.Scopes)
	}
	if c.Policies[0].Failure.Auth != "closed" {
		t.Fatalf("failure.auth default under optional = %q, want closed", c.Policies[0].Failure.Auth)
	}
}

func TestOptionalAuthAndSessionScopesBad(t *testing.T) {
	tests := []struct {
		name, yaml, path, text string
	}{
		{"bad scopes path", "sessions: {secrets: [s], scopes: 'perms..scopes'}", "sessions.scopes", "empty segment"},
		{"session scopes without sessions.scopes", "sessions: {secrets: [s]}\npolicies: [{name: a, auth: session, scopes: [read]}]", "policies[0].scopes", "sessions.scopes"},
		{"scopes on an open route", "policies: [{name: a, auth: none, scopes: [read]}]", "policies[0].scopes", "optional"},
		{"empty scope", "policies: [{name: a, auth: optional, scopes: ['']}]", "policies[0].scopes[0]", "must not be empty"},
		{"tiers on a none route", "policies: [{name: a, auth: none, tiers: {pro: [{requests: 1, window: 1m}]}}]", "policies[0].tiers.pro", "optional"},
		{"misspelt optional", "policies: [{name: a, auth: optinal}]", "policies[0].auth", "optional"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml+"\n"), noEnv)
			if err == nil {
				t.Fatal("parse accepted the config")
			}
			if !strings.Contains(err.Error(), tt.path+":") || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("error does not name %s with %q:\n%v", tt.path, tt.text, err)
			}
		})
	}
}
