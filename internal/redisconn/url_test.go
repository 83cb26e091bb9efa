package redisconn

import (
	"slices"
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		want     endpoint
		describe string
	}{
		{
			name:     "plain",
			url:      "redis://127.0.0.1:6380/0",
			want:     endpoint{scheme: "redis", addrs: []string{"127.0.0.1:6380"}},
			describe: "redis://127.0.0.1:6380/0",
		},
		{
			name:     "default port and db",
			url:      "redis://cache.internal",
			want:     endpoint{scheme: "redis", addrs: []string{"cache.internal:6379"}},
			describe: "redis://cache.internal:6379/0",
		},
		{
			name:     "trailing slash",
			url:      "redis://cache.internal:6379/",
			want:     endpoint{scheme: "redis", addrs: []string{"cache.internal:6379"}},
			describe: "redis://cache.internal:6379/0",
		},
		{
			name:     "db number",
			url:      "redis://127.0.0.1:6379/3",
			want:     endpoint{scheme: "redis", addrs: []string{"127.0.0.1:6379"}, db: 3},
			describe: "redis://127.0.0.1:6379/3",
		},
		{
			name:     "password only",
			url:      "redis://:s3cret@127.0.0.1:6379/1",
			want:     endpoint{scheme: "redis", addrs: []string{"127.0.0.1:6379"}, db: 1, password: "s3cret"},
			describe: "redis://127.0.0.1:6379/1",
		},
		{
			name:     "user and escaped password",
			url:      "redis://app:p%40ss%2Fw0rd@127.0.0.1:6379/2",
			want:     endpoint{scheme: "redis", addrs: []string{"127.0.0.1:6379"}, db: 2, username: "app", password: "p@ss/w0rd"},
			describe: "redis://127.0.0.1:6379/2",
		},
		{
			name:     "tls",
			url:      "rediss://app:s3cret@redis.example.com:6380/0",
			want:     endpoint{scheme: "rediss", addrs: []string{"redis.example.com:6380"}, username: "app", password: "s3cret"},
			describe: "rediss://redis.example.com:6380/0",
		},
		{
			name:     "ipv6",
			url:      "redis://[::1]:6379/0",
			want:     endpoint{scheme: "redis", addrs: []string{"[::1]:6379"}},
			describe: "redis://[::1]:6379/0",
		},
		{
			name:     "scheme in capitals",
			url:      "REDIS://127.0.0.1:6379/0",
			want:     endpoint{scheme: "redis", addrs: []string{"127.0.0.1:6379"}},
			describe: "redis://127.0.0.1:6379/0",
		},
		{
			name:     "unix socket",
			url:      "unix:///run/redis/redis.sock?db=4",
			want:     endpoint{scheme: "unix", addrs: []string{"/run/redis/redis.sock"}, db: 4},
			describe: "unix:///run/redis/redis.sock?db=4",
		},
		{
			name:     "unix socket with password",
			url:      "unix://:s3cret@/run/redis/redis.sock",
			want:     endpoint{scheme: "unix", addrs: []string{"/run/redis/redis.sock"}, password: "s3cret"},
			describe: "unix:///run/redis/redis.sock?db=0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseURL(tt.url)
			if err != nil {
				t.Fatalf("parseURL(%q): %v", tt.url, err)
			}
			if got.scheme != tt.want.scheme || !slices.Equal(got.addrs, tt.want.addrs) || got.db != tt.want.db ||
				got.username != tt.want.username || got.password != tt.want.password {
				t.Errorf("parseURL(%q) = %+v, want %+v", tt.url, got, tt.want)
			}
			if d := got.describe(); d != tt.describe {
				t.Errorf("describe() = %q, want %q", d, tt.describe)
			}
			if strings.Contains(got.describe(), "s3cret") || (got.username != "" && strings.Contains(got.describe(), got.username)) {
				t.Errorf("describe() = %q shows credentials", got.describe())
			}
		})
	}
}

// TestParseURLErrors also checks that no error repeats the password, whatever is wrong.
func TestParseURLErrors(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want string // a piece of the error message
	}{
		{"no scheme", "127.0.0.1:6379", "needs a scheme"},
		{"credentials without scheme", "app:s3cret@127.0.0.1:6379", "needs a scheme"},
		{"http scheme", "http://127.0.0.1:6379", `scheme "http" is not supported`},
		{"sentinel not yet", "redis-sentinel://s3cret@10.0.0.1:26379/mymaster", "redis-sentinel:// is parsed but the decision client does not support it yet (issue 11)"},
		{"sentinel tls not yet", "redis-sentinel://:s3cret@10.0.0.1/mymaster?tls=true&sentinel_password=s3cret", "rediss-sentinel:// is parsed but"},
		{"cluster not yet", "redis-cluster://10.0.0.1:7000,10.0.0.2:7000", "redis-cluster:// is parsed but the decision client does not support it yet (issue 11)"},
		{"port not a number", "redis://:s3cret@127.0.0.1:notaport/0", "invalid port"},
		{"port zero", "redis://:s3cret@127.0.0.1:0/0", "not in 1-65535"},
		{"port too large", "redis://:s3cret@127.0.0.1:70000/0", "not in 1-65535"},
		{"no host", "redis://:s3cret@/0", "no host"},
		{"db not a number", "redis://:s3cret@127.0.0.1:6379/zero", "not a non-negative number"},
		{"db negative", "redis://127.0.0.1:6379/-1", "not a non-negative number"},
		{"path too deep", "redis://127.0.0.1:6379/1/2", "not a non-negative number"},
		{"query parameters", "redis://:s3cret@127.0.0.1:6379/0?password=s3cret&max_retries=3", `"max_retries", "password"`},
		{"fragment", "redis://127.0.0.1:6379/0#x", "fragment"},
		{"bad escape in password", "redis://app:s3cret%zz@127.0.0.1:6379/0", "password has an invalid"},
		{"bad escape in username", "redis://%zzs3cret:x@127.0.0.1:6379/0", "username has an invalid"},
		{"unescaped slash in password", "redis://app:s3/cret@127.0.0.1:6379/0", "'@' after the host"},
		{"unescaped hash in password", "redis://app:s3#cret@127.0.0.1:6379/0", "'@' after the host"},
		{"unix without path", "unix://", "no socket path"},
		{"unix relative path", "unix://s3cret/redis.sock", "must not name a host"},
		{"unix bad db", "unix:///run/redis.sock?db=x", "not a non-negative number"},
		{"unix unknown parameter", "unix:///run/redis.sock?db=1&timeout=1s", `"timeout"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseURL(tt.url)
			if err == nil {
				t.Fatalf("parseURL(%q) succeeded, want an error", tt.url)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("parseURL(%q) error = %q, want it to contain %q", tt.url, err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "cret") {
				t.Errorf("parseURL(%q) error = %q repeats the password", tt.url, err)
			}
		})
	}
}
