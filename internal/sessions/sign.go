package sessions

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strings"
	"sync"
)

// signedPrefix marks a signed express-session cookie value. express-session treats a value
// without it as "unsigned" and ignores it, and so does Unsign.
const signedPrefix = "s:"

// sigLen is the length of a cookie-signature signature: SHA-256's 32 bytes in base64
// without padding, base64.RawStdEncoding.EncodedLen(sha256.Size).
const sigLen = 43

// Sign returns the raw cookie value express-session would set for sid with secret:
// "s:" + sid + "." + signature. URL-encoding it for a Cookie or Set-Cookie header is the
// caller's business. It exists for tests and tooling; Store only verifies.
func Sign(sid, secret string) string {
	var sig [sigLen]byte
	encodeMAC(sig[:], hmac.New(sha256.New, []byte(secret)), sid)
	return signedPrefix + sid + "." + string(sig[:])
}

// Unsign returns the sid in a signed cookie value ("s:" + sid + "." + signature) when the
// signature verifies with one of secrets, tried in order.
//
// Like cookie-signature, it splits at the last "." (so sids may contain dots), signs the
// part before it again, and compares the text of the signature, not its decoded bytes: a
// signature with "=" padding or with different trailing bits in its last character does not
// verify even though it decodes to the right MAC. The comparison is constant-time
// (hmac.Equal). Empty secrets are skipped, since anyone can sign with them, and an empty sid
// never verifies: express-session treats it as no session.
func Unsign(value string, secrets []string) (sid string, ok bool) {
	sid, sig, ok := splitSigned(value)
	if !ok {
		return "", false
	}
	for _, secret := range secrets {
		if secret != "" && canonical(hmac.New(sha256.New, []byte(secret)), sid, sig) {
			return sid, true
		}
	}
	return "", false
}

// verifier checks signatures under one key. It keeps keyed HMAC states in a pool: hmac.New
// costs a dozen allocations and two extra hash blocks, which would otherwise be most of the
// price of a forged cookie.
type verifier struct {
	pool sync.Pool
}

func newVerifier(key []byte) *verifier {
	key = bytes.Clone(key)
	return &verifier{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}}
}

// verify reports whether sig is the canonical signature of sid.
func (v *verifier) verify(sid, sig string) bool {
	mac := v.pool.Get().(hash.Hash)
	mac.Reset()
	ok := canonical(mac, sid, sig)
	v.pool.Put(mac)
	return ok
}

// unsignWith is Unsign with a verifier per secret, for Store.
func unsignWith(value string, verifiers []*verifier) (string, bool) {
	sid, sig, ok := splitSigned(value)
	if !ok {
		return "", false
	}
	for _, v := range verifiers {
		if v.verify(sid, sig) {
			return sid, true
		}
	}
	return "", false
}

// splitSigned splits "s:" + sid + "." + sig at the last ".". It rejects, before any HMAC
// is computed, what can never verify: no prefix, no dot, an empty sid, or a signature of the
// wrong length (the length is no secret: every valid signature has the same one).
func splitSigned(value string) (sid, sig string, ok bool) {
	rest, ok := strings.CutPrefix(value, signedPrefix)
	if !ok {
		return "", "", false
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot <= 0 {
		return "", "", false
	}
	sid, sig = rest[:dot], rest[dot+1:]
	if len(sig) != sigLen {
		return "", "", false
	}
	return sid, sig, true
}

// canonical reports whether sig is the text cookie-signature would write for sid, given
// mac, an HMAC-SHA256 keyed with the secret and not yet written to.
func canonical(mac hash.Hash, sid, sig string) bool {
	var want, got [sigLen]byte
	encodeMAC(want[:], mac, sid)
	copy(got[:], sig)
	return len(sig) == sigLen && hmac.Equal(want[:], got[:])
}

// encodeMAC writes the base64 (standard alphabet, no padding) MAC of sid into dst, which
// must hold sigLen bytes.
func encodeMAC(dst []byte, mac hash.Hash, sid string) {
	mac.Write([]byte(sid))
	var sum [sha256.Size]byte
	base64.RawStdEncoding.Encode(dst, mac.Sum(sum[:0]))
}

// CookiePair returns the Cookie header pair a browser would send for sid signed with secret:
// name + "=" + the signed value URL-encoded as the cookie package's serialize does
// (encodeURIComponent). It exists for tooling ("extauthz sessions create") and tests.
func CookiePair(name, sid, secret string) string {
	const unreserved = "-_.!~*'()"
	raw := Sign(sid, secret)
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('=')
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte(unreserved, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		const hexDigits = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
