package sessions

import (
	"strings"
	"unicode/utf8"
)

// CookieValue returns the value of the first cookie called name in a Cookie header, parsed
// as the cookie npm package (0.7) parses it for express-session:
//
//   - the header is a list of pairs separated by ";"; a pair without "=" is skipped and the
//     pairs after it still count;
//   - a pair's name is the text before its first "=", its value the text after it, both with
//     spaces and tabs (only those) trimmed from either end;
//   - only the first pair with a given name counts, even when its value is empty;
//   - a value that starts and ends with a double quote loses those two quotes;
//   - a value containing "%" is decoded like decodeURIComponent: every %XX, with runs of
//     escapes that must form valid UTF-8; "+" stays "+". When decoding fails the value is
//     returned as it was, quotes already removed, which is what the cookie package does.
//
// ok is false when no pair is called name. An empty name never matches.
func CookieValue(header, name string) (value string, ok bool) {
	if name == "" {
		return "", false
	}
	for rest := header; ; {
		pair, tail, more := strings.Cut(rest, ";")
		if k, v, hasEq := strings.Cut(pair, "="); hasEq && trimSpaceTab(k) == name {
			return cookieDecode(unquote(trimSpaceTab(v))), true
		}
		if !more {
			return "", false
		}
		rest = tail
	}
}

// trimSpaceTab trims the two characters the cookie package trims. strings.TrimSpace would
// also drop CR, LF, VT, FF and Unicode spaces, which the Node side keeps.
func trimSpaceTab(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// unquote removes one pair of surrounding double quotes. A value that is a lone quote
// becomes empty: the cookie package checks the first and the last character, which are then
// the same one, and slices the empty range between them.
func unquote(v string) string {
	if len(v) > 0 && v[0] == '"' && v[len(v)-1] == '"' {
		if len(v) == 1 {
			return ""
		}
		return v[1 : len(v)-1]
	}
	return v
}

// cookieDecode returns v decoded like the cookie package's decode, or v itself when it has
// no "%" or does not decode.
func cookieDecode(v string) string {
	if strings.IndexByte(v, '%') < 0 {
		return v
	}
	if d, ok := decodeURIComponent(v); ok {
		return d
	}
	return v
}

// decodeURIComponent decodes every %XX in s. It fails where JavaScript's decodeURIComponent
// throws a URIError: a "%" without two hex digits after it, or escaped bytes that are not
// valid UTF-8. JavaScript decodes one escaped character at a time, so a multi-byte sequence
// must be escaped in full and cannot borrow bytes from literal text; checking each maximal
// run of consecutive escapes with utf8.Valid is therefore the same test (utf8.Valid also
// rejects overlong forms, surrogates and code points above U+10FFFF, as the ECMAScript
// algorithm does).
func decodeURIComponent(s string) (string, bool) {
	buf := make([]byte, 0, len(s))
	run := -1 // start in buf of the current run of escaped bytes, -1 outside a run
	for i := 0; i < len(s); {
		if s[i] != '%' {
			if run >= 0 && !utf8.Valid(buf[run:]) {
				return "", false
			}
			run = -1
			buf = append(buf, s[i])
			i++
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		if run < 0 {
			run = len(buf)
		}
		buf = append(buf, hi<<4|lo)
		i += 3
	}
	if run >= 0 && !utf8.Valid(buf[run:]) {
		return "", false
	}
	return string(buf), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
