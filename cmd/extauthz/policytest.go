package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

const policyTestUsage = `Usage:
  extauthz test [--config FILE] FILE...

Runs the YAML test cases in each FILE against a config's policies, on a fresh embedded store
per FILE. The config is --config, else the file's own "config:" key (relative to the file).
Exit 0 when every case passes, 1 when any fails, 2 on a usage, test file or config error.
The format is in docs/policy-testing.md.
`

const (
	// policyTestRedisTimeout replaces redis.timeout for the decisions of a test run. The
	// serve deadline (25ms by default) is sized for Envoy; on a loaded CI machine under -race
	// one embedded round trip can take longer, and a test must not fail with backend_error
	// because the runner was slow.
	policyTestRedisTimeout = 5 * time.Second
	// policyTestSessionTTL is the TTL of a session fixture in the store: a day, as
	// express-session's cookie.originalMaxAge below says.
	policyTestSessionTTL = 24 * time.Hour
	// maxRepeat bounds a case's repeat, so that a typo cannot make a run last for hours.
	maxRepeat = 100000
	// The defaults of a request that leaves the field out. The client address is from
	// TEST-NET-1 (RFC 5737), which no trusted_proxies entry of a real config should cover.
	defaultTestMethod = "GET"
	defaultTestPath   = "/"
	defaultTestHost   = "localhost"
	defaultTestClient = "192.0.2.1"
	// The placeholder an expected header value may hold for the id of the case's API key,
	// which Create draws at random and the test author cannot know.
	apikeyIDPlaceholder = "${apikey.id}"
)

// testFile is one parsed test file.
type testFile struct {
	path string
	// config is the file's "config:" key resolved against the file's directory; "" if absent.
	config string
	cases  []*testCase
}

// testCase is one case: a request, sent repeat times, and what every decision must be.
type testCase struct {
	name   string
	line   int
	path   string // field path, "tests[3]"
	req    testRequest
	repeat int
	expect testExpect
}

// testRequest is what a case sends, before the fixtures are added to its headers.
type testRequest struct {
	method, path, host, client, policy string
	// headers have lower-case names; order keeps the file's order, for stable output.
	headers map[string]string
	order   []string
	session *sessionFixture
	apikey  *keyFixture
}

// sessionFixture is a session to write to the store. A named one (fixtures.sessions) is
// written once and shared by every case that names it; an inline one belongs to its case.
type sessionFixture struct {
	path string
	line int
	data map[string]any
}

// keyFixture is an API key to issue through apikeys.Store.Create; shared like sessions.
type keyFixture struct {
	path    string
	line    int
	params  apikeys.CreateParams
	header  string
	revoked bool
}

// testExpect holds what a case checks; nil and empty fields are not checked.
type testExpect struct {
	allow   *bool
	status  *int
	policy  *string
	reason  *string
	headers map[string]string
	order   []string
	removed []string

	// wouldDeny is the reason a shadow policy would deny with, "" for none.
	wouldDeny *string
}

// runPolicyTest is "extauthz test": exit 0 when every case of every file passes, 1 when one
// fails, 2 when the command line, a test file or a config is wrong. Every file is parsed and
// every config loaded before any case runs, so a CI job fails fast on a typo rather than
// after half a run.
func runPolicyTest(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyTestUsage) }
	cfgPath := fs.String("config", "", "config `FILE` whose policies the cases run against; overrides each file's config: key")
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(files) == 0 {
		fmt.Fprint(stderr, policyTestUsage)
		return 2
	}
	type job struct {
		tf      *testFile
		cfgPath string
		cfg     *config.Config
	}
	var jobs []job
	bad := false
	for _, f := range files {
		tf, err := parseTestFile(f)
		if err != nil {
			printProblems(stderr, f, err)
			bad = true
			continue
		}
		cp := *cfgPath
		if cp == "" {
			cp = tf.config
		}
		if cp == "" {
			fmt.Fprintf(stderr, "%s: no config: pass --config FILE or set config: in the file\n", f)
			bad = true
			continue
		}
		cfg, err := config.Load(cp)
		if err != nil {
			printProblems(stderr, cp, err)
			bad = true
			continue
		}
		// Compiled here as well as in buildEngine, so that a policy error stops the run before
		// the first case of the first file, as a test file error does.
		if _, err := policy.Compile(cfg); err != nil {
			printProblems(stderr, cp, err)
			bad = true
			continue
		}
		if err := checkFixtures(tf, cfg); err != nil {
			printProblems(stderr, f, err)
			bad = true
			continue
		}
		jobs = append(jobs, job{tf, cp, cfg})
	}
	if bad {
		return 2
	}
	failed := 0
	for _, j := range jobs {
		n, err := runTestFile(j.tf, j.cfgPath, j.cfg, stdout)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", j.tf.path, err)
			return 2
		}
		failed += n
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "FAIL: %d case(s) failed\n", failed)
		return 1
	}
	fmt.Fprintln(stdout, "PASS")
	return 0
}

