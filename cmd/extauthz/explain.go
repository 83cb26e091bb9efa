package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
)

const explainUsage = `Usage:
  extauthz explain --config FILE --method GET --path /api/x [--host H] [--header K:V ...]
                   [--cookie C] [--client IP] [--policy NAME] [--json]

Explains how the sidecar would decide one request with the config's policies, against the
config's Redis (without redis.url, the embedded store of a sidecar running with the config
at a fixed redis.embedded_addr, as make run does, else an empty one): the policy that
matches and why, each identity step, the roles and scopes checks, every limit with its
Redis key and current count, an API key's credits balance, and the verdict. Nothing is
written to Redis: limits and credits are read, not counted or spent, and sessions are not
touched. No cookie, session id or API key is printed; values of --header that can hold one
are echoed as <redacted>.

--path is the request target as the client sends it (a query string is allowed); --host
defaults to localhost and --client (the address by: ip limits count) to 192.0.2.1.
--policy names the policy as a proxy route would (context_extensions, /nginx/NAME).

Exit 0 when the request would be let through (a shadow policy's would-be denial included),
1 when it would be denied or fail, 2 on a usage, config or Redis connection error.
`

const (
	// explainRedisTimeout is the least per-call Redis deadline of explain, as for the apikey
	// commands: an operator's one-off command should not fail on a slow round trip.
	explainRedisTimeout = 5 * time.Second
	// explainTimeout bounds the whole command.
	explainTimeout = 30 * time.Second
	// defaultExplainHost and defaultExplainClient are the request's host and client address
	// when the flags leave them out; the address is from TEST-NET-1, as `extauthz test` uses.
	defaultExplainHost   = "localhost"
	defaultExplainClient = "192.0.2.1"
)

// headerFlags collects repeated --header K:V flags, names lower-cased as the engine sees them
// and repeats joined as proxies join them.
type headerFlags struct {
	values map[string]string
	order  []string
	// bad counts the arguments that were not NAME:VALUE. Set does not fail on them, because
	// the flag package would print the argument, which may be a key or a cookie.
	bad int
}

func (h *headerFlags) String() string { return "" }

func (h *headerFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.ToLower(strings.TrimSpace(name))
	if !ok || !validHeaderName(name) {
		h.bad++
		return nil
	}
	value = strings.TrimLeft(value, " \t")
	if h.values == nil {
		h.values = map[string]string{}
	}
	if old, dup := h.values[name]; dup {
		sep := ", "
		if name == "cookie" {
			sep = "; "
		}
		h.values[name] = old + sep + value
		return nil
	}
	h.values[name] = value
	h.order = append(h.order, name)
	return nil
}

func runExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, explainUsage) }
	cfgPath := fs.String("config", "", "config `FILE` whose policies, sessions, API keys and Redis to use")
	method := fs.String("method", "GET", "the request's `METHOD`")
	path := fs.String("path", "", "the request `TARGET`, as the client sends it")
	host := fs.String("host", defaultExplainHost, "the request's `HOST`")
	client := fs.String("client", defaultExplainClient, "the client's `IP` address")
	named := fs.String("policy", "", "the policy `NAME` a proxy route names, instead of route matching")
	cookie := fs.String("cookie", "", "the request's Cookie `HEADER` (appended to any --header cookie:...)")
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	var headers headerFlags
	fs.Var(&headers, "header", "a request header `NAME:VALUE`; repeat for more")
	rest, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	switch {
	case len(rest) > 0:
		fmt.Fprintf(stderr, "extauthz explain: unexpected argument %q\n\n%s", rest[0], explainUsage)
		return 2
	case *cfgPath == "" || *path == "":
		fmt.Fprint(stderr, "extauthz explain: --config and --path are required\n\n"+explainUsage)
		return 2
	case headers.bad > 0:
		fmt.Fprintf(stderr, "extauthz explain: %d --header argument(s) are not NAME:VALUE with a header name (not shown: they may hold a secret)\n", headers.bad)
		return 2
	}
	peer := authz.PeerAddr(*client)
	if !peer.IsValid() {
		fmt.Fprintf(stderr, "extauthz explain: --client %q is not an IP address\n", *client)
		return 2
	}
	if *cookie != "" {
		_ = headers.Set("cookie:" + *cookie) // a valid name: it cannot be refused
	}

	// The config is read and checked as serve reads it, environment overrides included.
	cfg, err := config.LoadWith(*cfgPath, os.Getenv, nil)
	if err == nil {
		err = checkConfig(cfg)
	}
	if err != nil {
		printProblems(stderr, *cfgPath, err)
		return 2
	}
	// Explain writes nothing: a session it reads is not touched, as a request would touch it.
	cfg.Sessions.Touch = nil

	opts := redisOptions(cfg.Redis, -1)
	opts.Timeout = max(opts.Timeout, explainRedisTimeout)
	// No redis.url: the embedded store of the sidecar running with this config (`make run`),
	// when its redis.embedded_addr is a fixed port and it answers there, so that explain sees
	// the keys, sessions and counts that sidecar decides on; otherwise an empty store of its own.
	running := ""
	if cfg.Embedded() {
		if addr, err := runningEmbeddedStore(cfg, *cfgPath); err == nil {
			running = addr
			opts.URL, opts.Username, opts.Password = "redis://"+addr, "", ""
		}
	}
	rc, err := redisconn.New(opts, zap.NewNop())
	if err != nil {
		fmt.Fprintf(stderr, "extauthz explain: redis: %v\n", err)
		return 2
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), explainTimeout)
	defer cancel()
	wctx, wcancel := context.WithTimeout(ctx, apikeyConnectTimeout)
	err = rc.WaitReady(wctx)
	wcancel()
	if err != nil {
		fmt.Fprintf(stderr, "extauthz explain: %v\n", err)
		return 2
	}
	format, err := ratelimit.ParseFormat(cfg.ResponseHeaders)
	if err != nil {
		fmt.Fprintf(stderr, "extauthz explain: response_headers: %v\n", err)
		return 2
	}
	engine, err := buildEngine(cfg, rc, format, zap.NewNop(), metrics.New())
	if err != nil {
		printProblems(stderr, *cfgPath, err)
		return 2
	}
	var lopts []ratelimit.LimiterOption
	if rc.Cluster() {
		lopts = append(lopts, ratelimit.WithClusterSlots())
	}
	raw := authz.Raw{
		Method:      *method,
		Target:      *path,
		Host:        *host,
		Headers:     headers.values,
		HeaderCount: len(headers.values),
		Peer:        peer,
		Policy:      *named,
	}
	if raw.Headers == nil {
		raw.Headers = map[string]string{}
	}
	x := engine.Explain(ctx, raw, ratelimit.NewLimiter(rc, lopts...))
	switch {
	case running != "":
		x.Notes = append(x.Notes, "redis.url is not set: this read the embedded store of the sidecar running with this config, at "+running+" (redis.embedded_addr)")
	case rc.Embedded():
		x.Notes = append(x.Notes, "redis.url is not set and no sidecar with this config answers at a fixed redis.embedded_addr: this ran on an empty embedded store, so no session or API key is found and every count is 0")
	}
	echo := echoHeaders(&headers, cfg)
	if *asJSON {
		out := struct {
			Headers map[string]string `json:"headers"`
			authz.Explanation
		}{echo, x}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "extauthz explain: %v\n", err)
			return 2
		}
	} else {
		printExplanation(stdout, x, &headers, echo)
	}
	if x.Verdict.Allow {
		return 0
	}
	return 1
}

// echoHeaders returns the request's headers as explain may print them: the value of any
// header that can carry a credential (the cookie, authorization, the configured API key
// headers, names that say key, token, secret, session, auth or password) replaced by
// <redacted>.
func echoHeaders(h *headerFlags, cfg *config.Config) map[string]string {
	out := make(map[string]string, len(h.order))
	for _, name := range h.order {
		v := h.values[name]
		if sensitiveHeader(name, cfg) {
			v = "<redacted>"
		}
		out[name] = v
	}
	return out
}

