package sessions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// Vectors from the real npm packages, made in an empty directory with
//
//	npm install cookie-signature@1.0.7 express-session@1.18   # installed 1.18.2, cookie 0.7.2
//	node -e "const s = require('cookie-signature'); console.log(s.sign('abc123', 'keyboard cat'))"
//	node -e "const s = require('cookie-signature'); console.log(s.sign('Ab+/x.y_z-0', 'old-secret'))"
//
// and, for expressSetCookie, an http server running session({secret: ['new-secret',
// 'old-secret'], genid: () => 'Q2lt+hQ/ZmFr.ZV9zaWQ', cookie: {maxAge: 86400000}, resave:
// false, saveUninitialized: false}) with the default MemoryStore, a request that set
// req.session.userId = 'u1' and req.session.passport = {user: 42}, and the Set-Cookie header
// and the stored session (JSON.stringify of store.get's result) it produced. Replaying
// "other=1; " + the cookie pair to the same server resolved the session.
const (
	npmSignedABC   = "abc123.L3URH8qEUlRhbJErOXuJ/R5i21GJUY02kERb2c2p5w0"      // sign('abc123', 'keyboard cat')
	npmSignedDotty = "Ab+/x.y_z-0.eZAhFpCE1rWgNmDt7zSGp2iIJjHL2xz5iNW3XfVTqDo" // sign('Ab+/x.y_z-0', 'old-secret')

	expressSetCookie = "connect.sid=s%3AQ2lt%2BhQ%2FZmFr.ZV9zaWQ.cyTvSzart15IR2TfPYKsWiiNZ05jTglXpppg%2Bvihk0E; Path=/; Expires=Sat, 28 Nov 2026 02:35:48 GMT; HttpOnly"
	expressSID       = "Q2lt+hQ/ZmFr.ZV9zaWQ"
	expressSession   = `{"cookie":{"originalMaxAge":86400000,"expires":"2026-11-28T02:35:48.810Z","httpOnly":true,"path":"/"},"userId":"u1","passport":{"user":42}}`
)

// expressCookieHeader is the Cookie header a browser sends back for expressSetCookie.
func expressCookieHeader() string {
	pair, _, _ := strings.Cut(expressSetCookie, ";")
	return pair
}

// hmacSig computes a signature independently of the package, straight from the definition.
func hmacSig(sid, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(sid))
	return strings.TrimRight(base64.StdEncoding.EncodeToString(m.Sum(nil)), "=")
}

func TestSignMatchesReferences(t *testing.T) {
	tests := []struct {
		name, sid, secret, want string
	}{
		{"npm cookie-signature", "abc123", "keyboard cat", "s:" + npmSignedABC},
		{"npm cookie-signature, sid with dots and base64 characters", "Ab+/x.y_z-0", "old-secret", "s:" + npmSignedDotty},
		{"crypto/hmac", "some-session-id", "s3cr3t", "s:some-session-id." + hmacSig("some-session-id", "s3cr3t")},
		{"crypto/hmac, unicode secret", "sid", "clé", "s:sid." + hmacSig("sid", "clé")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sign(tt.sid, tt.secret); got != tt.want {
				t.Errorf("Sign(%q, %q) = %q, want %q", tt.sid, tt.secret, got, tt.want)
			}
		})
	}
	if got := base64.RawStdEncoding.EncodedLen(sha256.Size); got != sigLen {
		t.Errorf("encoded signature length = %d, want sigLen %d", got, sigLen)
	}
}

