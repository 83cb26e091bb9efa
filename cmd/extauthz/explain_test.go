package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/sessions"
)

const explainConfig = `
sessions:
  secrets: [s3cret]
  headers: {x-user-id: userId}
  roles: role
apikeys:
  identity_headers: {x-key-id: id}
policies:
  - {name: health, match: {path_prefix: /healthz}, auth: none}
  - name: api
    match: {path_prefix: /api/, methods: [GET]}
    auth: any
    scopes: [read]
    limits:
      - {name: per-user, by: principal, requests: 5, window: 1m}
      - {name: per-user-gcra, by: principal, requests: 10, window: 1m, algorithm: gcra}
      - {name: per-client, by: ip, requests: 100, window: 1h, algorithm: sliding}
      - {name: per-tenant, by: "header:x-tenant", requests: 100, window: 1h}
  - name: admin
    match: {path_prefix: /admin}
    auth: session
    roles: [admin]
    limits: [{name: admin-user, requests: 3, window: 1m}]
    mode: shadow
`

// explainFixture is a config file on a real redis-server with an API key and a session in it,
// and an engine built from the same file as serve builds it, to count real requests.
type explainFixture struct {
	cfgPath string
	srv     *redistest.Server
	engine  *authz.Engine
	// key is the API key (scope read); cookie the signed Cookie header of sid, bob's session.
	key, keyID, cookie, sid string
}