func sensitiveHeader(name string, cfg *config.Config) bool {
	for _, h := range cfg.APIKeys.Headers {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	for _, word := range []string{"cookie", "auth", "key", "token", "secret", "session", "password", "credential"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	return false
}

// printExplanation writes x as text, one labelled section a line.
func printExplanation(w io.Writer, x authz.Explanation, h *headerFlags, echo map[string]string) {
	line := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-10s %s\n", label, fmt.Sprintf(format, a...))
	}
	r := x.Request
	req := fmt.Sprintf("%s %s  host %s  client %s", r.Method, r.Path, r.Host, r.Client)
	if r.Policy != "" {
		req += "  policy " + r.Policy
	}
	line("request", "%s", req)
	for _, name := range h.order {
		line("", "%s: %s", name, echo[name])
	}
	if x.Refused != "" {
		line("refused", "the request target is refused before any policy (%s): see docs/request-target.md", x.Refused)
	}
	for _, m := range x.Considered {
		line("skipped", "%s: %s", m.Name, m.Why)
	}
	if p := x.Policy; p != nil {
		line("policy", "%s (mode %s, auth %s)", p.Name, p.Mode, p.Auth)
		line("", "%s", p.Why)
	}
	for i, s := range x.Identity {
		label := ""
		if i == 0 {
			label = "identity"
		}
		line(label, "%s: %s", s.Step, s.Result)
	}
	for _, q := range x.Requirements {
		verdict := "ok"
		if !q.OK {
			verdict = "MISSING"
		}
		want := "one of"
		if q.Check == "scopes" {
			want = "all of"
		}
		line(q.Check, "required %s %s; held %s: %s (%s)", want, strings.Join(q.Required, ","), orNone(q.Held), verdict, q.Why)
	}
	for _, l := range x.Limits {
		what := fmt.Sprintf("%d per %s", l.Requests, l.Window)
		if l.Burst > 0 {
			what += fmt.Sprintf(", burst %d", l.Burst)
		}
		line("limit", "%s (%s, %s, by %s)", l.Name, l.Algorithm, what, l.By)
		if l.Skipped != "" {
			line("", "%s", l.Skipped)
			continue
		}
		line("", "key %s", l.Key)
		if len(l.Keys) > 1 {
			line("", "read %s", strings.Join(l.Keys, ", "))
		}
		state := fmt.Sprintf("count %d", l.Count)
		switch {
		case l.Algorithm == "sliding":
			state = fmt.Sprintf("count %d (previous window %d)", l.Count, l.Previous)
		case l.Algorithm == "gcra" && l.TAT != "":
			state = "arrival time " + l.TAT
		case l.Algorithm == "gcra":
			state = "no arrival time (a full burst is available)"
		}
		next := "this request would be allowed"
		if !l.Allowed {
			next = "this request would be OVER"
		}
		line("", "%s, remaining %d, resets in %s: %s", state, l.Remaining, time.Duration(l.ResetMS)*time.Millisecond, next)
	}
	if x.Credits != nil {
		for i, text := range creditsLines(x.Credits) {
			label := ""
			if i == 0 {
				label = "credits"
			}
			line(label, "%s", text)
		}
	}
	v := x.Verdict
	text := "deny"
	if v.Allow {
		text = "allow"
	}
	if v.Error != "" && !v.Allow {
		text = "error"
	}
	text += fmt.Sprintf(" %d %s", v.Status, v.Reason)
	if v.WouldDeny != "" {
		text += " (shadow: enforcing the policy would deny: " + v.WouldDeny + ")"
	}
	if v.Degraded != "" {
		text += " degraded: " + v.Degraded
	}
	if v.Error != "" {
		text += " backend: " + v.Error
	}
	if !v.Allow && v.Message != "" {
		text += fmt.Sprintf(" %q", v.Message)
	}
	line("verdict", "%s", text)
	for _, n := range x.Notes {
		line("note", "%s", n)
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}
