// Package proxyconf writes the proxy configuration that puts nginx (auth_request), Caddy
// (forward_auth) or Traefik (forwardAuth) in front of an app with extauthz deciding, from the
// sidecar's own config: every identity header it can set is cleared from the client's request,
// the API key header and session cookie are dropped as the config says, and the client address
// reaches the sidecar the way client_ip_header expects. The shipped examples are its output.
package proxyconf

import (
	"bytes"
	"embed"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"text/template"

	"github.com/extauthz/extauthz/internal/config"
)

// DegradedHeader is the marker the sidecar sets when Redis failed under a fail-open policy
// (authz.DegradedHeader; a test keeps them equal). Proxies clear a client's copy like any
// identity header.
const DegradedHeader = "x-extauthz-degraded"

// KeyHeaderHeader names, on an allowed answer, the header an API key came in when the key must
// not reach the upstream (authz.KeyHeaderHeader).
const KeyHeaderHeader = "X-Extauthz-Key-Header"

// The proxies Render knows.
const (
	Nginx   = "nginx"
	Caddy   = "caddy"
	Traefik = "traefik"
)

// Proxies lists the proxies Render knows, in the order the usage text names them.
var Proxies = []string{Nginx, Caddy, Traefik}

// The defaults of the command-line options.
const (
	DefaultListen   = "0.0.0.0:8080"
	DefaultUpstream = "127.0.0.1:3000"
	DefaultAdmin    = "off"
)

// Options are the parts of the proxy configuration that the sidecar's config does not say.
type Options struct {
	// ConfigName is the sidecar config file as the operator named it; it appears in the
	// generated file's header, which says how to generate it again.
	ConfigName string
	// Listen is where the proxy accepts clients (host:port). For Caddy it is the site address.
	Listen string
	// Upstream is the app behind the proxy (host:port).
	Upstream string
	// Extauthz is the sidecar's HTTP authorization listener; empty means the config's
	// listen.http, with an unspecified host (0.0.0.0, ::) replaced by loopback.
	Extauthz string
	// Policy, when set, names the policy every request is decided by (/nginx/NAME,
	// /forward/NAME) instead of matching the route; it must be configured.
	Policy string
	// Admin is Caddy's admin endpoint ("off" turns it off).
	Admin string
	// Bind is the interface Caddy listens on; empty means the host of Listen when it is an
	// IP address.
	Bind string
}

// header is one request header the configuration handles, in the spellings the proxies need.
type header struct {
	// Lower is the name as the sidecar's config writes it: x-user-id.
	Lower string
	// Canonical is Go's (and Caddy's and Traefik's) spelling: X-User-Id.
	Canonical string
	// Var is the nginx variable suffix: x_user_id ($http_x_user_id, $upstream_http_x_user_id).
	Var string
	// Ident is a name usable in a Caddy matcher: XUserId.
	Ident string
	// Variants are the spellings with '_' for some '-' (X_User_Id, X-User_Id, ...): Go-based
	// proxies pass them on as distinct headers, and apps that read headers through CGI-style
	// names (HTTP_X_USER_ID) cannot tell them from the real one.
	Variants []string
}

// view is what the templates see.
type view struct {
	Options
	// Command is the command line that generates the file again.
	Command string
	// Placeholders is set when the addresses are {{PLACEHOLDERS}} (the shipped examples).
	Placeholders bool
	// AuthPath is the sidecar endpoint: /nginx, /forward, or either with /<policy>.
	AuthPath string
	// Identity are the identity headers and the degraded marker: a client's copies never pass.
	Identity []header
	// DropKeys are the API key headers the upstream must not see (apikeys.keep_header false).
	DropKeys []header
	// StripCookie drops the Cookie header upstream (sessions.strip_cookie).
	StripCookie bool
	// RealIP is set when client_ip_header is x-real-ip; otherwise X-Forwarded-For carries the
	// client address.
	RealIP bool
	// Site is Caddy's site address.
	Site string
}

//go:embed nginx.conf.tmpl Caddyfile.tmpl traefik.yaml.tmpl
var templateFiles embed.FS

var templates = template.Must(template.New("proxyconf").Funcs(template.FuncMap{
	"canonicals":  canonicals,
	"lowers":      lowers,
	"alternation": alternation,
}).ParseFS(templateFiles, "*.tmpl"))

// templateOf maps a proxy to its template file.
var templateOf = map[string]string{
	Nginx:   "nginx.conf.tmpl",
	Caddy:   "Caddyfile.tmpl",
	Traefik: "traefik.yaml.tmpl",
}

