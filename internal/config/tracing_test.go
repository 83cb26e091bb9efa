package config

import (
	"strings"
	"testing"
)

func TestTracingDefaults(t *testing.T) {
	c, err := parse("cfg.yaml", []byte("log: {level: info}\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	got, want := c.Tracing, (Tracing{
		Enabled:     false,
		Endpoint:    "127.0.0.1:4317",
		Insecure:    true,
		SampleRatio: 0.01,
		ServiceName: "extauthz",
		Timeout:     Duration(DefaultTracingTimeout),
	})
	if got != want {
		t.Errorf("tracing = %+v, want %+v", got, want)
	}
	if hp, plain := got.OTLPTarget(); hp != "127.0.0.1:4317" || !plain {
		t.Errorf("OTLPTarget() = %q, %v, want 127.0.0.1:4317, true", hp, plain)
	}
}

func TestTracingParse(t *testing.T) {
	c, err := parse("cfg.yaml", []byte(`
tracing:
  enabled: true
  endpoint: otel-collector.observability:4317
  insecure: false
  sample_ratio: 1
  service_name: edge-authz
  timeout: 2s
`), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Tracing{Enabled: true, Endpoint: "otel-collector.observability:4317", SampleRatio: 1, ServiceName: "edge-authz", Timeout: Duration(2e9)}
	if c.Tracing != want {
		t.Errorf("tracing = %+v, want %+v", c.Tracing, want)
	}
	if hp, plain := c.Tracing.OTLPTarget(); hp != "otel-collector.observability:4317" || plain {
		t.Errorf("OTLPTarget() = %q, %v, want TLS to the host:port", hp, plain)
	}
}

func TestTracingOTLPTarget(t *testing.T) {
	tests := []struct {
		name      string
		tr        Tracing
		wantHost  string
		wantPlain bool
	}{
		{"host:port insecure", Tracing{Endpoint: "c:4317", Insecure: true}, "c:4317", true},
		{"host:port tls", Tracing{Endpoint: "c:4317"}, "c:4317", false},
		{"http scheme wins over insecure: false", Tracing{Endpoint: "http://c:4317"}, "c:4317", true},
		{"https scheme wins over insecure: true", Tracing{Endpoint: "https://c:4317/", Insecure: true}, "c:4317", false},
		{"ipv6 url", Tracing{Endpoint: "http://[::1]:4317"}, "[::1]:4317", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, plain := tt.tr.OTLPTarget()
			if host != tt.wantHost || plain != tt.wantPlain {
				t.Errorf("OTLPTarget() = %q, %v, want %q, %v", host, plain, tt.wantHost, tt.wantPlain)
			}
		})
	}
}

