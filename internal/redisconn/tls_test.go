package redisconn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/extauthz/extauthz/internal/redistest"
)

func TestTLS(t *testing.T) {
	s := redistest.StartTLS(t)
	_, other := redistest.WriteCerts(t, t.TempDir()) // a second, unrelated CA
	client := s.Client

	tests := []struct {
		name string
		url  string
		tls  TLSOptions
		// wantErr is a piece of the Ping error, or "" when Ping must succeed.
		wantErr string
	}{
		{
			name: "ca and client certificate",
			url:  s.TLSURL(),
			tls:  TLSOptions{CAFile: client.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile},
		},
		{
			name: "server name override",
			url:  s.TLSURL(),
			tls:  TLSOptions{CAFile: client.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "localhost"},
		},
		{
			name:    "wrong ca",
			url:     s.TLSURL(),
			tls:     TLSOptions{CAFile: other.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile},
			wantErr: "certificate signed by unknown authority",
		},
		{
			name:    "wrong server name",
			url:     s.TLSURL(),
			tls:     TLSOptions{CAFile: client.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "redis.example.com"},
			wantErr: "redis.example.com",
		},
		{
			// redis-server requires a client certificate by default (tls-auth-clients yes).
			name:    "no client certificate",
			url:     s.TLSURL(),
			tls:     TLSOptions{CAFile: client.CAFile},
			wantErr: "redisconn: ping rediss://",
		},
		{
			name:    "client certificate from another ca",
			url:     s.TLSURL(),
			tls:     TLSOptions{CAFile: client.CAFile, CertFile: other.CertFile, KeyFile: other.KeyFile},
			wantErr: "redisconn: ping rediss://",
		},
		{
			name:    "plaintext to the tls port",
			url:     "redis://" + s.TLSAddr() + "/0",
			wantErr: "redisconn: ping redis://",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, Options{URL: tt.url, TLS: tt.tls, Timeout: time.Second})
			p := newPipe(t, c, PipeOptions{})
			err := c.Ping(context.Background())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("Ping succeeded, want an error")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Ping error = %q, want it to contain %q", err, tt.wantErr)
			}
			// The Pipe dials with the same TLS settings, and fails the same way.
			pctx, pcancel := c.WithTimeout(context.Background())
			defer pcancel()
			perr := p.Eval(pctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"pipe-over"}, "tls").Err()
			if (perr == nil) != (err == nil) {
				t.Errorf("Ping error %v but Pipe error %v", err, perr)
			}
			if err != nil {
				t.Logf("error: %v; pipe: %v", err, perr)
				return
			}
			if got, err := s.Do(context.Background(), "GET", "pipe-over"); err != nil || got != "tls" {
				t.Errorf("GET on the plain port = %q (%v), want %q", got, err, "tls")
			}
			ctx, cancel := c.WithTimeout(context.Background())
			defer cancel()
			if err := c.Redis().Set(ctx, "over", "tls", 0).Err(); err != nil {
				t.Fatalf("SET over TLS: %v", err)
			}
			if got, err := s.Do(context.Background(), "GET", "over"); err != nil || got != "tls" {
				t.Errorf("GET on the plain port = %q (%v), want %q", got, err, "tls")
			}
		})
	}
}

func TestTLSOptionErrors(t *testing.T) {
	dir := t.TempDir()
	server, client := redistest.WriteCerts(t, dir)
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name string
		tls  TLSOptions
		want string
	}{
		{"unreadable ca file", TLSOptions{CAFile: missing}, missing},
		{"ca file without certificates", TLSOptions{CAFile: empty}, empty + " holds no PEM certificate"},
		{"cert without key", TLSOptions{CertFile: client.CertFile}, "without a key file"},
		{"key without cert", TLSOptions{KeyFile: client.KeyFile}, "without a cert file"},
		{"key that does not match", TLSOptions{CertFile: client.CertFile, KeyFile: server.KeyFile}, "private key does not match"},
		{"missing key file", TLSOptions{CertFile: client.CertFile, KeyFile: missing}, missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(Options{URL: "rediss://:s3cret@127.0.0.1:6380/0", TLS: tt.tls}, zaptest.NewLogger(t))
			if err == nil {
				_ = c.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("New error = %q repeats a secret", err)
			}
		})
	}
}