// checkFixtures refuses fixtures the config cannot honour, so that a session fixture under a
// config without sessions reads as the configuration mistake it is, not as a 401 to puzzle
// over.
func checkFixtures(tf *testFile, cfg *config.Config) error {
	var errs []error
	for _, c := range tf.cases {
		if s := c.req.session; s != nil && !cfg.Sessions.Enabled() {
			errs = append(errs, &config.FieldError{File: tf.path, Line: s.line, Path: s.path,
				Msg: "a session fixture needs sessions.secrets in the config"})
		}
	}
	return errors.Join(errs...)
}

// fixtureState is what the fixtures of one file became in its store: the cookie of each
// session, the key and record of each API key. It never leaves this file's run and is never
// printed.
type fixtureState struct {
	cookies map[*sessionFixture]string
	keys    map[*keyFixture]issuedKey
}

type issuedKey struct {
	key string
	rec apikeys.Record
}

// runTestFile runs the cases of tf in order on one fresh embedded store and engine, printing
// a line per case, and returns how many failed. An error means the run could not be set up
// (a policy that does not compile, say): the command exits 2.
func runTestFile(tf *testFile, cfgPath string, cfg *config.Config, stdout io.Writer) (int, error) {
	// The embedded store, whatever redis.url says: a test run must never count against, nor
	// write fixtures into, a real Redis. Only the deadline is taken over, raised.
	rc, err := redisconn.New(redisconn.Options{Timeout: max(cfg.Redis.Timeout.D(), policyTestRedisTimeout)}, zap.NewNop())
	if err != nil {
		return 0, fmt.Errorf("embedded store: %w", err)
	}
	defer rc.Close()
	format, err := ratelimit.ParseFormat(cfg.ResponseHeaders)
	if err != nil {
		return 0, fmt.Errorf("response_headers: %v", err)
	}
	engine, err := buildEngine(cfg, rc, format, zap.NewNop(), metrics.New())
	if err != nil {
		return 0, fmt.Errorf("%s: %v", cfgPath, err)
	}
	keys, err := apikeys.New(rc, apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
	if err != nil {
		return 0, fmt.Errorf("apikeys: %v", err)
	}
	st := &fixtureState{cookies: map[*sessionFixture]string{}, keys: map[*keyFixture]issuedKey{}}
	ctx := context.Background()

	fmt.Fprintf(stdout, "=== %s (config %s)\n", tf.path, cfgPath)
	failed := 0
	for _, c := range tf.cases {
		diffs, err := runCase(ctx, c, cfg, rc, keys, engine, st)
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(stdout, "FAIL  %s  [%s:%d]\n      fixture: %v\n", c.name, tf.path, c.line, err)
		case len(diffs) > 0:
			failed++
			fmt.Fprintf(stdout, "FAIL  %s  [%s:%d]\n", c.name, tf.path, c.line)
			for _, d := range diffs {
				fmt.Fprintf(stdout, "      %s\n", d)
			}
		default:
			fmt.Fprintf(stdout, "ok    %s\n", c.name)
		}
	}
	if failed > 0 {
		fmt.Fprintf(stdout, "--- FAIL %s: %d of %d case(s) failed\n", tf.path, failed, len(tf.cases))
	} else {
		fmt.Fprintf(stdout, "--- ok   %s: %d case(s)\n", tf.path, len(tf.cases))
	}
	return failed, nil
}

