package redisurl

import (
	"strings"
	"testing"
)

func TestParseEmbeddedAddr(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{"default", DefaultEmbeddedAddr, "127.0.0.1:0", ""},
		{"fixed port", "127.0.0.1:9004", "127.0.0.1:9004", ""},
		{"other loopback", "127.0.0.2:6379", "127.0.0.2:6379", ""},
		{"ipv6 loopback", "[::1]:9004", "[::1]:9004", ""},
		{"ipv4-mapped loopback", "[::ffff:127.0.0.1]:9004", "127.0.0.1:9004", ""},
		{"every interface", "0.0.0.0:9004", "", "not a loopback address"},
		{"every ipv6 interface", "[::]:9004", "", "not a loopback address"},
		{"lan address", "10.0.0.5:9004", "", "has no password"},
		{"a name", "localhost:9004", "", "not a name"},
		{"no port", "127.0.0.1", "", "not a loopback IP:port"},
		{"empty host", ":9004", "", "not a loopback IP:port"},
		{"bad port", "127.0.0.1:99999", "", "not a loopback IP:port"},
		{"empty", "", "", "not a loopback IP:port"},
		{"zone", "[fe80::1%lo]:9004", "", "not a loopback address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEmbeddedAddr(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseEmbeddedAddr(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("ParseEmbeddedAddr(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
			}
		})
	}
}
