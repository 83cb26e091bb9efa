package proxyconf

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
)

// baseConfig is a sidecar config with session and API key identities; extra is appended.
const baseConfig = `listen: {http: 127.0.0.1:9002}
sessions:
  secrets: [s3cret]
  headers: {x-user-id: userId, x-user-role: role}
apikeys:
  identity_headers: {x-api-key-id: id, x-user-id: owner}
trusted_proxies: [127.0.0.1/32]
policies:
  - {name: open, match: {path_prefix: /public}, auth: none}
  - {name: app, match: {path_prefix: /}, auth: any}
`

// parseConfig parses a sidecar config the way config.Load does, without the environment's
// overrides getting in.
func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	for _, env := range []string{config.EnvHTTPAddr, config.EnvGRPCAddr, config.EnvAdminAddr, config.EnvRedisURL, config.EnvSessionSecret} {
		t.Setenv(env, "")
	}
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func render(t *testing.T, proxy string, cfg *config.Config, o Options) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, proxy, cfg, o); err != nil {
		t.Fatalf("render %s: %v", proxy, err)
	}
	return b.String()
}

// TestConstantsMatchTheSidecar keeps the header names the proxies handle equal to the ones
// the sidecar sends.
func TestConstantsMatchTheSidecar(t *testing.T) {
	if DegradedHeader != authz.DegradedHeader {
		t.Errorf("DegradedHeader = %q, the sidecar sets %q", DegradedHeader, authz.DegradedHeader)
	}
	if KeyHeaderHeader != authz.KeyHeaderHeader {
		t.Errorf("KeyHeaderHeader = %q, the sidecar sets %q", KeyHeaderHeader, authz.KeyHeaderHeader)
	}
}

func TestRender(t *testing.T) {
	o := Options{ConfigName: "extauthz.yaml", Listen: "0.0.0.0:8080", Upstream: "127.0.0.1:3000"}
	tests := []struct {
		name  string
		proxy string
		// extra is appended to baseConfig; stripCookie and keepHeader set those keys.
		extra       string
		stripCookie bool
		keepHeader  bool
		want        []string
		absent      []string
	}{
		{
			name:  "nginx clears every identity header and maps each key header",
			proxy: Nginx,
			want: []string{
				"proxy_set_header X-User-Id $authz_h_x_user_id;",
				"proxy_set_header X-User-Role $authz_h_x_user_role;",
				"proxy_set_header X-Api-Key-Id $authz_h_x_api_key_id;",
				"proxy_set_header X-Extauthz-Degraded $authz_h_x_extauthz_degraded;",
				"auth_request_set $authz_h_x_api_key_id $upstream_http_x_api_key_id;",
				"auth_request_set $authz_key_header       $upstream_http_x_extauthz_key_header;",
				"map $authz_key_header $authz_pass_x_api_key {",
				"map $authz_key_header $authz_pass_authorization {",
				"proxy_set_header Authorization $authz_pass_authorization;",
				"proxy_pass http://extauthz/nginx;",
				"server 127.0.0.1:9002;",
				"listen 0.0.0.0:8080;",
				"proxy_set_header X-Original-URI    $request_uri;",
				"proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
				"if ($authz_status = 400) {",
				"underscores_in_headers off;",
			},
			absent: []string{"$uri;", "proxy_set_header Cookie", "X-Real-IP", "{{"},
		},
		{
			name:        "nginx keeps the key header, strips the cookie, passes X-Real-IP",
			proxy:       Nginx,
			extra:       "client_ip_header: x-real-ip\n",
			stripCookie: true,
			keepHeader:  true,
			want:        []string{"proxy_set_header Cookie \"\";", "proxy_set_header X-Real-IP $remote_addr;"},
			absent:      []string{"$authz_pass_", "X-Forwarded-For"},
		},
		{
			name:  "caddy deletes client copies first and key headers on the answer's word",
			proxy: Caddy,
			want: []string{
				"http://:8080 {", "bind 0.0.0.0",
				"request_header -X-User-Id\n", "request_header -X_user_id\n", "request_header -X-Api-Key_id\n",
				"request_header -X-Extauthz-Degraded\n",
				"copy_headers X-Api-Key-Id X-Extauthz-Degraded X-User-Id X-User-Role",
				"@leftoverXApiKeyId header X-Api-Key-Id \"{http.*\"",
				"request_header @leftoverXUserId -X-User-Id",
				"@keyInXApiKey vars {http.reverse_proxy.header.X-Extauthz-Key-Header} x-api-key",
				"request_header @keyInAuthorization -Authorization",
				"uri /forward\n", "admin off", "reverse_proxy 127.0.0.1:3000\n",
			},
			absent: []string{"request_header -Cookie", "X-Real-IP", "{{"},
		},
		{
			name:        "caddy with x-real-ip, strip_cookie and keep_header",
			proxy:       Caddy,
			extra:       "client_ip_header: x-real-ip\n",
			stripCookie: true,
			keepHeader:  true,
			want:        []string{"header_up X-Real-IP {remote_host}", "request_header -Cookie"},
			absent:      []string{"@keyIn", "-X-Api-Key\n"},
		},
		{
			name:  "traefik copies identities and strips keys and spellings",
			proxy: Traefik,
			want: []string{
				"address: \"http://127.0.0.1:9002/forward\"", "trustForwardHeader: false",
				"- X-Api-Key-Id\n", "- X-Extauthz-Degraded\n", "- X-User-Id\n", "- X-User-Role\n",
				"X-Api-Key: \"\"", "Authorization: \"\"", "X_user_id: \"\"",
				"url: \"http://127.0.0.1:3000\"", "address: \"0.0.0.0:8080\"",
			},
			absent: []string{"Cookie: \"\""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			yaml := baseConfig + tc.extra
			if tc.stripCookie {
				yaml = strings.Replace(yaml, "secrets: [s3cret]", "secrets: [s3cret]\n  strip_cookie: true", 1)
			}
			if tc.keepHeader {
				yaml = strings.Replace(yaml, "apikeys:\n", "apikeys:\n  keep_header: true\n", 1)
			}
			out := render(t, tc.proxy, parseConfig(t, yaml), o)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("output holds %q:\n%s", a, out)
				}
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	cfg := parseConfig(t, baseConfig)
	for proxy, want := range map[string]string{
		Nginx:   "proxy_pass http://extauthz/nginx/open;",
		Caddy:   "uri /forward/open\n",
		Traefik: "address: \"http://127.0.0.1:9002/forward/open\"",
	} {
		out := render(t, proxy, cfg, Options{Policy: "open"})
		if !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q", proxy, want)
		}
		if !strings.Contains(out, "--policy open") {
			t.Errorf("%s: the regenerate command lacks --policy", proxy)
		}
	}
	var b bytes.Buffer
	err := Render(&b, Nginx, cfg, Options{Policy: "admin"})
	if err == nil || !strings.Contains(err.Error(), `"admin"`) || !strings.Contains(err.Error(), "open, app") {
		t.Errorf("unknown policy: err = %v, want one naming it and the configured ones", err)
	}
	if b.Len() != 0 {
		t.Errorf("unknown policy: wrote %d bytes", b.Len())
	}
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name    string
		proxy   string // default nginx
		listen  string // the config's listen.http
		o       Options
		want    string
		wantErr string
	}{
		{name: "loopback listener", listen: "127.0.0.1:9002", want: "server 127.0.0.1:9002;"},
		{name: "all IPv4 interfaces", listen: "0.0.0.0:9002", want: "server 127.0.0.1:9002;"},
		{name: "all IPv6 interfaces", listen: "[::]:9002", want: "server [::1]:9002;"},
		{name: "explicit --extauthz", listen: "0.0.0.0:9002", o: Options{Extauthz: "10.0.0.7:9002"}, want: "server 10.0.0.7:9002;"},
		{name: "port 0", listen: "127.0.0.1:0", wantErr: "pass --extauthz"},
		{name: "an address with a semicolon", listen: "127.0.0.1:9002", o: Options{Upstream: "a;b"}, wantErr: "--upstream"},
		{name: "an unknown proxy", proxy: "haproxy", listen: "127.0.0.1:9002", wantErr: "unknown proxy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := parseConfig(t, strings.Replace(baseConfig, "127.0.0.1:9002", `"`+tc.listen+`"`, 1))
			proxy := tc.proxy
			if proxy == "" {
				proxy = Nginx
			}
			var b bytes.Buffer
			err := Render(&b, proxy, cfg, tc.o)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one with %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case !strings.Contains(b.String(), tc.want):
				t.Errorf("output lacks %q", tc.want)
			}
		})
	}
}