func TestUnsign(t *testing.T) {
	secrets := []string{"new-secret", "old-secret"}
	valid := Sign("abc123", "new-secret")
	sig := valid[strings.LastIndexByte(valid, '.')+1:]
	tests := []struct {
		name    string
		value   string
		secrets []string
		want    string
		wantOK  bool
	}{
		{"first secret", valid, secrets, "abc123", true},
		{"second secret (rotation)", Sign("abc123", "old-secret"), secrets, "abc123", true},
		{"npm vector", "s:" + npmSignedABC, []string{"keyboard cat"}, "abc123", true},
		{"npm vector after a rotation", "s:" + npmSignedDotty, secrets, "Ab+/x.y_z-0", true},
		{"express-session cookie", "s:Q2lt+hQ/ZmFr.ZV9zaWQ.cyTvSzart15IR2TfPYKsWiiNZ05jTglXpppg+vihk0E", secrets, expressSID, true},
		{"wrong secret", valid, []string{"other"}, "", false},
		{"no secrets", valid, nil, "", false},
		{"empty secret skipped", Sign("abc123", ""), []string{""}, "", false},
		{"missing s: prefix", strings.TrimPrefix(valid, "s:"), secrets, "", false},
		{"other prefix", "j:" + strings.TrimPrefix(valid, "s:"), secrets, "", false},
		{"no dot", "s:abc123" + sig, secrets, "", false},
		{"sid containing dots", Sign("a.b.c", "new-secret"), secrets, "a.b.c", true},
		{"tampered sid", strings.Replace(valid, "abc123", "abc124", 1), secrets, "", false},
		{"tampered signature", valid[:len(valid)-5] + "AAAAA", secrets, "", false},
		{"signature with = padding", valid + "=", secrets, "", false},
		{"truncated signature", valid[:len(valid)-1], secrets, "", false},
		{"signature with an extra character", valid + "A", secrets, "", false},
		{"empty signature", "s:abc123.", secrets, "", false},
		{"empty sid", Sign("", "new-secret"), secrets, "", false},
		{"only the prefix", "s:", secrets, "", false},
		{"empty", "", secrets, "", false},
		{"url-encoded value is not decoded here", "s%3A" + strings.TrimPrefix(valid, "s:"), secrets, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := Unsign(tt.value, tt.secrets)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Unsign(%q) = %q, %v; want %q, %v", tt.value, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestUnsignRejectsNonCanonicalBase64 changes the unused low bits of the signature's last
// character: lenient base64 decodes the result to the same MAC, but cookie-signature
// compares text, so express-session rejects it (checked with node: unsign of npmSignedABC
// ending in "1" or "3" instead of "0" is false) and so must Unsign.
func TestUnsignRejectsNonCanonicalBase64(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	value := "s:" + npmSignedABC
	last := strings.IndexByte(alphabet, value[len(value)-1])
	canonical, err := base64.RawStdEncoding.DecodeString(value[len(value)-sigLen:])
	if err != nil {
		t.Fatal(err)
	}
	for bits := 1; bits < 4; bits++ {
		variant := value[:len(value)-1] + string(alphabet[last|bits])
		decoded, err := base64.RawStdEncoding.DecodeString(variant[len(variant)-sigLen:])
		if err != nil || !bytes.Equal(decoded, canonical) {
			t.Fatalf("variant %q does not decode to the same MAC (err %v): the test proves nothing", variant, err)
		}
		if sid, ok := Unsign(variant, []string{"keyboard cat"}); ok {
			t.Errorf("Unsign(%q) = %q, true; want a non-canonical signature rejected", variant, sid)
		}
	}
}

// TestUnsignWithMatchesUnsign guards the Store's path against drifting from the exported one.
func TestUnsignWithMatchesUnsign(t *testing.T) {
	secrets := []string{"new-secret", "old-secret"}
	verifiers := []*verifier{newVerifier([]byte("new-secret")), newVerifier([]byte("old-secret"))}
	values := []string{Sign("x", "new-secret"), Sign("x.y", "old-secret"), Sign("x", "nope"), "s:" + npmSignedDotty, "s:x.", "x", ""}
	// Twice, so that pooled HMAC states are reused.
	for range 2 {
		for _, v := range values {
			sid1, ok1 := Unsign(v, secrets)
			sid2, ok2 := unsignWith(v, verifiers)
			if sid1 != sid2 || ok1 != ok2 {
				t.Errorf("%q: Unsign = %q, %v; unsignWith = %q, %v", v, sid1, ok1, sid2, ok2)
			}
		}
	}
}
