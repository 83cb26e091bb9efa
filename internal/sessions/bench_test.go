package sessions

import (
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// A Cookie header as browsers send it to an Express app behind analytics and consent tools.
var benchHeader = "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; consent=%7B%22ads%22%3Afalse%7D; theme=dark; " +
	expressCookieHeader() + "; lang=en-GB"

func BenchmarkCookieValue(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := CookieValue(benchHeader, "connect.sid"); !ok {
			b.Fatal("no cookie")
		}
	}
}

func BenchmarkUnsign(b *testing.B) {
	value, _ := CookieValue(benchHeader, "connect.sid")
	b.Run("first secret", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := Unsign(value, []string{"old-secret", "new-secret"}); !ok {
				b.Fatal("bad signature")
			}
		}
	})
	b.Run("bad signature, two secrets", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := Unsign(value, []string{"a", "b"}); ok {
				b.Fatal("verified")
			}
		}
	})
}

func BenchmarkResolve(b *testing.B) {
	if redistest.Binary() == "" {
		b.Skip("redis-server not installed")
	}
	srv := redistest.Start(b)
	serverDo(b, srv, "SET", "sess:"+expressSID, expressSession)
	ctx := b.Context()
	s, err := New(newClient(b, srv.URL()), Options{Secrets: []string{"new-secret", "old-secret"}, Subject: "userId",
		Headers: map[string]string{"x-passport-user": "passport.user"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("valid", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Resolve(ctx, benchHeader); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Through the client-side cache: no round trip, and the memo spares the parse.
	cached, err := New(s.rdb, Options{Secrets: []string{"new-secret", "old-secret"}, Subject: "userId",
		Headers: map[string]string{"x-passport-user": "passport.user"}, Cache: &CacheOptions{TTL: time.Minute}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("valid, cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cached.Resolve(ctx, benchHeader); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bad signature", func(b *testing.B) {
		bad := benchHeader[:len(benchHeader)-len("; lang=en-GB")-1] + "A; lang=en-GB"
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Resolve(ctx, bad); err == nil {
				b.Fatal("resolved")
			}
		}
	})
}
