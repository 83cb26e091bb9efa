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

// settledPing waits until c has connected or has failed to at least once, then pings: a
// first call only starts connecting, and fails with a bare ErrNotReady.
func settledPing(t *testing.T, c *Client) error {
	t.Helper()
	c.start()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if c.rc.Load() != nil || c.lastErr.Load() != nil {
			break
		}
	}
	return c.Ping(ctxFor(t))
}

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
		// reason is what OnConnFailure must have heard, when wantErr is set.
		reason string
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
			reason:  "tls",
		},
		{
			name:    "wrong server name",
			url:     s.TLSURL(),
			tls:     TLSOptions{CAFile: client.CAFile, CertFile: client.CertFile, KeyFile: client.KeyFile, ServerName: "redis.example.com"},
			wantErr: "redis.example.com",
			reason:  "tls",
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
			reasons := make(chan string, 100)
			c := newClient(t, Options{URL: tt.url, TLS: tt.tls, Timeout: time.Second, DialTimeout: time.Second,
				OnConnFailure: func(r string) {
					select {
					case reasons <- r:
					default:
					}
				}})
			err := settledPing(t, c)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Ping: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("Ping succeeded, want an error")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Ping error = %q, want it to contain %q", err, tt.wantErr)
			}
			if err != nil {
				t.Logf("error: %v", err)
				if tt.reason != "" {
					if r := <-reasons; r != tt.reason {
						t.Errorf("OnConnFailure(%q), want %q", r, tt.reason)
					}
				}
				return
			}
			if _, err := c.Do(ctxFor(t), "SET", []string{"over"}, "tls"); err != nil {
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
