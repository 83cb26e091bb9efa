package main

import (
	"testing"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisurl"
)

// The Redis deadlines have one default, redisurl's: the config file's defaults, the client
// the server builds from them, and the client builder's own zero values all agree with it.
func TestRedisTimeoutDefaultsAgree(t *testing.T) {
	const url = "redis://127.0.0.1:1/0" // never dialled: New does no network I/O
	fromConfig := config.Default().Redis
	fromConfig.URL = url
	tests := []struct {
		name string
		opts redisconn.Options
	}{
		{"config defaults", redisOptions(fromConfig, -1)},
		{"client builder zero values", redisconn.Options{URL: url}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := redisconn.New(tt.opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			if got, want := rc.Timeout(), redisurl.DefaultTimeout; got != want {
				t.Errorf("Timeout = %v, want redisurl.DefaultTimeout %v", got, want)
			}
		})
	}
	if got, want := fromConfig.DialTimeout.D(), redisurl.DefaultDialTimeout; got != want {
		t.Errorf("config redis.dial_timeout default = %v, want redisurl.DefaultDialTimeout %v", got, want)
	}
}