// runCase sends c's request repeat times and returns the differences of the first decision
// that does not meet the expectations, headed by the request and the decision as a whole.
func runCase(ctx context.Context, c *testCase, cfg *config.Config, rc *redisconn.Client, keys *apikeys.Store, engine *authz.Engine, st *fixtureState) ([]string, error) {
	headers := make(map[string]string, len(c.req.headers)+2)
	for k, v := range c.req.headers {
		headers[k] = v
	}
	var keyID string
	if s := c.req.session; s != nil {
		cookie, err := st.session(ctx, s, cfg, rc)
		if err != nil {
			return nil, err
		}
		if old := headers["cookie"]; old != "" {
			cookie = old + "; " + cookie
		}
		headers["cookie"] = cookie
	}
	if k := c.req.apikey; k != nil {
		ik, err := st.apikey(ctx, k, keys)
		if err != nil {
			return nil, err
		}
		keyID = ik.rec.ID
		h := k.header
		if h == "" {
			h = "x-api-key"
			if len(cfg.APIKeys.Headers) > 0 {
				h = strings.ToLower(cfg.APIKeys.Headers[0])
			}
		}
		v := ik.key
		if h == "authorization" {
			v = "Bearer " + v
		}
		headers[h] = v
	}
	raw := authz.Raw{
		Method:      c.req.method,
		Target:      c.req.path,
		Host:        c.req.host,
		Headers:     headers,
		HeaderCount: len(headers),
		Peer:        authz.PeerAddr(c.req.client),
		Policy:      c.req.policy,
	}
	for i := 1; i <= c.repeat; i++ {
		d := engine.DecideRaw(ctx, raw)
		diffs := compareDecision(c.expect, d, keyID)
		if len(diffs) == 0 {
			continue
		}
		head := []string{"request   " + describeRequest(c)}
		if c.repeat > 1 {
			head[0] += fmt.Sprintf(" (request %d of %d)", i, c.repeat)
		}
		head = append(head, "decision  "+describeDecision(d))
		return append(head, diffs...), nil
	}
	return nil, nil
}

// session writes s to the store the first time it is used and returns its Cookie header
// pair: the sid, random as express-session's, signed with the first secret and URL-encoded as
// the cookie package serializes it, so the sidecar verifies it exactly as it would the app's.
func (st *fixtureState) session(ctx context.Context, s *sessionFixture, cfg *config.Config, rc *redisconn.Client) (string, error) {
	if c, ok := st.cookies[s]; ok {
		return c, nil
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	sid := base64.RawURLEncoding.EncodeToString(b[:])
	data := make(map[string]any, len(s.data)+1)
	for k, v := range s.data {
		data[k] = v
	}
	if _, ok := data["cookie"]; !ok {
		// What express-session stores with every session; touch reads originalMaxAge.
		data["cookie"] = map[string]any{"originalMaxAge": policyTestSessionTTL.Milliseconds(), "httpOnly": true, "path": "/"}
	}
	js, err := json.Marshal(data)
	if err != nil {
		return "", fmt.Errorf("session %s: %v", s.path, err)
	}
	ttl := strconv.Itoa(int(policyTestSessionTTL / time.Second))
	if _, err := rc.Do(ctx, "SET", []string{cfg.Sessions.Prefix + sid}, string(js), "EX", ttl); err != nil {
		return "", fmt.Errorf("session %s: write to the embedded store: %v", s.path, err)
	}
	cookie := cfg.Sessions.Cookie + "=" + url.QueryEscape(sessions.Sign(sid, cfg.Sessions.Secrets[0]))
	st.cookies[s] = cookie
	return cookie, nil
}

// apikey issues k through apikeys.Store the first time it is used (and revokes it when the
// fixture says so), so the record is exactly what `extauthz apikey create` writes.
func (st *fixtureState) apikey(ctx context.Context, k *keyFixture, keys *apikeys.Store) (issuedKey, error) {
	if ik, ok := st.keys[k]; ok {
		return ik, nil
	}
	key, rec, err := keys.Create(ctx, k.params)
	if err != nil {
		return issuedKey{}, fmt.Errorf("apikey %s: %v", k.path, err)
	}
	if k.revoked {
		if err := keys.Revoke(ctx, rec.ID); err != nil {
			return issuedKey{}, fmt.Errorf("apikey %s: revoke: %v", k.path, err)
		}
	}
	ik := issuedKey{key: key, rec: rec}
	st.keys[k] = ik
	return ik, nil
}

// describeRequest prints the request of c without a secret: the fixtures by placeholder, the
// file's own headers by name only (an Authorization header in a test file may be real).
func describeRequest(c *testCase) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s host %s client %s", c.req.method, c.req.path, c.req.host, c.req.client)
	if c.req.policy != "" {
		fmt.Fprintf(&b, " policy %s", c.req.policy)
	}
	if len(c.req.order) > 0 {
		fmt.Fprintf(&b, " headers [%s]", strings.Join(c.req.order, ", "))
	}
	if c.req.session != nil {
		b.WriteString(" <session fixture>")
	}
	if c.req.apikey != nil {
		b.WriteString(" <api key fixture>")
	}
	return b.String()
}

