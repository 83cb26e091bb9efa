package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/redistest"
)

// signOutConfig is the sidecar config of TestSignOutEverywhere: Express's sessions, the index
// on (its default), one session route.
func signOutConfig(redisURL, secret string) string {
	return fmt.Sprintf(`redis:
  url: %s
  timeout: 2s
log:
  level: warn
sessions:
  secrets: [%s]
  subject: userId
  roles: role
  headers: {x-user-id: userId}
policies:
  - name: app
    match: {path_prefix: /app}
    auth: session
`, redisURL, secret)
}

// listedSession is one session of GET /v1/sessions and `sessions list --json`.
type listedSession struct {
	ID        string  `json:"id"`
	FirstSeen *string `json:"first_seen"`
	LastSeen  *string `json:"last_seen"`
	IP        string  `json:"ip"`
	UserAgent string  `json:"user_agent"`
	Expires   *string `json:"expires"`
}

// adminSessions asks the sidecar's admin API for user's sessions.
func adminSessions(t *testing.T, s *sidecar, user string) []listedSession {
	t.Helper()
	code, body := s.get("/v1/sessions?user=" + user)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/sessions: %d %s", code, body)
	}
	var out struct {
		User     string          `json:"user"`
		Sessions []listedSession `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil || out.User != user {
		t.Fatalf("GET /v1/sessions: %q: %v", body, err)
	}
	return out.Sessions
}

// waitIndexed waits until user has n sessions in the index: the sidecar writes them in the
// background, after the decisions that resolved them.
func waitIndexed(t *testing.T, s *sidecar, user string, n int) []listedSession {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := adminSessions(t, s, user)
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has %d indexed sessions, want %d: %+v\n%s", user, len(got), n, got, s.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// device is one browser: its cookie from a real Express login, and its user agent.
type device struct {
	cookie, ua string
}

// authorize asks the sidecar, over gRPC Check, about a request of d; it returns the HTTP
// status Envoy would apply (200 when allowed).
func (d device) authorize(t *testing.T, c authv3.AuthorizationClient) int {
	t.Helper()
	resp := check(t, c, checkRequest("GET", "/app/home", map[string]string{"cookie": "connect.sid=" + d.cookie + "; theme=dark", "user-agent": d.ua}, ""))
	if resp.GetOkResponse() != nil {
		return http.StatusOK
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// TestSignOutEverywhere logs one user in from three devices through the real Express app,
// authorizes each through the sidecar (which indexes the sessions), signs the user out
// everywhere with `extauthz sessions revoke` and with the admin API, and checks that every
// revoked session is refused on its next request through the sidecar and that Express itself
// no longer knows it (req.session is gone), while a kept session and another user's stay.
func TestSignOutEverywhere(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	r := redistest.Start(t)
	const secret = "e2e sign-out secret"
	app := startExpress(t, r.URL(), secret)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", signOutConfig(r.URL(), secret))
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	c := dialCheck(t, s)

	bob := device{cookie: app.login("bob", "user"), ua: "bob's phone"}
	if code := bob.authorize(t, c); code != 200 {
		t.Fatalf("bob: %d", code)
	}

	// loginDevices logs alice in from three browsers and has each make a few requests
	// through the sidecar.
	loginDevices := func(t *testing.T, round string) []device {
		t.Helper()
		var ds []device
		for _, ua := range []string{"Mozilla/5.0 (iPhone) " + round, "Mozilla/5.0 (Macintosh) " + round, "Mozilla/5.0 (X11; Linux) " + round} {
			d := device{cookie: app.login("alice", "user"), ua: ua}
			for i := 0; i < 3; i++ {
				if code := d.authorize(t, c); code != 200 {
					t.Fatalf("%s: Check = %d before sign-out", ua, code)
				}
			}
			if code, body := app.do("GET", "/whoami", d.cookie); code != 200 || !strings.Contains(body, `"userId":"alice"`) {
				t.Fatalf("Express /whoami before sign-out: %d %s", code, body)
			}
			ds = append(ds, d)
		}
		return ds
	}
	// assertSignedOut checks a revoked device on its very next request, through the sidecar
	// and at Express.
	assertSignedOut := func(t *testing.T, d device) {
		t.Helper()
		if code := d.authorize(t, c); code != http.StatusUnauthorized {
			t.Errorf("%s: Check after sign-out = %d, want 401", d.ua, code)
		}
		if code, body := app.do("GET", "/whoami", d.cookie); code != http.StatusUnauthorized {
			t.Errorf("%s: Express /whoami after sign-out = %d %s, want 401 (req.session gone)", d.ua, code, body)
		}
	}
	assertSignedIn := func(t *testing.T, d device) {
		t.Helper()
		if code := d.authorize(t, c); code != http.StatusOK {
			t.Errorf("%s: Check = %d, want 200 (kept)", d.ua, code)
		}
		if code, _ := app.do("GET", "/whoami", d.cookie); code != http.StatusOK {
			t.Errorf("%s: Express /whoami = %d, want 200 (kept)", d.ua, code)
		}
	}
	noSecrets := func(t *testing.T, out string, ds []device) {
		t.Helper()
		for _, d := range ds {
			if strings.Contains(out, sidOf(t, d.cookie)) || strings.Contains(out, d.cookie) {
				t.Fatalf("a listing shows a session id or cookie:\n%s", out)
			}
		}
	}

	t.Run("cli list and revoke all", func(t *testing.T) {
		ds := loginDevices(t, "cli")
		waitIndexed(t, s, "alice", 3)

		code, out, errOut := runCLI(t, "sessions", "list", "--user", "alice", "--config", cfg)
		if code != 0 {
			t.Fatalf("sessions list: exit %d %s", code, errOut)
		}
		if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 4 {
			t.Fatalf("sessions list shows %d lines, want a header and 3 sessions:\n%s", len(lines), out)
		}
		for _, d := range ds {
			if !strings.Contains(out, d.ua) {
				t.Errorf("sessions list lacks the device %q:\n%s", d.ua, out)
			}
		}
		if !strings.Contains(out, "127.0.0.1") {
			t.Errorf("sessions list lacks the client address:\n%s", out)
		}
		noSecrets(t, out, ds)
		code, out, _ = runCLI(t, "sessions", "list", "--user", "alice", "--json", "--redis-url", r.URL())
		if n := strings.Count(out, "\n"); code != 0 || n != 3 {
			t.Fatalf("sessions list --json: exit %d, %d lines:\n%s", code, n, out)
		}
		noSecrets(t, out, ds)

		code, out, errOut = runCLI(t, "sessions", "revoke", "--user", "alice", "--config", cfg)
		if code != 0 || !strings.Contains(out, "revoked 3 session(s)") {
			t.Fatalf("sessions revoke: exit %d %q %q", code, out, errOut)
		}
		for _, d := range ds {
			assertSignedOut(t, d)
		}
		assertSignedIn(t, bob)
		if got := adminSessions(t, s, "alice"); len(got) != 0 {
			t.Errorf("alice still has indexed sessions: %+v", got)
		}
	})

	t.Run("admin api revoke all but one", func(t *testing.T) {
		ds := loginDevices(t, "admin")
		listed := waitIndexed(t, s, "alice", 3)
		keep := ""
		for _, l := range listed {
			if l.UserAgent == ds[0].ua {
				keep = l.ID
			}
			if l.IP != "127.0.0.1" || l.FirstSeen == nil || l.LastSeen == nil || l.Expires == nil {
				t.Errorf("listed session %+v lacks details", l)
			}
		}
		if keep == "" {
			t.Fatalf("no listed session has the user agent %q: %+v", ds[0].ua, listed)
		}
		_, body := s.get("/v1/sessions?user=alice")
		noSecrets(t, body, ds)

		req, err := http.NewRequest("POST", "http://"+s.adminAddr+"/v1/sessions/revoke", strings.NewReader(`{"user":"alice","except":"`+keep+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out := readAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || strings.TrimSpace(out) != `{"revoked":2}` {
			t.Fatalf("POST /v1/sessions/revoke: %d %s", resp.StatusCode, out)
		}
		assertSignedIn(t, ds[0])
		assertSignedOut(t, ds[1])
		assertSignedOut(t, ds[2])
		assertSignedIn(t, bob)

		// The kept one goes by its id alone.
		if code, out, errOut := runCLI(t, "sessions", "revoke", keep, "--config", cfg); code != 0 || !strings.Contains(out, keep) {
			t.Fatalf("sessions revoke ID: exit %d %q %q", code, out, errOut)
		}
		assertSignedOut(t, ds[0])
	})

	t.Run("cli revoke except", func(t *testing.T) {
		ds := loginDevices(t, "except")
		listed := waitIndexed(t, s, "alice", 3)
		keep := ""
		for _, l := range listed {
			if l.UserAgent == ds[2].ua {
				keep = l.ID
			}
		}
		code, out, errOut := runCLI(t, "sessions", "revoke", "--user", "alice", "--except", keep, "--config", cfg)
		if code != 0 || !strings.Contains(out, "revoked 2 session(s)") {
			t.Fatalf("sessions revoke --except: exit %d %q %q", code, out, errOut)
		}
		assertSignedOut(t, ds[0])
		assertSignedOut(t, ds[1])
		assertSignedIn(t, ds[2])
		assertSignedIn(t, bob)
	})
}