// Render writes the configuration of proxy for cfg to w.
func Render(w io.Writer, proxy string, cfg *config.Config, o Options) error {
	name, ok := templateOf[proxy]
	if !ok {
		return fmt.Errorf("unknown proxy %q: use %s", proxy, strings.Join(Proxies, ", "))
	}
	v, err := newView(proxy, cfg, o)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, v); err != nil {
		return fmt.Errorf("render %s: %w", proxy, err)
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// newView checks o against cfg and gathers what the template of proxy needs.
func newView(proxy string, cfg *config.Config, o Options) (*view, error) {
	if o.Listen == "" {
		o.Listen = DefaultListen
	}
	if o.Upstream == "" {
		o.Upstream = DefaultUpstream
	}
	if o.Admin == "" {
		o.Admin = DefaultAdmin
	}
	if o.Extauthz == "" {
		addr, err := dialable(cfg.Listen.HTTP)
		if err != nil {
			return nil, fmt.Errorf("listen.http %q: %w; pass --extauthz", cfg.Listen.HTTP, err)
		}
		o.Extauthz = addr
	}
	for _, f := range []struct{ flag, value string }{
		{"--listen", o.Listen}, {"--upstream", o.Upstream}, {"--extauthz", o.Extauthz},
		{"--admin", o.Admin}, {"--bind", o.Bind},
	} {
		if strings.ContainsAny(f.value, " \t\r\n;{}\"'`#") && !isPlaceholder(f.value) {
			return nil, fmt.Errorf("%s %q: an address may not hold spaces, quotes or ; { } #", f.flag, f.value)
		}
	}
	base := "/forward"
	if proxy == Nginx {
		base = "/nginx"
	}
	v := &view{
		Options:      o,
		AuthPath:     base,
		StripCookie:  cfg.Sessions.StripCookie,
		RealIP:       strings.EqualFold(cfg.ClientIPHeader, "x-real-ip"),
		Placeholders: isPlaceholder(o.Listen) || isPlaceholder(o.Upstream) || isPlaceholder(o.Extauthz),
	}
	if o.Policy != "" {
		if !slices.ContainsFunc(cfg.Policies, func(p config.Policy) bool { return p.Name == o.Policy }) {
			return nil, fmt.Errorf("--policy %q: no such policy in the config (%s)", o.Policy, policyNames(cfg))
		}
		if !urlSafe(o.Policy) {
			return nil, fmt.Errorf("--policy %q: a policy name in a URL path may hold only letters, digits, '-', '_', '.' and '~'", o.Policy)
		}
		v.AuthPath += "/" + o.Policy
	}
	v.Identity = identityHeaders(cfg)
	if !cfg.APIKeys.KeepHeader {
		for _, h := range cfg.APIKeys.Headers {
			v.DropKeys = append(v.DropKeys, newHeader(h))
		}
	}
	if proxy == Caddy {
		v.Site, v.Bind = caddySite(o.Listen, o.Bind)
	}
	v.Command = command(proxy, v)
	return v, nil
}

// identityHeaders are the headers a client must never set for the upstream: every header
// sessions.headers and apikeys.identity_headers map, and the degraded marker, sorted.
func identityHeaders(cfg *config.Config) []header {
	names := []string{DegradedHeader}
	for h := range cfg.Sessions.Headers {
		names = append(names, strings.ToLower(h))
	}
	for h := range cfg.APIKeys.IdentityHeaders {
		names = append(names, strings.ToLower(h))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	out := make([]header, len(names))
	for i, n := range names {
		out[i] = newHeader(n)
	}
	return out
}

// dialable turns a listen address into one a proxy can dial: an unspecified host (0.0.0.0,
// ::, empty) becomes the loopback address of its family.
func dialable(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	if port == "0" {
		return "", fmt.Errorf("port 0 is picked at start-up")
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return net.JoinHostPort(host, port), nil
}

// caddySite returns Caddy's site address and bind interface for listen. A site address with
// an IP host would only serve requests whose Host header is that IP, so an IP host becomes the
// bind interface and the site address keeps only the port.
func caddySite(listen, bind string) (site, bindOut string) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen, bind
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil || host == "" {
		if bind == "" && host != "" {
			bind = host
		}
		return "http://:" + port, bind
	}
	return "http://" + listen, bind
}

// command is the command line that generates the same file again.
func command(proxy string, v *view) string {
	args := []string{"extauthz", "config", proxy, "--config", quote(v.ConfigName),
		"--listen", quote(v.Listen), "--upstream", quote(v.Upstream), "--extauthz", quote(v.Extauthz)}
	if v.Policy != "" {
		args = append(args, "--policy", quote(v.Policy))
	}
	if proxy == Caddy {
		if v.Options.Bind != "" {
			args = append(args, "--bind", quote(v.Options.Bind))
		}
		args = append(args, "--admin", quote(v.Admin))
	}
	return strings.Join(args, " ")
}

// quote single-quotes s for a shell when it holds anything but plain address characters.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:/_-[]") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func isPlaceholder(s string) bool { return strings.Contains(s, "{{") }

func urlSafe(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.~", c)) {
			return false
		}
	}
	return s != "" && s != "." && s != ".."
}

func policyNames(cfg *config.Config) string {
	if len(cfg.Policies) == 0 {
		return "it has none"
	}
	names := make([]string, len(cfg.Policies))
	for i, p := range cfg.Policies {
		names[i] = p.Name
	}
	return "it has " + strings.Join(names, ", ")
}
