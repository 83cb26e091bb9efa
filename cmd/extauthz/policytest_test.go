package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The shipped example tests must pass against the shipped example config: they are what a user
// copies, and running them here keeps them true as the policies and the engine change.
func TestPolicyTestExamplesPass(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run([]string{"test", filepath.Join("..", "..", "examples", "policies_test.yaml")}, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String(), "FAIL") || !strings.Contains(out.String(), "PASS") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// writePolicyTestFile writes a test file in a temporary directory; its config is the example config, named
// by absolute path.
func writePolicyTestFile(t *testing.T, body string) string {
	t.Helper()
	cfg, err := filepath.Abs(filepath.Join("..", "..", "examples", "extauthz.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "t_test.yaml")
	if err := os.WriteFile(path, []byte("config: "+cfg+"\n"+body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// A failing case exits 1 with a field-by-field diff, the passing cases still say ok, and no
// fixture secret (the signed cookie, the API key) appears in the output.
func TestPolicyTestFailureDiff(t *testing.T) {
	path := writePolicyTestFile(t, `
tests:
  - name: health passes
    request: {path: /healthz}
    expect: {allow: true, policy: health}
  - name: session headers are wrong
    request: {path: /api/x, session: {userId: bob, role: viewer}}
    expect: {allow: true, headers: {x-user-id: alice}}
  - name: key expected to be denied
    request: {path: /api/x, apikey: {owner: acme}}
    expect: {status: 401, policy: login, removed: [x-user-id]}
  - name: login limit reached within the repeat
    request: {method: POST, path: /auth/login}
    repeat: 7
    expect: {allow: true}
`)
	var out, errOut bytes.Buffer
	code := run([]string{"test", path}, &out, &errOut)
	got := out.String()
	if code != 1 {
		t.Fatalf("exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, got, errOut.String())
	}
	for _, want := range []string{
		"ok    health passes",
		"FAIL  session headers are wrong",
		`header x-user-id  want "alice", got "bob"`,
		"<session fixture>",
		"FAIL  key expected to be denied",
		"status    want 401, got 200",
		`policy    want "login", got "api"`,
		"<api key fixture>",
		"(request 6 of 7)",
		"allow     want true, got false",
		"decision  deny 429 over_limit",
		"3 of 4 case(s) failed",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	// express-session's signed value starts "s:" (URL-encoded "s%3A"); keys start eak_.
	for _, secret := range []string{"s%3A", "connect.sid=", "eak_"} {
		if strings.Contains(got+errOut.String(), secret) {
			t.Errorf("output holds %q, part of a fixture's secret:\n%s", secret, got)
		}
	}
}

// A mistake in a test file is a usage error (exit 2) naming the line and the field path, and
// no case runs: a CI job must not report a half-run file as a verdict on the policies.
func TestPolicyTestFileErrors(t *testing.T) {
	for _, tt := range []struct{ name, body, want string }{
		{"misspelled field", "tests:\n  - {name: a, request: {path: /}, expcet: {allow: true}}\n", "tests[0].expcet: unknown field"},
		{"nothing expected", "tests:\n  - {name: a, request: {path: /}, expect: {policy: api}}\n", "tests[0].expect: needs allow or status"},
		{"bad status", "tests:\n  - {name: a, request: {path: /}, expect: {status: '401'}}\n", "tests[0].expect.status: must be an integer"},
		{"unknown fixture", "tests:\n  - {name: a, request: {path: /, session: nobody}, expect: {allow: true}}\n", `tests[0].request.session: no fixtures.sessions named "nobody"`},
		{"key without owner", "tests:\n  - {name: a, request: {path: /, apikey: {tier: pro}}, expect: {allow: true}}\n", "tests[0].request.apikey.owner: required"},
		{"duplicate names", "tests:\n  - {name: a, request: {path: /}, expect: {allow: true}}\n  - {name: a, request: {path: /}, expect: {allow: true}}\n", "tests[1].name"},
		{"no tests", "fixtures: {}\n", "tests: missing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := writePolicyTestFile(t, tt.body)
			var out, errOut bytes.Buffer
			code := run([]string{"test", path}, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 naming %q", code, errOut.String(), tt.want)
			}
			if !strings.Contains(errOut.String(), path) {
				t.Fatalf("stderr does not name the file: %q", errOut.String())
			}
			if out.Len() != 0 {
				t.Fatalf("cases ran despite the error:\n%s", out.String())
			}
		})
	}
}

// A config the server would refuse, or a fixture the config cannot honour, is exit 2 with the
// config's own field path; no file or no config at all is exit 2 with the usage.
func TestPolicyTestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("policies:\n  - {name: p, auth: sometimes}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noSessions := filepath.Join(dir, "nosess.yaml")
	if err := os.WriteFile(noSessions, []byte("policies:\n  - {name: p, auth: none}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(tests, []byte("tests:\n  - {name: a, request: {path: /, session: {userId: u}}, expect: {allow: true}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"invalid config", []string{"test", "--config", badCfg, tests}, "policies[0].auth"},
		{"session fixture without secrets", []string{"test", "--config", noSessions, tests}, "tests[0].request.session: a session fixture needs sessions.secrets"},
		{"no config anywhere", []string{"test", tests}, "no config"},
		{"no file", []string{"test"}, "Usage:"},
		{"missing file", []string{"test", "--config", noSessions, filepath.Join(dir, "absent.yaml")}, "absent.yaml"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tt.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 naming %q", code, errOut.String(), tt.want)
			}
		})
	}
}

// Each file starts on a store of its own: a limit exhausted by one file is fresh in the next,
// so files can be run in any order and alone.
func TestPolicyTestFreshStorePerFile(t *testing.T) {
	body := `
tests:
  - name: five logins
    request: {method: POST, path: /auth/login}
    repeat: 5
    expect: {allow: true}
  - name: the sixth is limited
    request: {method: POST, path: /auth/login}
    expect: {status: 429}
`
	a, b := writePolicyTestFile(t, body), writePolicyTestFile(t, body)
	var out, errOut bytes.Buffer
	if code := run([]string{"test", a, b}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}

// auth: optional and sessions.scopes reach the engine through buildEngine, the wiring serve
// uses: a session's scopes satisfy a policy's, a session without them is refused, and an
// anonymous caller passes an optional policy that requires nothing.
func TestPolicyTestOptionalAuthAndSessionScopes(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfg, []byte(`sessions: {secrets: [s3cret-for-tests], subject: userId, scopes: perms, headers: {x-user-id: userId}}
policies:
  - {name: reports, match: {path_prefix: /reports/}, auth: any, scopes: [reports:read]}
  - {name: home, match: {path_prefix: /}, auth: optional}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := filepath.Join(dir, "t.yaml")
	if err := os.WriteFile(cases, []byte(`tests:
  - name: a session with the scope reads reports
    request: {path: /reports/q3, session: {userId: ann, perms: [reports:read]}}
    expect: {allow: true, policy: reports, headers: {x-user-id: ann}}
  - name: a session without it does not
    request: {path: /reports/q3, session: {userId: bob, perms: [other]}}
    expect: {status: 403, policy: reports}
  - name: optional sign-in lets an anonymous caller through without identity
    request: {path: /, headers: {x-user-id: mallory}}
    expect: {allow: true, policy: home, removed: [x-user-id]}
  - name: optional sign-in names a signed-in caller
    request: {path: /, session: {userId: ann}}
    expect: {allow: true, policy: home, headers: {x-user-id: ann}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"test", "--config", cfg, cases}, &out, &errOut); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
}

// expect.would_deny checks what a shadow policy would deny with; the run shows it in the
// decision line of a failure.
func TestPolicyTestWouldDeny(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(cfg, []byte(`
sessions: {secrets: [s], headers: {x-user-id: userId}, roles: role}
policies:
  - {name: admin, match: {path_prefix: /admin}, auth: session, roles: [admin], mode: shadow}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "t_test.yaml")
	if err := os.WriteFile(path, []byte("config: "+cfg+`
tests:
  - name: anonymous is let through
    request: {path: /admin/x, headers: {x-user-id: root}}
    expect: {allow: true, reason: shadow, would_deny: unauthenticated, removed: [x-user-id]}
  - name: a viewer is let through with its identity
    request: {path: /admin/x, session: {userId: bob, role: viewer}}
    expect: {allow: true, would_deny: forbidden_role, headers: {x-user-id: bob}}
  - name: an admin is not a would-be denial
    request: {path: /admin/x, session: {userId: alice, role: admin}}
    expect: {allow: true, reason: ok, would_deny: none}
  - name: a wrong expectation
    request: {path: /admin/x}
    expect: {allow: true, would_deny: forbidden_role}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run([]string{"test", path}, &out, &errOut)
	got := out.String()
	if code != 1 {
		t.Fatalf("exit %d\n%s\n%s", code, got, errOut.String())
	}
	for _, want := range []string{
		"ok    anonymous is let through",
		"ok    a viewer is let through with its identity",
		"ok    an admin is not a would-be denial",
		"FAIL  a wrong expectation",
		`decision  allow 200 shadow, policy "admin", identity none, would deny unauthenticated`,
		`would_deny want "forbidden_role", got "unauthenticated"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