// describeDecision summarizes d in one line; none of its fields is a secret.
func describeDecision(d authz.Decision) string {
	if d.Err != nil {
		return fmt.Sprintf("error (%s), policy %s", d.ErrReason, quoteOrNone(d.Policy))
	}
	verdict := "deny"
	if d.Allow {
		verdict = "allow"
	}
	s := fmt.Sprintf("%s %d %s, policy %s, identity %s", verdict, d.Status, d.Reason, quoteOrNone(d.Policy), d.Kind)
	if d.WouldDeny != "" {
		s += ", would deny " + d.WouldDeny
	}
	return s
}

func quoteOrNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return strconv.Quote(s)
}

// compareDecision lists, field by field, how d differs from what e expects. keyID replaces
// the ${apikey.id} placeholder in expected header values.
func compareDecision(e testExpect, d authz.Decision, keyID string) []string {
	var diffs []string
	if e.allow != nil && (d.Allow && d.Err == nil) != *e.allow {
		diffs = append(diffs, fmt.Sprintf("allow     want %t, got %t", *e.allow, d.Allow && d.Err == nil))
	}
	if e.status != nil {
		got := strconv.Itoa(d.Status)
		if d.Err != nil {
			got = "error (" + d.ErrReason + ")"
		}
		if d.Err != nil || d.Status != *e.status {
			diffs = append(diffs, fmt.Sprintf("status    want %d, got %s", *e.status, got))
		}
	}
	if e.reason != nil && d.Reason != *e.reason {
		diffs = append(diffs, fmt.Sprintf("reason    want %q, got %q", *e.reason, d.Reason))
	}
	if e.wouldDeny != nil && d.WouldDeny != *e.wouldDeny {
		diffs = append(diffs, fmt.Sprintf("would_deny want %s, got %s", reasonOrNone(*e.wouldDeny), reasonOrNone(d.WouldDeny)))
	}
	if e.policy != nil && d.Policy != *e.policy {
		diffs = append(diffs, fmt.Sprintf("policy    want %s, got %s", quoteOrNone(*e.policy), quoteOrNone(d.Policy)))
	}
	for _, name := range e.order {
		want := strings.ReplaceAll(e.headers[name], apikeyIDPlaceholder, keyID)
		got, ok := "", false
		for _, h := range d.SetHeaders {
			if strings.EqualFold(h.Name, name) {
				got, ok = h.Value, true
			}
		}
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("header %s  want %q, got not set", name, want))
		case got != want:
			diffs = append(diffs, fmt.Sprintf("header %s  want %q, got %q", name, want, got))
		}
	}
	for _, name := range e.removed {
		if !slices.ContainsFunc(d.RemoveHeaders, func(h string) bool { return strings.EqualFold(h, name) }) {
			diffs = append(diffs, fmt.Sprintf("removed   want %s removed, got not removed (removed: %s)", name, listOrNone(d.RemoveHeaders)))
		}
	}
	return diffs
}

