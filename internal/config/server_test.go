package config

import (
	"strings"
	"testing"
	"time"
)

func TestServerDefaultsAndChecks(t *testing.T) {
	c := Default()
	if c.Server.MaxInflight != 1024 || c.Server.HTTP.ReadTimeout.D() != 10*time.Second ||
		c.Server.HTTP.MaxConnections != 1024 || c.Server.GRPC.MaxConcurrentStreams != 1024 || c.Admin.Pprof {
		t.Fatalf("server defaults = %+v, admin = %+v", c.Server, c.Admin)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"defaults", func(*Config) {}, nil},
		{"zero limits", func(c *Config) {
			c.Server = Server{}
		}, []string{
			"server.max_inflight", "server.http.read_header_timeout", "server.http.read_timeout",
			"server.http.write_timeout", "server.http.idle_timeout", "server.grpc.max_connection_idle",
			"server.grpc.keepalive_min_time", "server.http.max_header_bytes", "server.http.max_body_bytes",
			"server.http.max_connections", "server.grpc.max_connections", "server.grpc.max_concurrent_streams",
		}},
		{"header timeout past read timeout", func(c *Config) {
			c.Server.HTTP.ReadHeaderTimeout = Duration(time.Minute)
		}, []string{"server.http.read_header_timeout"}},
		{"streams past uint32", func(c *Config) { c.Server.GRPC.MaxConcurrentStreams = 1 << 32 }, []string{"server.grpc.max_concurrent_streams"}},
		{"pprof on loopback", func(c *Config) { c.Admin.Pprof = true }, nil},
		{"pprof on localhost", func(c *Config) { c.Admin.Pprof, c.Listen.Admin = true, "localhost:9003" }, nil},
		{"pprof on every interface", func(c *Config) { c.Admin.Pprof, c.Listen.Admin = true, ":9003" }, []string{"admin.pprof"}},
		{"pprof on a pod address", func(c *Config) { c.Admin.Pprof, c.Listen.Admin = true, "10.0.0.5:9003" }, []string{"admin.pprof"}},
		{"no pprof on every interface", func(c *Config) { c.Listen.Admin = "0.0.0.0:9003" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(c)
			var got []string
			for _, p := range problems(t, c.Validate()) {
				got = append(got, p.Path)
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("problems at %q, want %q", got, tt.want)
			}
		})
	}
}

func TestServerFromYAML(t *testing.T) {
	c, err := Parse("x.yaml", []byte("server:\n  max_inflight: 64\n  http: {idle_timeout: 30s, max_body_bytes: 1024}\n  grpc: {max_connections: 16}\nadmin: {pprof: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.MaxInflight != 64 || c.Server.HTTP.IdleTimeout.D() != 30*time.Second || c.Server.HTTP.MaxBodyBytes != 1024 ||
		c.Server.GRPC.MaxConnections != 16 || !c.Admin.Pprof || c.Server.HTTP.ReadTimeout.D() != DefaultHTTPReadTimeout {
		t.Fatalf("server = %+v, admin = %+v", c.Server, c.Admin)
	}
	_, err = Parse("x.yaml", []byte("server:\n  http:\n    max_conections: 3\n"))
	if err == nil || !strings.Contains(err.Error(), "server.http.max_conections") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = Parse("x.yaml", []byte("server:\n  max_inflight: 0\n"))
	if err == nil || !strings.Contains(err.Error(), "x.yaml:2") {
		t.Fatalf("a bad value is not pinned to its line: %v", err)
	}
}