func newExplainFixture(t *testing.T) *explainFixture {
	t.Helper()
	noRedisEnv(t)
	srv := redistest.Start(t)
	f := &explainFixture{srv: srv, cfgPath: filepath.Join(t.TempDir(), "extauthz.yaml"), sid: "bobs-session-id-0123456789"}
	if err := os.WriteFile(f.cfgPath, []byte("redis: {url: "+srv.URL()+"}\n"+explainConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := redisconn.New(redisconn.Options{URL: srv.URL(), Timeout: 5 * time.Second, CacheBytes: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rc.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if f.engine, err = buildEngine(cfg, rc, ratelimit.FormatDraft7, zap.NewNop(), metrics.New()); err != nil {
		t.Fatal(err)
	}
	ks, err := apikeys.New(rc, apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	var rec apikeys.Record
	if f.key, rec, err = ks.Create(ctx, apikeys.CreateParams{Owner: "team-a", Scopes: []string{"read"}}); err != nil {
		t.Fatal(err)
	}
	f.keyID = rec.ID
	if _, err := srv.Do(ctx, "SET", "sess:"+f.sid, `{"cookie":{"originalMaxAge":null},"userId":"bob","role":"viewer"}`, "EX", "3600"); err != nil {
		t.Fatal(err)
	}
	f.cookie = "connect.sid=" + url.QueryEscape(sessions.Sign(f.sid, "s3cret"))
	return f
}

// decide counts one real request through the engine, as the server would.
func (f *explainFixture) decide(t *testing.T, method, target string, headers map[string]string) authz.Decision {
	t.Helper()
	return f.engine.DecideRaw(context.Background(), authz.Raw{Method: method, Target: target, Host: "localhost",
		Headers: headers, HeaderCount: len(headers), Peer: authz.PeerAddr(defaultExplainClient)})
}

// redisState is every key of the server with its value (or type) and whether it has a TTL:
// what explain must leave as it found it.
func (f *explainFixture) redisState(t *testing.T) map[string]string {
	t.Helper()
	keys, err := redistest.Command(t.Context(), f.srv.Addr(), "", "KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys.([]any) {
		key := k.(string)
		typ, _ := redistest.Command(t.Context(), f.srv.Addr(), "", "TYPE", key)
		v := typ.(string)
		switch v {
		case "string":
			got, _ := redistest.Command(t.Context(), f.srv.Addr(), "", "GET", key)
			v = got.(string)
		case "hash":
			// A credits balance, say: its fields are what a spend would change.
			got, _ := redistest.Command(t.Context(), f.srv.Addr(), "", "HGETALL", key)
			v = fmt.Sprint(got)
		}
		ttl, _ := redistest.Command(t.Context(), f.srv.Addr(), "", "TTL", key)
		if ttl.(int64) < 0 {
			v += " (no ttl)"
		}
		out[key] = v
	}
	return out
}

// assertNoSecret fails when the output holds the key, the cookie or the session id.
func (f *explainFixture) assertNoSecret(t *testing.T, out ...string) {
	t.Helper()
	for _, o := range out {
		for _, s := range []string{f.key, f.key[len(f.key)-12:], f.cookie, f.sid, url.QueryEscape(sessions.Sign(f.sid, "s3cret")), "s3cret"} {
			if strings.Contains(o, s) {
				t.Fatalf("explain printed a secret (%.6s...):\n%s", s, o)
			}
		}
	}
}

func TestExplainAPIKey(t *testing.T) {
	f := newExplainFixture(t)
	hdr := map[string]string{"x-api-key": f.key}
	for range 2 {
		if d := f.decide(t, "GET", "/api/items", hdr); !d.Allow {
			t.Fatalf("real request denied: %+v", d)
		}
	}
	before := f.redisState(t)
	args := []string{"explain", "--config", f.cfgPath, "--method", "GET", "--path", "/api/items?page=2",
		"--header", "X-Api-Key: " + f.key, "--header", "x-tenant: acme"}
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"request    GET /api/items  host localhost  client 192.0.2.1",
		"x-api-key: <redacted>",
		"x-tenant: acme",
		"skipped    health: path /api/items is not under /healthz",
		"policy     api (mode enforce, auth any)",
		"apikey.header: a candidate in x-api-key",
		"apikey.format: well-formed",
		"apikey.record: " + f.keyID + ": valid (owner team-a, scopes read)",
		"identity: apikey " + f.keyID,
		"scopes     required all of read; held read: ok",
		"limit      per-user (fixed, 5 per 1m0s, by principal)",
		"count 2, remaining 3, resets in",
		"limit      per-user-gcra (gcra, 10 per 1m0s, burst 10, by principal)",
		"remaining 8",
		"limit      per-client (sliding, 100 per 1h0m0s, by ip)",
		"limit      per-tenant (fixed, 100 per 1h0m0s, by header:x-tenant)",
		"verdict    allow 200 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	f.assertNoSecret(t, out, errOut)
	// Twice, to be sure: explain counts nothing and touches no TTL.
	if code, _, _ := runCLI(t, args...); code != 0 {
		t.Fatalf("second run exit %d", code)
	}
	after := f.redisState(t)
	if len(after) != len(before) {
		t.Fatalf("explain changed the keys:\nbefore %v\nafter  %v", before, after)
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("explain changed %s: %q -> %q", k, v, after[k])
		}
	}
	// The next real request is the third, as explain predicted.
	if d := f.decide(t, "GET", "/api/items", hdr); !d.Allow {
		t.Fatalf("third real request: %+v", d)
	} else if v, _ := headerValue(d.ResponseHeaders, "RateLimit"); !strings.Contains(v, "remaining=2") {
		t.Fatalf("third request RateLimit %q: explain counted", v)
	}

	// Over the limit: the verdict is 429 and the exit code 1.
	for range 2 {
		f.decide(t, "GET", "/api/items", hdr)
	}
	code, out, _ = runCLI(t, args...)
	if code != 1 || !strings.Contains(out, "this request would be OVER") || !strings.Contains(out, "verdict    deny 429 over_limit") {
		t.Fatalf("over the limit: exit %d\n%s", code, out)
	}
}

func headerValue(hs []ratelimit.Header, name string) (string, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value, true
		}
	}
	return "", false
}

// A session on a shadow policy: every session step, the role that is missing, and the
// verdict a shadow policy gives (allowed, exit 0, with what enforcing it would do).
func TestExplainSessionOnShadowPolicy(t *testing.T) {
	f := newExplainFixture(t)
	before := f.redisState(t)
	code, out, errOut := runCLI(t, "explain", "--config", f.cfgPath, "--path", "/admin/users", "--cookie", "theme=dark; "+f.cookie,
		"--header", "x-user-id: root")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"cookie: <redacted>",
		"x-user-id: root",
		"policy     admin (mode shadow, auth session)",
		"session.cookie: connect.sid present",
		"session.lookup: valid: subject bob, roles viewer",
		"identity: session bob",
		"roles      required one of admin; held viewer: MISSING",
		"limit      admin-user (fixed, 3 per 1m0s, by principal)",
		"key rl:{admin:admin-user:session%3Abob}",
		"the decision ends before the limits are checked",
		"verdict    allow 200 shadow (shadow: enforcing the policy would deny: forbidden_role)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	f.assertNoSecret(t, out, errOut)
	// A forged cookie: the signature step says so, and nothing else is read.
	forged := "connect.sid=" + url.QueryEscape(sessions.Sign(f.sid, "guess"))
	_, out, _ = runCLI(t, "explain", "--config", f.cfgPath, "--path", "/admin/users", "--cookie", forged)
	if !strings.Contains(out, "session.lookup: no session: bad cookie signature") || !strings.Contains(out, "would deny: unauthenticated") {
		t.Fatalf("forged cookie:\n%s", out)
	}
	if strings.Contains(out, url.QueryEscape(sessions.Sign(f.sid, "guess"))) || strings.Contains(out, f.sid) {
		t.Fatalf("forged cookie printed:\n%s", out)
	}
	after := f.redisState(t)
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("explain changed %s: %q -> %q", k, v, after[k])
		}
	}
}