func reasonOrNone(s string) string {
	if s == "" {
		return "none"
	}
	return strconv.Quote(s)
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// parseTestFile reads and checks a test file. Its errors are *config.FieldError, located by
// line and field path (tests[2].expect.status), joined.
func parseTestFile(path string) (*testFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p := &testParser{file: path}
	tf := p.parse(data)
	if err := errors.Join(p.errs...); err != nil {
		return nil, err
	}
	return tf, nil
}

// testParser walks the YAML node tree rather than decoding into structs, so that every error
// carries the field path and the line, and an unknown key (a typo such as "expcet") is an
// error instead of a case that silently checks nothing.
type testParser struct {
	file string
	errs []error
	// named fixtures, by name
	sessions map[string]*sessionFixture
	keys     map[string]*keyFixture
}

func (p *testParser) fail(n *yaml.Node, path, format string, a ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &config.FieldError{File: p.file, Line: line, Path: path, Msg: fmt.Sprintf(format, a...)})
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// fields calls the handler of each key of the mapping n; an unknown or repeated key is an
// error naming the keys allowed.
func (p *testParser) fields(n *yaml.Node, path string, handlers map[string]func(v *yaml.Node, path string)) bool {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping")
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		sub := fieldPath(path, k.Value)
		h, ok := handlers[k.Value]
		switch {
		case !ok:
			names := make([]string, 0, len(handlers))
			for name := range handlers {
				names = append(names, name)
			}
			slices.Sort(names)
			p.fail(k, sub, "unknown field (known: %s)", strings.Join(names, ", "))
		case seen[k.Value]:
			p.fail(k, sub, "repeated field")
		default:
			seen[k.Value] = true
			h(resolveAlias(v), sub)
		}
	}
	return true
}

func fieldPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *testParser) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(n, path, "must be a string")
		return ""
	}
	return n.Value
}

func (p *testParser) boolean(n *yaml.Node, path string) *bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		p.fail(n, path, "must be true or false")
		return nil
	}
	return &b
}

func (p *testParser) integer(n *yaml.Node, path string) *int {
	var i int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
		p.fail(n, path, "must be an integer")
		return nil
	}
	return &i
}

func (p *testParser) strList(n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, path, "must be a list of strings")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, e := range n.Content {
		out = append(out, p.str(resolveAlias(e), fmt.Sprintf("%s[%d]", path, i)))
	}
	return out
}

// headerMap reads a mapping of header names to values; names are lower-cased, as the engine
// sees them, and a name given twice in different cases is an error.
func (p *testParser) headerMap(n *yaml.Node, path string) (map[string]string, []string) {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping of header names to values")
		return nil, nil
	}
	m := map[string]string{}
	var order []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1])
		name := strings.ToLower(k.Value)
		sub := fieldPath(path, k.Value)
		if !validHeaderName(name) {
			p.fail(k, sub, "not a header name")
			continue
		}
		if _, dup := m[name]; dup {
			p.fail(k, sub, "repeated header (names are case-insensitive)")
			continue
		}
		m[name] = p.str(v, sub)
		order = append(order, name)
	}
	return m, order
}

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func (p *testParser) parse(data []byte) *testFile {
	tf := &testFile{path: p.file}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.fail(nil, "", "%v", err)
		return tf
	}
	if len(doc.Content) == 0 {
		p.fail(nil, "", "empty file: it needs tests")
		return tf
	}
	p.sessions, p.keys = map[string]*sessionFixture{}, map[string]*keyFixture{}
	var testsNode *yaml.Node
	p.fields(doc.Content[0], "", map[string]func(*yaml.Node, string){
		"config": func(v *yaml.Node, path string) {
			if s := p.str(v, path); s != "" {
				if !filepath.IsAbs(s) {
					s = filepath.Join(filepath.Dir(p.file), s)
				}
				tf.config = s
			}
		},
		"fixtures": func(v *yaml.Node, path string) {
			p.fields(v, path, map[string]func(*yaml.Node, string){
				"sessions": func(v *yaml.Node, path string) { p.namedFixtures(v, path, p.addSession) },
				"apikeys":  func(v *yaml.Node, path string) { p.namedFixtures(v, path, p.addKey) },
			})
		},
		// tests is read after the fixtures, wherever it stands in the file.
		"tests": func(v *yaml.Node, path string) { testsNode = v },
	})
	if testsNode == nil {
		if len(p.errs) == 0 {
			p.fail(doc.Content[0], "tests", "missing: a test file needs at least one case")
		}
		return tf
	}
	if testsNode.Kind != yaml.SequenceNode || len(testsNode.Content) == 0 {
		p.fail(testsNode, "tests", "must be a non-empty list of cases")
		return tf
	}
	names := map[string]int{}
	for i, n := range testsNode.Content {
		c := p.testCase(resolveAlias(n), fmt.Sprintf("tests[%d]", i))
		if c == nil {
			continue
		}
		if prev, dup := names[c.name]; dup {
			p.fail(n, c.path+".name", "the name of tests[%d] as well: names must be unique, so a failure points at one case", prev)
		}
		names[c.name] = i
		tf.cases = append(tf.cases, c)
	}
	return tf
}