// TestSignOutEverywhereTopologies runs the sidecar and the CLI on a single server, Sentinel and
// Cluster: sessions written as connect-redis does, indexed by the sidecar's decisions, listed
// and revoked by the CLI and the admin API. On a Cluster the index keys share a slot (the
// subject here holds braces) while the sessions are spread over the others. Nothing the suite
// used as a secret (sids, cookies) may appear in the sidecar's log or the CLI's output.
func TestSignOutEverywhereTopologies(t *testing.T) {
	t.Setenv("SESSION_SECRET", "")
	for _, name := range []string{"single", "sentinel", "cluster"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tp := startTopology(t, name)
			const secret = "topology secret"
			cfg := writeFile(t, t.TempDir(), "extauthz.yaml", signOutConfig(tp.url, secret))
			s := startSidecar(t, "--config", cfg)
			s.waitReady()
			c := dialCheck(t, s)
			const user = "team{a}:alice"
			var ds []device
			for i, ua := range []string{"phone", "laptop", "tablet", "watch"} {
				sid := fmt.Sprintf("%s-topology-sid-%d", name, i)
				cookie := tp.storeSession(t, sid, secret, map[string]any{"userId": user, "role": "user"})
				d := device{cookie: cookie, ua: ua}
				if code := d.authorize(t, c); code != 200 {
					t.Fatalf("%s: Check = %d\n%s", ua, code, s.logs.String())
				}
				ds = append(ds, d)
			}
			listed := waitIndexed(t, s, user, 4)
			if name == "cluster" {
				if a, b := tp.slot(t, "extauthz:sessions:{team%7Ba%7D:alice}"), tp.slot(t, "extauthz:sessions:{team%7Ba%7D:alice}:meta"); a != b {
					t.Fatalf("index keys in slots %d and %d", a, b)
				}
			}
			ids := map[string]string{}
			for _, l := range listed {
				ids[l.UserAgent] = l.ID
			}

			var outputs []string
			code, out, errOut := runCLI(t, "sessions", "list", "--user", user, "--redis-url", tp.url)
			outputs = append(outputs, out, errOut)
			if code != 0 || strings.Count(out, "\n") != 5 {
				t.Fatalf("sessions list: exit %d\n%s%s", code, out, errOut)
			}
			// One by id (the reverse entry finds the user), then all but the phone.
			code, out, errOut = runCLI(t, "sessions", "revoke", ids["watch"], "--redis-url", tp.url)
			outputs = append(outputs, out, errOut)
			if code != 0 {
				t.Fatalf("sessions revoke ID: exit %d %s", code, errOut)
			}
			code, out, errOut = runCLI(t, "sessions", "revoke", "--user", user, "--except", ids["phone"], "--redis-url", tp.url)
			outputs = append(outputs, out, errOut)
			if code != 0 || !strings.Contains(out, "revoked 2 session(s)") {
				t.Fatalf("sessions revoke --except: exit %d %q %q", code, out, errOut)
			}
			for i, d := range ds {
				want := http.StatusUnauthorized
				if d.ua == "phone" {
					want = http.StatusOK
				}
				if got := d.authorize(t, c); got != want {
					t.Errorf("%s after the revocations: %d, want %d", d.ua, got, want)
				}
				if _, ok := tp.get(t, fmt.Sprintf("sess:%s-topology-sid-%d", name, i)); ok != (want == http.StatusOK) {
					t.Errorf("%s: session key present = %v", d.ua, ok)
				}
			}
			if got := adminSessions(t, s, user); len(got) != 1 || got[0].ID != ids["phone"] {
				t.Errorf("index after the revocations = %+v, want the phone only", got)
			}
			for _, out := range append(outputs, s.logs.String()) {
				for _, secret := range tp.secrets {
					if strings.Contains(out, secret) {
						t.Fatalf("a secret appears in an output or the log:\n%s", out)
					}
				}
			}
		})
	}
}
