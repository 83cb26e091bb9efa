package sessions

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// encodeAll percent-encodes every byte that is not a letter or digit, which is at least
// what encodeURIComponent encodes.
func encodeAll(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func FuzzCookieValue(f *testing.F) {
	f.Add("connect.sid=s%3Aabc.def", "connect.sid", "s:abc.def")
	f.Add(`a=1; garbage; connect.sid="x%zz"`, "connect.sid", "x y")
	f.Add(" \t a = %C3%A9 ;", "a", "é")
	f.Add("a=%", "a", "\xff")
	f.Add(";;==;", "=", "")
	f.Fuzz(func(t *testing.T, header, name, value string) {
		got, ok := CookieValue(header, name)
		if ok && !strings.Contains(header, name) {
			t.Fatalf("CookieValue(%q, %q) found a name the header lacks", header, name)
		}
		if ok && !strings.Contains(got, "%") && strings.IndexByte(got, ';') < 0 && !strings.Contains(header, "%") && !strings.Contains(header, got) {
			t.Fatalf("CookieValue(%q, %q) = %q, which is not in the header", header, name, got)
		}
		// Whatever express-session's serialize would write comes back intact.
		if !isToken(name) || name == "other" || !utf8.ValidString(value) {
			return
		}
		h := "other=1; " + name + "=" + encodeAll(value) + "; " + name + "=second"
		if got, ok := CookieValue(h, name); !ok || got != value {
			t.Fatalf("CookieValue(%q, %q) = %q, %v; want %q", h, name, got, ok, value)
		}
	})
}

func FuzzUnsign(f *testing.F) {
	f.Add("s:abc123."+npmSignedABC[len("abc123."):], "abc123", "keyboard cat")
	f.Add("s:"+npmSignedDotty, "a.b.c", "old-secret")
	f.Add("s:.", "", "")
	f.Add("s:x.====", "x", "k")
	f.Fuzz(func(t *testing.T, value, sid, secret string) {
		if got, ok := Unsign(value, []string{secret}); ok {
			// Only the canonical text verifies.
			if want := Sign(got, secret); want != value {
				t.Fatalf("Unsign(%q) = %q, true, but the canonical value is %q", value, got, want)
			}
		}
		if secret == "" || sid == "" {
			return
		}
		signed := Sign(sid, secret)
		if got, ok := Unsign(signed, []string{"other" + secret, secret}); !ok || got != sid {
			t.Fatalf("Unsign(Sign(%q, %q)) = %q, %v", sid, secret, got, ok)
		}
	})
}