func (p *testParser) namedFixtures(n *yaml.Node, path string, add func(name string, v *yaml.Node, path string)) {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping of fixture names to fixtures")
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		add(k.Value, v, fieldPath(path, k.Value))
	}
}

func (p *testParser) addSession(name string, v *yaml.Node, path string) {
	if _, dup := p.sessions[name]; dup {
		p.fail(v, path, "repeated fixture name")
		return
	}
	if s := p.sessionFixture(v, path); s != nil {
		p.sessions[name] = s
	}
}

func (p *testParser) addKey(name string, v *yaml.Node, path string) {
	if _, dup := p.keys[name]; dup {
		p.fail(v, path, "repeated fixture name")
		return
	}
	if k := p.keyFixture(v, path); k != nil {
		p.keys[name] = k
	}
}

// sessionFixture reads the session's JSON body, written as YAML: the app's own fields at the
// top level, as connect-redis stores them.
func (p *testParser) sessionFixture(n *yaml.Node, path string) *sessionFixture {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be the session's fields as a mapping (or, in a request, a fixtures.sessions name)")
		return nil
	}
	var data map[string]any
	if err := n.Decode(&data); err != nil {
		p.fail(n, path, "%v", err)
		return nil
	}
	if _, err := json.Marshal(data); err != nil {
		p.fail(n, path, "not representable as JSON: %v", err)
		return nil
	}
	return &sessionFixture{path: path, line: n.Line, data: data}
}

// keyFixture reads an API key's record fields, as `apikey create` takes them, plus the header
// to send it in and whether to revoke it first.
func (p *testParser) keyFixture(n *yaml.Node, path string) *keyFixture {
	k := &keyFixture{path: path, line: n.Line}
	ok := p.fields(n, path, map[string]func(*yaml.Node, string){
		"owner":  func(v *yaml.Node, path string) { k.params.Owner = p.str(v, path) },
		"name":   func(v *yaml.Node, path string) { k.params.Name = p.str(v, path) },
		"tier":   func(v *yaml.Node, path string) { k.params.Tier = p.str(v, path) },
		"scopes": func(v *yaml.Node, path string) { k.params.Scopes = p.strList(v, path) },
		"header": func(v *yaml.Node, path string) {
			k.header = strings.ToLower(p.str(v, path))
			if !validHeaderName(k.header) {
				p.fail(v, path, "not a header name")
			}
		},
		"revoked": func(v *yaml.Node, path string) {
			if b := p.boolean(v, path); b != nil {
				k.revoked = *b
			}
		},
	})
	if !ok {
		return nil
	}
	if strings.TrimSpace(k.params.Owner) == "" {
		p.fail(n, fieldPath(path, "owner"), "required")
	}
	for i, sc := range k.params.Scopes {
		if sc == "" || strings.ContainsAny(sc, ", \t\r\n") {
			p.fail(n, fmt.Sprintf("%s.scopes[%d]", path, i), "a scope must be non-empty, without commas or whitespace")
		}
	}
	return k
}