// --json prints one object of a fixed shape.
func TestExplainJSON(t *testing.T) {
	f := newExplainFixture(t)
	f.decide(t, "GET", "/api/x", map[string]string{"authorization": "Bearer " + f.key})
	code, out, errOut := runCLI(t, "explain", "--config", f.cfgPath, "--path", "/api/x", "--header", "Authorization: Bearer "+f.key, "--json")
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	f.assertNoSecret(t, out, errOut)
	var got map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"considered", "headers", "identity", "limits", "policy", "principal", "request", "requirements", "verdict"}; !slices.Equal(keys, want) {
		t.Fatalf("top-level keys %v, want %v", keys, want)
	}
	var x struct {
		Headers map[string]string `json:"headers"`
		authz.Explanation
	}
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatal(err)
	}
	if x.Headers["authorization"] != "<redacted>" || x.Policy == nil || x.Policy.Name != "api" || x.Principal.Kind != "apikey" ||
		x.Principal.Principal != f.keyID || !x.Verdict.Allow || x.Verdict.Status != 200 || len(x.Limits) != 4 {
		t.Fatalf("explanation %+v", x)
	}
	l := x.Limits[0]
	if l.Name != "per-user" || l.Count != 1 || l.Remaining != 4 || !l.Allowed || l.ResetMS <= 0 || !strings.Contains(l.Key, "apikey") {
		t.Fatalf("limit %+v", l)
	}
	if s := x.Limits[2]; s.Algorithm != "sliding" || len(s.Keys) != 2 || s.Count != 1 {
		t.Fatalf("sliding limit %+v", s)
	}
	if h := x.Limits[3]; h.Skipped == "" || h.Key != "" {
		t.Fatalf("header limit without the header %+v", h)
	}
}

