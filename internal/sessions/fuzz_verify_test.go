package sessions

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzVerifyCookie runs a Cookie header through what Store.Resolve does before Redis: find the
// cookie, then verify its signature with the configured secrets (fixed here, the first one
// signing, the second one retired). A verified sid re-signs to the very cookie value that carried
// it, and a cookie the fuzzer builds with either secret verifies to its sid.
func FuzzVerifyCookie(f *testing.F) {
	secrets := []string{"new secret", "old secret"}
	cfg, err := Options{Secrets: secrets, Subject: "userId"}.validate()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("connect.sid="+encodeAll(Sign("abc", secrets[0])), "abc")
	f.Add("a=1; connect.sid="+encodeAll(Sign("x.y.z", secrets[1]))+"; connect.sid=s%3Ax.AAAA", "x.y.z")
	f.Add("connect.sid=s%3A"+strings.Repeat("A", 32)+"."+strings.Repeat("A", sigLen), "")
	f.Add(`connect.sid="s:abc.def"`, "abc")
	f.Add("connect.sid=s:%zz", "\x00")
	f.Fuzz(func(t *testing.T, header, sid string) {
		raw, ok := CookieValue(header, cfg.cookieName)
		if ok {
			if got, verified := unsignWith(raw, cfg.verifiers); verified {
				if Sign(got, secrets[0]) != raw && Sign(got, secrets[1]) != raw {
					t.Fatalf("cookie %q verified as %q, which neither secret signs to that value", raw, got)
				}
				if again, ok := Unsign(raw, secrets); !ok || again != got {
					t.Fatalf("unsignWith and Unsign disagree on %q: %q, %q", raw, got, again)
				}
			} else if _, ok := Unsign(raw, secrets); ok {
				t.Fatalf("Unsign verifies %q, the pooled verifiers do not", raw)
			}
		}
		// Cookie values are percent-decoded as UTF-8 (decodeURIComponent), so express-session
		// can only carry a sid that is valid UTF-8; its own sids are base64url.
		if sid == "" || !utf8.ValidString(sid) {
			return
		}
		for i, secret := range secrets {
			h := "other=1; " + cfg.cookieName + "=" + encodeAll(Sign(sid, secret))
			raw, ok := CookieValue(h, cfg.cookieName)
			got, verified := unsignWith(raw, cfg.verifiers)
			if !ok || !verified || got != sid {
				t.Fatalf("a cookie signed with secret %d for %q verified as %q, %v", i, sid, got, verified)
			}
			// One changed signature character never verifies.
			forged := []byte(raw)
			last := len(forged) - 1
			forged[last] ^= 1
			if _, ok := unsignWith(string(forged), cfg.verifiers); ok {
				t.Fatalf("a forged signature for %q verified", sid)
			}
		}
	})
}