func TestTracingBad(t *testing.T) {
	tests := []struct {
		name, yaml, path, msg string
	}{
		{"unknown key", "tracing: {enabled: true, sampler: always}", "tracing.sampler", "unknown field"},
		{"ratio above one", "tracing: {sample_ratio: 1.5}", "tracing.sample_ratio", "from 0 to 1"},
		{"negative ratio", "tracing: {sample_ratio: -0.1}", "tracing.sample_ratio", "from 0 to 1"},
		{"ratio not a number", "tracing: {sample_ratio: all}", "tracing.sample_ratio", "expected"},
		{"empty service name", "tracing: {service_name: ' '}", "tracing.service_name", "must not be empty"},
		{"zero timeout", "tracing: {timeout: 0}", "tracing.timeout", "must be > 0"},
		{"huge timeout", "tracing: {timeout: 2h}", "tracing.timeout", "at most 1m"},
		{"timeout without unit", "tracing: {timeout: 5}", "tracing.timeout", "no unit"},
		{"enabled not a bool", "tracing: {enabled: maybe}", "tracing.enabled", "expected"},
		{"empty endpoint", "tracing: {endpoint: ''}", "tracing.endpoint", "must be set"},
		{"endpoint without port", "tracing: {endpoint: collector}", "tracing.endpoint", "not host:port"},
		{"endpoint port 0", "tracing: {endpoint: 'collector:0'}", "tracing.endpoint", "port other than 0"},
		{"endpoint without host", "tracing: {endpoint: ':4317'}", "tracing.endpoint", "needs a host"},
		{"grpc scheme", "tracing: {endpoint: 'grpc://collector:4317'}", "tracing.endpoint", "not http or https"},
		{"url without port", "tracing: {endpoint: 'https://collector'}", "tracing.endpoint", "needs a host and a port"},
		{"url with bad port", "tracing: {endpoint: 'http://collector:99999'}", "tracing.endpoint", "port from 1 to 65535"},
		{"url with credentials", "tracing: {endpoint: 'https://user:hunter2@collector:4317'}", "tracing.endpoint", "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml+"\n"), noEnv)
			ps := problems(t, err)
			if len(ps) != 1 {
				t.Fatalf("got %d problems %v, want 1", len(ps), ps)
			}
			p := ps[0]
			if p.Path != tt.path || !strings.Contains(p.Msg, tt.msg) {
				t.Errorf("got %q: %q, want %q containing %q", p.Path, p.Msg, tt.path, tt.msg)
			}
			if p.File != "cfg.yaml" || p.Line != 1 {
				t.Errorf("%v: want cfg.yaml line 1", p)
			}
			if strings.Contains(p.Error(), "hunter2") {
				t.Errorf("%v: quotes a credential", p)
			}
		})
	}
}

func TestTracingEndpointFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"none", nil, DefaultTracingEndpoint},
		{"generic", map[string]string{EnvOTLPEndpoint: "http://otel:4317"}, "http://otel:4317"},
		{"traces-specific wins", map[string]string{
			EnvOTLPEndpoint:       "http://otel:4317",
			EnvOTLPTracesEndpoint: "https://traces:4317",
		}, "https://traces:4317"},
		{"empty changes nothing", map[string]string{EnvOTLPEndpoint: ""}, DefaultTracingEndpoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse("cfg.yaml", []byte("tracing: {enabled: true}\n"), envMap(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.Tracing.Endpoint != tt.want {
				t.Errorf("tracing.endpoint = %q, want %q", c.Tracing.Endpoint, tt.want)
			}
			if !c.Tracing.Enabled {
				t.Error("tracing switched off")
			}
		})
	}

	// The variables alone never turn tracing on.
	c, err := parse("cfg.yaml", nil, envMap(map[string]string{EnvOTLPEndpoint: "http://otel:4317"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Tracing.Enabled {
		t.Errorf("%s turned tracing on", EnvOTLPEndpoint)
	}
}

// TestTracingBadEndpointFromEnv: a bad address from the environment is reported with its
// variable when tracing is on, and ignored when it is off, since the variable may be meant
// for another container in the pod.
func TestTracingBadEndpointFromEnv(t *testing.T) {
	env := envMap(map[string]string{EnvOTLPTracesEndpoint: "collector"})
	if _, err := parse("cfg.yaml", []byte("tracing: {enabled: false}\n"), env); err != nil {
		t.Errorf("tracing off: %v, want no problem", err)
	}
	_, err := parse("cfg.yaml", []byte("tracing: {enabled: true}\n"), env)
	ps := problems(t, err)
	if len(ps) != 1 || ps[0].Path != "tracing.endpoint" || !strings.Contains(ps[0].Msg, "(set by "+EnvOTLPTracesEndpoint+")") {
		t.Fatalf("tracing on: got %v, want one tracing.endpoint problem naming %s", ps, EnvOTLPTracesEndpoint)
	}

	// A bad endpoint written in the file is reported even while tracing is off.
	_, err = parse("cfg.yaml", []byte("tracing: {endpoint: collector}\n"), noEnv)
	if ps := problems(t, err); len(ps) != 1 || ps[0].Path != "tracing.endpoint" {
		t.Errorf("file endpoint, tracing off: got %v, want one tracing.endpoint problem", ps)
	}
}
