package config

import (
	"strings"
	"testing"
)

// redis.embedded_addr: a loopback IP:port, free port by default, refused anywhere another host
// could reach (the store has no password), and kept off the listeners' ports.
func TestEmbeddedAddr(t *testing.T) {
	c, err := parse("cfg.yaml", []byte("listen: {grpc: 127.0.0.1:9001}\n"), noEnv)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if c.Redis.EmbeddedAddr != "127.0.0.1:0" {
		t.Errorf("default redis.embedded_addr = %q, want 127.0.0.1:0", c.Redis.EmbeddedAddr)
	}
	c, err = parse("cfg.yaml", []byte("redis: {embedded_addr: '[::1]:9004'}\n"), noEnv)
	if err != nil || c.Redis.EmbeddedAddr != "[::1]:9004" {
		t.Fatalf("parse [::1]:9004: %v, %+v", err, c)
	}

	tests := []struct {
		name, yaml, text string
		line             int
	}{
		{"every interface", "redis:\n  embedded_addr: 0.0.0.0:9004\n", "no password", 2},
		{"lan address", "redis:\n  embedded_addr: 192.168.1.10:9004\n", "not a loopback address", 2},
		{"a host name", "redis:\n  embedded_addr: localhost:9004\n", "not a name", 2},
		{"no port", "redis:\n  embedded_addr: 127.0.0.1\n", "127.0.0.1:9004", 2},
		{"empty", "redis:\n  embedded_addr: ''\n", "not a loopback IP:port", 2},
		// Checked even with a url: commenting the url out must not turn the file invalid.
		{"with a url", "redis:\n  url: redis://r:6379\n  embedded_addr: 0.0.0.0:1\n", "not a loopback address", 3},
		{"clashes with a listener", "listen: {http: 127.0.0.1:9004}\nredis:\n  embedded_addr: 127.0.0.1:9004\n", "clashes with listen.http", 3},
		{"clashes with a wildcard listener", "listen: {admin: ':9004'}\nredis:\n  embedded_addr: 127.0.0.1:9004\n", "clashes with listen.admin", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse("cfg.yaml", []byte(tt.yaml), noEnv)
			ps := problems(t, err)
			if len(ps) != 1 || ps[0].Path != "redis.embedded_addr" || !strings.Contains(ps[0].Error(), tt.text) || ps[0].Line != tt.line {
				t.Fatalf("problems %v, want one at redis.embedded_addr (line %d) saying %q", ps, tt.line, tt.text)
			}
		})
	}

	// Another port on the same host, or the same port with a url set, is fine.
	for _, ok := range []string{
		"listen: {http: 127.0.0.1:9004}\nredis: {embedded_addr: 127.0.0.1:9005}\n",
		"listen: {http: 127.0.0.2:9004}\nredis: {embedded_addr: 127.0.0.1:9004}\n",
		"listen: {http: 127.0.0.1:9004}\nredis: {url: redis://r:6379, embedded_addr: 127.0.0.1:9004}\n",
	} {
		if _, err := parse("cfg.yaml", []byte(ok), noEnv); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