func (p *testParser) testCase(n *yaml.Node, path string) *testCase {
	c := &testCase{path: path, line: n.Line, repeat: 1, req: testRequest{
		method: defaultTestMethod, path: defaultTestPath, host: defaultTestHost, client: defaultTestClient,
	}}
	// expectOK is false when the expect mapping had errors of its own, which already say
	// what is wrong with it.
	var hasRequest, hasExpect, expectOK bool
	ok := p.fields(n, path, map[string]func(*yaml.Node, string){
		"name": func(v *yaml.Node, path string) { c.name = p.str(v, path) },
		"request": func(v *yaml.Node, path string) {
			hasRequest = true
			p.request(v, path, &c.req)
		},
		"repeat": func(v *yaml.Node, path string) {
			if r := p.integer(v, path); r != nil {
				if *r < 1 || *r > maxRepeat {
					p.fail(v, path, "must be from 1 to %d", maxRepeat)
				}
				c.repeat = *r
			}
		},
		"expect": func(v *yaml.Node, path string) {
			hasExpect = true
			before := len(p.errs)
			p.expect(v, path, &c.expect)
			expectOK = len(p.errs) == before
		},
	})
	if !ok {
		return nil
	}
	if c.name == "" {
		p.fail(n, fieldPath(path, "name"), "required")
	}
	if !hasRequest {
		p.fail(n, fieldPath(path, "request"), "required")
	}
	if !hasExpect {
		p.fail(n, fieldPath(path, "expect"), "required")
	} else if expectOK && c.expect.allow == nil && c.expect.status == nil {
		p.fail(n, fieldPath(path, "expect"), "needs allow or status: a case that checks neither passes on any verdict")
	}
	if c.expect.allow != nil && c.expect.status != nil && *c.expect.allow != (*c.expect.status == 200) {
		p.fail(n, fieldPath(path, "expect.status"), "contradicts expect.allow: an allowed request has status 200")
	}
	for _, h := range c.expect.order {
		if strings.Contains(c.expect.headers[h], apikeyIDPlaceholder) && c.req.apikey == nil {
			p.fail(n, fieldPath(path, "expect.headers."+h), "%s needs an apikey fixture in the request", apikeyIDPlaceholder)
		}
	}
	return c
}

func (p *testParser) request(n *yaml.Node, path string, r *testRequest) {
	p.fields(n, path, map[string]func(*yaml.Node, string){
		"method": func(v *yaml.Node, path string) { r.method = p.str(v, path) },
		"path": func(v *yaml.Node, path string) {
			r.path = p.str(v, path)
			if !strings.HasPrefix(r.path, "/") {
				p.fail(v, path, "must start with /")
			}
		},
		"host": func(v *yaml.Node, path string) { r.host = p.str(v, path) },
		"client": func(v *yaml.Node, path string) {
			r.client = p.str(v, path)
			if _, err := netip.ParseAddr(r.client); err != nil {
				p.fail(v, path, "must be an IP address (the TCP peer, or Envoy's downstream address)")
			}
		},
		"policy":  func(v *yaml.Node, path string) { r.policy = p.str(v, path) },
		"headers": func(v *yaml.Node, path string) { r.headers, r.order = p.headerMap(v, path) },
		"session": func(v *yaml.Node, path string) {
			if v.Kind == yaml.ScalarNode {
				if r.session = p.sessions[v.Value]; r.session == nil {
					p.fail(v, path, "no fixtures.sessions named %q", v.Value)
				}
				return
			}
			r.session = p.sessionFixture(v, path)
		},
		"apikey": func(v *yaml.Node, path string) {
			if v.Kind == yaml.ScalarNode {
				if r.apikey = p.keys[v.Value]; r.apikey == nil {
					p.fail(v, path, "no fixtures.apikeys named %q", v.Value)
				}
				return
			}
			r.apikey = p.keyFixture(v, path)
		},
	})
	if r.method != strings.ToUpper(r.method) || r.method == "" {
		p.fail(n, fieldPath(path, "method"), "must be an upper-case method such as GET")
	}
}

func (p *testParser) expect(n *yaml.Node, path string, e *testExpect) {
	p.fields(n, path, map[string]func(*yaml.Node, string){
		"allow":  func(v *yaml.Node, path string) { e.allow = p.boolean(v, path) },
		"status": func(v *yaml.Node, path string) { e.status = p.integer(v, path) },
		"policy": func(v *yaml.Node, path string) {
			s := p.str(v, path)
			e.policy = &s
		},
		"reason": func(v *yaml.Node, path string) {
			s := p.str(v, path)
			e.reason = &s
		},
		// would_deny: REASON expects a shadow policy's would-be denial; none expects none.
		"would_deny": func(v *yaml.Node, path string) {
			s := p.str(v, path)
			if s == "none" {
				s = ""
			}
			e.wouldDeny = &s
		},
		"headers": func(v *yaml.Node, path string) { e.headers, e.order = p.headerMap(v, path) },
		"removed": func(v *yaml.Node, path string) {
			for _, h := range p.strList(v, path) {
				e.removed = append(e.removed, strings.ToLower(h))
			}
		},
	})
}