func TestCaddySite(t *testing.T) {
	tests := []struct{ listen, bind, site, wantBind string }{
		{"0.0.0.0:8080", "", "http://:8080", "0.0.0.0"},
		{"127.0.0.1:8080", "", "http://:8080", "127.0.0.1"},
		{"[::1]:8080", "", "http://:8080", "::1"},
		{":8080", "", "http://:8080", ""},
		{"app.example.com:80", "", "http://app.example.com:80", ""},
		{"127.0.0.1:8080", "10.0.0.1", "http://:8080", "10.0.0.1"},
		{"{{LISTEN}}", "{{BIND}}", "http://{{LISTEN}}", "{{BIND}}"},
	}
	for _, tc := range tests {
		site, bind := caddySite(tc.listen, tc.bind)
		if site != tc.site || bind != tc.wantBind {
			t.Errorf("caddySite(%q, %q) = %q, %q, want %q, %q", tc.listen, tc.bind, site, bind, tc.site, tc.wantBind)
		}
	}
}

func TestHeaderSpellings(t *testing.T) {
	h := newHeader("x-api-key-id")
	if h.Canonical != "X-Api-Key-Id" || h.Var != "x_api_key_id" || h.Ident != "XApiKeyId" {
		t.Errorf("newHeader = %+v", h)
	}
	if len(h.Variants) != 7 || !slices.Contains(h.Variants, "X_api_key_id") || !slices.Contains(h.Variants, "X-Api_key-Id") {
		t.Errorf("variants = %q, want the 7 mixes of '-' and '_'", h.Variants)
	}
	if v := underscoreVariants("Authorization"); v != nil {
		t.Errorf("variants of a name without dashes = %q", v)
	}
	if v := underscoreVariants("A-B-C-D-E-F"); len(v) != 1 || v[0] != "A_b_c_d_e_f" {
		t.Errorf("variants of a long name = %q, want only the all-underscore one", v)
	}
}
