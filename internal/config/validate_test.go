package config

import (
	"strings"
	"testing"
	"time"
)

// TestValidate checks configs built in Go, as the CLI builds them from flags: no file, so no
// lines, but every path.
func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(c *Config)
		wantPaths []string // nil: valid
	}{
		{"defaults", func(*Config) {}, nil},
		{"redis url with db", func(c *Config) { c.Redis.URL = "redis://:pw@10.0.0.1:6379/15" }, nil},
		{"rediss with tls", func(c *Config) {
			c.Redis.URL = "rediss://r:6380"
			c.Redis.TLS = TLS{CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem", ServerName: "r"}
		}, nil},
		// Sentinel and Cluster URLs validate: redisurl parses them; the client builder is what
		// refuses them until it supports them, and `config validate` runs it too.
		{"sentinel url", func(c *Config) {
			c.Redis.URL = "redis-sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster/2?sentinel_password=spw"
		}, nil},
		{"cluster url with tls", func(c *Config) {
			c.Redis.URL = "redis-cluster://n1:7000,n2:7000?tls=true"
			c.Redis.TLS = TLS{CAFile: "ca.pem"}
		}, nil},
		{"rediss-sentinel with tls", func(c *Config) {
			c.Redis.URL = "rediss-sentinel://s1/mymaster"
			c.Redis.TLS = TLS{ServerName: "redis"}
		}, nil},
		{"db in the query", func(c *Config) { c.Redis.URL = "redis://r:6379?db=2" }, []string{"redis.url"}},
		{"ipv6 listen with zone", func(c *Config) { c.Listen.GRPC = "[fe80::1%eth0]:7001" }, nil},
		{"timeout at the limit", func(c *Config) { c.Redis.Timeout = Duration(MaxRedisTimeout) }, nil},
		{"zero shutdown", func(c *Config) { c.Shutdown = Shutdown{} }, nil},
		{"three clashing addresses", func(c *Config) { c.Listen = Listen{GRPC: ":7000", HTTP: ":7000", Admin: ":7000"} },
			[]string{"listen.http", "listen.admin"}},
		{"everything wrong", func(c *Config) {
			c.Listen.GRPC = ""
			c.Redis.URL = "ftp://r"
			c.Redis.Timeout = 0
			c.Redis.DialTimeout = -1
			c.Redis.PoolSize = -1
			c.Redis.MinIdleConns = -1
			c.ResponseHeaders = ""
			c.RateLimit.Prefix = "{}"
			c.Log = Log{}
			c.Shutdown = Shutdown{Grace: -1, Drain: -1}
		}, []string{
			"listen.grpc", "redis.url", "redis.timeout", "redis.dial_timeout", "redis.pool_size",
			"redis.min_idle_conns", "response_headers", "ratelimit.prefix", "log.level", "log.format",
			"shutdown.grace", "shutdown.drain",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.edit(c)
			var got []string
			for _, p := range problems(t, c.Validate()) {
				got = append(got, p.Path)
				if p.File != "" || p.Line != 0 {
					t.Errorf("%v: has a position without a file", p)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.wantPaths, " ") {
				t.Errorf("problems at %q, want %q", got, tt.wantPaths)
			}
		})
	}
}

// TestValidateKeepsSecrets checks that no message quotes a Redis URL, whose user info may hold
// a password.
func TestValidateKeepsSecrets(t *testing.T) {
	for _, u := range []string{
		"redis://user:hunter2@r:6379/x",
		"redis://user:hunter2@r:99999",
		"redis://user:hunter2@r/0/1",
		"redis://user:hunter2%zz@r",
		"http://user:hunter2@r",
		"rediss://user:hunter2@r?db=no",
		"redis-sentinel://user:hunter2@s1,,s2/m?sentinel_password=hunter2",
		"redis-sentinel://s1/m?sentinel_password=hunter2%zz",
		"redis-cluster://:hunter2@n1/1",
		"redis://user:hunter2",
	} {
		c := Default()
		c.Redis.URL = u
		c.Redis.Timeout = Duration(time.Millisecond)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: valid, want a problem", u)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the message leaks the password: %v", err)
		}
	}
}

func TestSuggest(t *testing.T) {
	known := []string{"grpc", "http", "admin", "dial_timeout", "draft-6", "draft-7", "draft-8"}
	tests := []struct{ in, want string }{
		{"grcp", "grpc"},
		{"GRPC", "grpc"},
		{"dialTimeout", "dial_timeout"},
		{"dial-timeout", "dial_timeout"},
		{"admn", "admin"},
		{"draft7", "draft-7"},
		{"draft-9", ""}, // as close to -6 as to -8
		{"metrics", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.in, known); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