// An API key with credits: explain shows the balance and the verdict a decision would give,
// over_credits with apikeys.credits_status at 0, spending nothing and printing no key.
func TestExplainCredits(t *testing.T) {
	f := newExplainFixture(t)
	// The same config with credits_status: 403, to see that explain answers with it.
	cfgPath := filepath.Join(t.TempDir(), "extauthz.yaml")
	text := "redis: {url: " + f.srv.URL() + "}\n" + strings.Replace(explainConfig, "apikeys:\n", "apikeys:\n  credits_status: 403\n", 1)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	key, rec := f.createKey(t, &apikeys.CreditParams{Initial: 2})
	f.key = key // assertNoSecret looks for this key now
	hdr := map[string]string{"x-api-key": key}
	args := []string{"explain", "--config", cfgPath, "--path", "/api/items", "--header", "X-Api-Key: " + key}

	before := f.redisState(t)
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"credits    balance 2 of 2, no refill (only an operator adds credits): this request would be allowed",
		"key " + rec.Credits.Key,
		"verdict    allow 200 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	f.assertNoSecret(t, out, errOut)
	if !strings.Contains(rec.Credits.Key, rec.ID) {
		t.Fatalf("balance key %q does not name the key id", rec.Credits.Key)
	}

	// Spent to 0 by real requests: explain says so, with the configured status, and exits 1.
	for range 2 {
		if d := f.decide(t, "GET", "/api/items", hdr); !d.Allow {
			t.Fatalf("real request denied: %+v", d)
		}
	}
	if d := f.decide(t, "GET", "/api/items", hdr); d.Allow || d.Reason != "over_credits" {
		t.Fatalf("third real request: %+v, want over_credits", d)
	}
	spent := f.redisState(t)
	if spent[rec.Credits.Key] == before[rec.Credits.Key] {
		t.Fatalf("the balance did not change when spent: %q", spent[rec.Credits.Key])
	}
	code, out, errOut = runCLI(t, args...)
	if code != 1 {
		t.Fatalf("at 0: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"credits    balance 0 of 2, no refill (only an operator adds credits): this request would be OUT OF CREDITS",
		`verdict    deny 403 over_credits "credits exhausted"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	f.assertNoSecret(t, out, errOut)

	code, out, errOut = runCLI(t, append(args, "--json")...)
	if code != 1 {
		t.Fatalf("--json at 0: exit %d\n%s\n%s", code, out, errOut)
	}
	f.assertNoSecret(t, out, errOut)
	var x authz.Explanation
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if c := x.Credits; c == nil || c.Key != rec.Credits.Key || c.Balance != 0 || c.Quota != 2 || c.Refill != "none" ||
		c.NextRefill != "" || c.NextRefillMS != 0 || c.Allowed || c.Unread != "" {
		t.Fatalf("credits %+v", x.Credits)
	}
	if v := x.Verdict; v.Allow || v.Status != 403 || v.Reason != "over_credits" {
		t.Fatalf("verdict %+v", v)
	}
	// Explain read the balance and changed nothing, over three runs.
	after := f.redisState(t)
	if fmt.Sprint(after) != fmt.Sprint(spent) {
		t.Fatalf("explain changed Redis:\nbefore %v\nafter  %v", spent, after)
	}

	// A balance that refills monthly shows the refill and when it comes.
	key, rec = f.createKey(t, &apikeys.CreditParams{Initial: 1, Refill: 5, Every: "1mo"})
	f.key = key
	code, out, errOut = runCLI(t, "explain", "--config", cfgPath, "--path", "/api/items", "--header", "X-Api-Key: "+key, "--json")
	if code != 0 {
		t.Fatalf("refill: exit %d\n%s\n%s", code, out, errOut)
	}
	f.assertNoSecret(t, out, errOut)
	x = authz.Explanation{}
	if err := json.Unmarshal([]byte(out), &x); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	if c := x.Credits; c == nil || c.Balance != 1 || c.Quota != 5 || c.Refill != "1mo" || c.NextRefill != next.Format(time.RFC3339) ||
		c.NextRefillMS <= 0 || c.NextRefillMS > time.Until(next).Milliseconds()+5000 || c.RefillDue || !c.Allowed {
		t.Fatalf("credits with refill %+v, want the next refill at %s", x.Credits, next.Format(time.RFC3339))
	}
	if !x.Verdict.Allow || x.Verdict.Reason != "ok" {
		t.Fatalf("verdict %+v", x.Verdict)
	}

	// Spent to 0 last month: the refill is due, and explain shows the refilled balance
	// without storing it.
	if _, err := redistest.Command(t.Context(), f.srv.Addr(), "", "HSET", rec.Credits.Key, "remaining", "0",
		"period", strconv.FormatInt(ratelimit.RefillPeriod(ratelimit.RefillMonthly, now)-1, 10)); err != nil {
		t.Fatal(err)
	}
	before = f.redisState(t)
	code, out, errOut = runCLI(t, "explain", "--config", cfgPath, "--path", "/api/items", "--header", "X-Api-Key: "+key)
	if code != 0 || !strings.Contains(out, "credits    balance 5 of 5, refilled to 5 every 1mo, next "+next.Format(time.RFC3339)) ||
		!strings.Contains(out, "the refill is due: the next request stores it: this request would be allowed") {
		t.Fatalf("refill due: exit %d\n%s\n%s", code, out, errOut)
	}
	f.assertNoSecret(t, out, errOut)
	if after := f.redisState(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("explain stored the refill:\nbefore %v\nafter  %v", before, after)
	}
}

// createKey creates an API key with scope read and credits c in the fixture's Redis, through
// the apikeys store as apikey create does.
func (f *explainFixture) createKey(t *testing.T, c *apikeys.CreditParams) (string, apikeys.Record) {
	t.Helper()
	cfg, err := config.Load(f.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := redisconn.New(redisconn.Options{URL: f.srv.URL(), Timeout: 5 * time.Second, CacheBytes: -1}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	if err := rc.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	ks, err := apikeys.New(rc, apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
	if err != nil {
		t.Fatal(err)
	}
	key, rec, err := ks.Create(t.Context(), apikeys.CreateParams{Owner: "metered", Scopes: []string{"read"}, Credits: c})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Credits.Enabled || rec.Credits.Key == "" {
		t.Fatalf("created %+v without credits", rec.Credits)
	}
	return key, rec
}

// What matches nothing, what is refused, and what is not a command line.
func TestExplainEdges(t *testing.T) {
	f := newExplainFixture(t)
	code, out, _ := runCLI(t, "explain", "--config", f.cfgPath, "--path", "/nowhere")
	if code != 1 || !strings.Contains(out, "no policy matches") || !strings.Contains(out, "skipped    admin: path /nowhere is not under /admin") ||
		!strings.Contains(out, "verdict    deny 403 no_policy") {
		t.Fatalf("no policy: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "explain", "--config", f.cfgPath, "--path", "/healthz/../admin")
	if code != 1 || !strings.Contains(out, "refused") || !strings.Contains(out, "deny 400 bad_request") {
		t.Fatalf("dot segments: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "explain", "--config", f.cfgPath, "--method", "POST", "--path", "/api/x")
	if code != 1 || !strings.Contains(out, "method POST is not one of GET, HEAD") {
		t.Fatalf("method: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "explain", "--config", f.cfgPath, "--path", "/x", "--policy", "health")
	if code != 0 || !strings.Contains(out, "named by the proxy's configuration") {
		t.Fatalf("named policy: exit %d\n%s", code, out)
	}
	for _, args := range [][]string{
		{"explain", "--path", "/x"},
		{"explain", "--config", f.cfgPath},
		{"explain", "--config", f.cfgPath, "--path", "/x", "--header", "no-colon-here"},
		{"explain", "--config", f.cfgPath, "--path", "/x", "--client", "not-an-ip"},
		{"explain", "--config", filepath.Join(t.TempDir(), "missing.yaml"), "--path", "/x"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 || errOut == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
		}
	}
	// A malformed --header argument is not echoed whole: it may be a secret.
	_, _, errOut := runCLI(t, "explain", "--config", f.cfgPath, "--path", "/x", "--header", f.key)
	f.assertNoSecret(t, errOut)
}
