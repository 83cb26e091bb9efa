package proxyconf

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// traefikDynamic mirrors the part of Traefik's dynamic configuration (pkg/config/dynamic:
// Router, Middleware.ForwardAuth, Middleware.Headers, Service.LoadBalancer) the generator
// writes, with Traefik's field names; decoding it strictly catches a misspelt field, which
// Traefik itself would reject.
type traefikDynamic struct {
	HTTP struct {
		Routers map[string]struct {
			EntryPoints []string `yaml:"entryPoints"`
			Rule        string   `yaml:"rule"`
			Middlewares []string `yaml:"middlewares"`
			Service     string   `yaml:"service"`
		} `yaml:"routers"`
		Middlewares map[string]struct {
			ForwardAuth *struct {
				Address             string   `yaml:"address"`
				TrustForwardHeader  *bool    `yaml:"trustForwardHeader"`
				AuthResponseHeaders []string `yaml:"authResponseHeaders"`
			} `yaml:"forwardAuth"`
			Headers *struct {
				CustomRequestHeaders map[string]string `yaml:"customRequestHeaders"`
			} `yaml:"headers"`
		} `yaml:"middlewares"`
		Services map[string]struct {
			LoadBalancer struct {
				Servers []struct {
					URL string `yaml:"url"`
				} `yaml:"servers"`
			} `yaml:"loadBalancer"`
		} `yaml:"services"`
	} `yaml:"http"`
}

// TestTraefikShape checks the generated Traefik configuration as Traefik would read it: known
// fields only, every reference resolved, the auth middleware before the strip one, every
// identity header in authResponseHeaders (Traefik deletes a client's copy of each, then copies
// the answer's), and the key headers, '_' spellings and cookie deleted after the decision.
func TestTraefikShape(t *testing.T) {
	cfg := parseConfig(t, strings.Replace(baseConfig, "secrets: [s3cret]", "secrets: [s3cret]\n  strip_cookie: true", 1))
	out := render(t, Traefik, cfg, Options{Upstream: "127.0.0.1:3000", Policy: "app"})

	var d traefikDynamic
	dec := yaml.NewDecoder(bytes.NewReader([]byte(out)))
	dec.KnownFields(true)
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("decode: %v\n%s", err, out)
	}
	router, ok := d.HTTP.Routers["app"]
	if !ok {
		t.Fatalf("no router app: %+v", d.HTTP.Routers)
	}
	if router.Rule != "PathPrefix(`/`)" || !slices.Equal(router.EntryPoints, []string{"web"}) {
		t.Errorf("router = %+v", router)
	}
	if !slices.Equal(router.Middlewares, []string{"extauthz-auth", "extauthz-strip"}) {
		t.Errorf("router middlewares = %q, want the decision first", router.Middlewares)
	}
	for _, m := range router.Middlewares {
		if _, ok := d.HTTP.Middlewares[m]; !ok {
			t.Errorf("router names middleware %q, which is not defined", m)
		}
	}
	svc, ok := d.HTTP.Services[router.Service]
	if !ok || len(svc.LoadBalancer.Servers) != 1 || svc.LoadBalancer.Servers[0].URL != "http://127.0.0.1:3000" {
		t.Errorf("service %q = %+v", router.Service, svc)
	}

	fa := d.HTTP.Middlewares["extauthz-auth"].ForwardAuth
	if fa == nil {
		t.Fatal("extauthz-auth is not a forwardAuth middleware")
	}
	if fa.Address != "http://127.0.0.1:9002/forward/app" {
		t.Errorf("address = %q", fa.Address)
	}
	if fa.TrustForwardHeader == nil || *fa.TrustForwardHeader {
		t.Errorf("trustForwardHeader must be set to false, got %v", fa.TrustForwardHeader)
	}
	wantIdentity := []string{"X-Api-Key-Id", "X-Extauthz-Degraded", "X-User-Id", "X-User-Role"}
	if !slices.Equal(fa.AuthResponseHeaders, wantIdentity) {
		t.Errorf("authResponseHeaders = %q, want %q", fa.AuthResponseHeaders, wantIdentity)
	}

	strip := d.HTTP.Middlewares["extauthz-strip"].Headers
	if strip == nil {
		t.Fatal("extauthz-strip is not a headers middleware")
	}
	for _, h := range []string{"X-Api-Key", "Authorization", "Cookie", "X_user_id", "X-Api_key-Id", "X_extauthz_degraded"} {
		if v, ok := strip.CustomRequestHeaders[h]; !ok || v != "" {
			t.Errorf("customRequestHeaders[%q] = %q, %v: want an empty value, which deletes", h, v, ok)
		}
	}
	for h := range strip.CustomRequestHeaders {
		if slices.Contains(wantIdentity, h) {
			t.Errorf("extauthz-strip deletes %s, which the decision sets", h)
		}
	}
}
