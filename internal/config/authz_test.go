package config

import (
	"strings"
	"testing"
	"time"
)

const authzConfig = `
sessions:
  cookie: connect.sid
  prefix: "sess:"
  secrets: [new, old]
  subject: passport.user
  headers: {x-user-id: passport.user, x-user-role: role}
  roles: role
  touch: {ttl: 24h}
apikeys:
  headers: [x-api-key, authorization]
policies:
  - name: login
    match: {path_prefix: /auth/login, methods: [POST]}
    auth: none
    limits: [{by: ip, requests: 5, window: 15m, algorithm: sliding}]
  - name: api
    match: {path_prefix: /api/, host: example.com}
    roles: [admin]
    limits:
      - {name: per-user, requests: 100, window: 1m}
    tiers:
      pro: [{by: apikey, requests: 2000, window: 1m, algorithm: gcra, burst: 50}]
    failure: {auth: open}
`

func TestParseAuthzSections(t *testing.T) {
	c, err := parse("cfg.yaml", []byte(authzConfig), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if !c.Sessions.Enabled() || c.Sessions.Secrets[1] != "old" || c.Sessions.Subject != "passport.user" {
		t.Fatalf("sessions = %+v", c.Sessions)
	}
	if got := c.Sessions.Touch; got == nil || got.TTL.D() != 24*time.Hour || got.Every.D() != DefaultTouchEvery {
		t.Fatalf("touch = %+v, want ttl 24h and the default every", got)
	}
	if len(c.Policies) != 2 {
		t.Fatalf("policies = %d", len(c.Policies))
	}
	api := c.Policies[1]
	if api.Auth != "any" || api.Failure.Auth != "open" || api.Failure.Limits != "open" {
		t.Fatalf("api defaults: auth %q failure %+v", api.Auth, api.Failure)
	}
	if l := api.Limits[0]; l.By != "principal" || l.Algorithm != "fixed" || l.Window.D() != time.Minute {
		t.Fatalf("limit defaults = %+v", l)
	}
	if l := api.Tiers["pro"][0]; l.Algorithm != "gcra" || l.Burst != 50 {
		t.Fatalf("tier = %+v", l)
	}
}

func TestSessionSecretFromEnv(t *testing.T) {
	env := func(k string) string {
		if k == EnvSessionSecret {
			return "fresh, older ,"
		}
		return ""
	}
	c, err := parse("cfg.yaml", []byte("sessions: {secrets: [fromfile]}\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Sessions.Secrets, "|"); got != "fresh|older" {
		t.Fatalf("secrets = %q, want the environment's", got)
	}
}

func TestParseAuthzBad(t *testing.T) {
	tests := []struct {
		name, yaml, path string
	}{
		{"session auth without secrets", "policies: [{name: a, auth: session}]", "policies[0].auth"},
		{"unknown auth", "policies: [{name: a, auth: maybe}]", "policies[0].auth"},
		{"duplicate policy", "policies: [{name: a, auth: none}, {name: a, auth: none}]", "policies[1].name"},
		{"missing policy name", "policies: [{auth: none}]", "policies[0].name"},
		{"path prefix without slash", "policies: [{name: a, auth: none, match: {path_prefix: api}}]", "policies[0].match.path_prefix"},
		{"lower-case method", "policies: [{name: a, auth: none, match: {methods: [get]}}]", "policies[0].match.methods[0]"},
		{"zero requests", "policies: [{name: a, auth: none, limits: [{requests: 0, window: 1m}]}]", "policies[0].limits[0].requests"},
		{"short window", "policies: [{name: a, auth: none, limits: [{requests: 1, window: 10ms}]}]", "policies[0].limits[0].window"},
		{"unknown algorithm", "policies: [{name: a, auth: none, limits: [{requests: 1, window: 1m, algorithm: leaky}]}]", "policies[0].limits[0].algorithm"},
		{"unknown subject", "policies: [{name: a, auth: none, limits: [{by: user, requests: 1, window: 1m}]}]", "policies[0].limits[0].by"},
		{"bad header subject", "policies: [{name: a, auth: none, limits: [{by: 'header:X Y', requests: 1, window: 1m}]}]", "policies[0].limits[0].by"},
		{"apikey subject on a session route", "sessions: {secrets: [s]}\npolicies: [{name: a, auth: session, limits: [{by: apikey, requests: 1, window: 1m}]}]", "policies[0].limits[0].by"},
		{"burst outside gcra", "policies: [{name: a, auth: none, limits: [{requests: 1, window: 1m, burst: 3}]}]", "policies[0].limits[0].burst"},
		{"tiers on a session route", "sessions: {secrets: [s]}\npolicies: [{name: a, auth: session, tiers: {pro: [{requests: 1, window: 1m}]}}]", "policies[0].tiers.pro"},
		{"bad failure mode", "policies: [{name: a, auth: none, failure: {limits: sometimes}}]", "policies[0].failure.limits"},
		{"unknown policy key", "policies: [{name: a, auth: none, windw: 1m}]", "policies[0].windw"},
		{"empty secret", "sessions: {secrets: ['']}", "sessions.secrets[0]"},
		{"upper-case header", "sessions: {secrets: [s], headers: {X-User: userId}}", "sessions.headers.X-User"},
		{"empty path segment", "sessions: {secrets: [s], subject: 'passport..user'}", "sessions.subject"},
		{"touch ttl negative", "sessions: {secrets: [s], touch: {ttl: -1s}}", "sessions.touch.ttl"},
		{"token prefix", "apikeys: {token_prefix: 'a-b'}", "apikeys.token_prefix"},
		{"no api key headers", "apikeys: {headers: []}", "apikeys.headers"},
		{"credits status", "apikeys: {credits_status: 402}", "apikeys.credits_status"},
		{"limit prefix with brace", "limits: {prefix: 'rl{'}", "limits.prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml+"\n"), noEnv)
			if err == nil {
				t.Fatal("parse accepted the config")
			}
			if !strings.Contains(err.Error(), tt.path+":") {
				t.Fatalf("error does not name %s:\n%v", tt.path, err)
			}
			if !strings.Contains(err.Error(), "cfg.yaml:") {
				t.Fatalf("error has no file and line:\n%v", err)
			}
		})
	}
}

func TestAPIKeyIdentityHeadersChecked(t *testing.T) {
	c := Default()
	c.APIKeys.IdentityHeaders = map[string]string{"x-key-owner": "owner", "X-Bad": "id", "x-what": "secret", "x-api-key": "id"}
	var got []string
	for _, p := range problems(t, c.Validate()) {
		got = append(got, p.Path)
	}
	want := "apikeys.identity_headers.X-Bad apikeys.identity_headers.x-api-key apikeys.identity_headers.x-what"
	if strings.Join(got, " ") != want {
		t.Errorf("problems at %q, want %q", got, want)
	}
}

func TestCreditsStatus(t *testing.T) {
	if got := Default().APIKeys.CreditsStatus; got != 429 {
		t.Errorf("default apikeys.credits_status = %d, want 429", got)
	}
	c, err := parse("cfg.yaml", []byte("apikeys: {credits_status: 403}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIKeys.CreditsStatus != 403 {
		t.Errorf("credits_status = %d, want 403", c.APIKeys.CreditsStatus)
	}
}
