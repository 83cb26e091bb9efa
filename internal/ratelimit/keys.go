package ratelimit

// hexDigits are upper case so that one byte has exactly one escaped spelling, which keeps
// escaping injective and the keys it builds comparable byte for byte.
const hexDigits = "0123456789ABCDEF"

// AppendEscaped appends s to dst with '%', '{', '}', ':', '_', '.', space, control bytes
// (below 0x20 and 0x7F) and non-ASCII bytes (0x80 and above) written as %XX in upper-case
// hex. Callers join escaped values with the unescaped separators ':', '_' and '.', so
// user-controlled values can neither collide across separators (("a_b", "c") and
// ("a", "b_c") stay apart) nor contain '{' or '}', which would move a key's Redis Cluster
// hash tag. It allocates nothing when dst has room for the result.
func AppendEscaped(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if mustEscape(c) {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&0x0F])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// EscapedLen is the length AppendEscaped adds for s, so that a caller can size a buffer
// once instead of letting append grow it.
func EscapedLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		if mustEscape(s[i]) {
			n += 2
		}
	}
	return n
}

// mustEscape reports whether c is a separator, the escape byte itself, or a byte that is
// awkward in logs and redis-cli (space, control, non-ASCII).
func mustEscape(c byte) bool {
	switch c {
	case '%', '{', '}', ':', '_', '.':
		return true
	}
	return c <= ' ' || c >= 0x7F
}
