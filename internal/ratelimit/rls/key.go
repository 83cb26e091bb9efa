package rls

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// maxKeyTail is the longest escaped descriptor (its ".key_value" entries) a counter key
// spells out. A longer one (a long path or header value) is hashed, so that a request's
// values cannot make Redis keys, scripts or over-limit cache entries of any size.
const maxKeyTail = 256

// hashedTag starts a hashed descriptor in a key. Escaped text never holds it: escaping writes
// '%' only as %25 and follows every '%' with two upper-case hex digits, and 'H' is not one,
// so a hashed descriptor never shares a key with a spelled-out one.
const hashedTag = "%H"

// counterKey is prefix + "{" + domain and every entry, escaped + "}". The whole descriptor is
// the Cluster hash tag, and escaping keeps ("a_b", "c") apart from ("a", "b_c") and keeps
// braces in values from moving the tag. When the escaped entries are longer than
// maxKeyTail they become "." + hashedTag + the hex SHA-256 of their escaped form. shared, from
// MatchShared, replaces the values of the entries a share_threshold wildcard matched by its
// pattern, so all of them count on one key (and, on a Cluster, in one slot).
func (s *Service) counterKey(domain string, entries []*ratelimitv3.RateLimitDescriptor_Entry, shared []string) string {
	tail := 0
	for i, e := range entries {
		tail += 2 + ratelimit.EscapedLen(e.GetKey()) + ratelimit.EscapedLen(entryValue(e, shared, i))
	}
	n := len(s.prefix) + ratelimit.EscapedLen(domain) + 2
	if tail <= maxKeyTail {
		n += tail
	} else {
		n += 1 + len(hashedTag) + 2*sha256.Size
	}
	b := make([]byte, 0, n+16)
	b = append(b, s.prefix...)
	b = append(b, '{')
	b = ratelimit.AppendEscaped(b, domain)
	if tail <= maxKeyTail {
		b = appendEntries(b, entries, shared)
	} else {
		sum := sha256.Sum256(appendEntries(make([]byte, 0, tail), entries, shared))
		b = append(b, '.')
		b = append(b, hashedTag...)
		b = hex.AppendEncode(b, sum[:])
	}
	b = append(b, '}')
	return string(b)
}

// appendEntries appends ".key_value" for every entry, both escaped.
func appendEntries(b []byte, entries []*ratelimitv3.RateLimitDescriptor_Entry, shared []string) []byte {
	for i, e := range entries {
		b = append(b, '.')
		b = ratelimit.AppendEscaped(b, e.GetKey())
		b = append(b, '_')
		b = ratelimit.AppendEscaped(b, entryValue(e, shared, i))
	}
	return b
}

// entryValue is the value entry i spells in its counter key: a share_threshold pattern when
// one matched it, its own value otherwise. A pattern holds a '*', which no shared key can be
// confused with: the request value "files/*" matches that descriptor exactly and counts on
// the same key, which is the same counter by the reference's meaning too.
func entryValue(e *ratelimitv3.RateLimitDescriptor_Entry, shared []string, i int) string {
	if shared != nil && shared[i] != "" {
		return shared[i]
	}
	return e.GetValue()
}

// cacheKey names a counter in one window size: the same descriptor under an override with
// another unit is another counter.
func cacheKey(key string, window int64) string {
	return key + ":" + strconv.FormatInt(window, 10)
}
