package canon

import (
	"strconv"
	"strings"
)

// DefaultMaxTargetLength is the longest target Path accepts when Options.MaxTargetLength is 0.
const DefaultMaxTargetLength = 8192

// Options are the operator's choices for Path.
type Options struct {
	// Allow holds the opt-out classes the operator accepts; none by default.
	Allow Class
	// MaxTargetLength bounds the whole target, query included; 0 (or less) means
	// DefaultMaxTargetLength.
	MaxTargetLength int
}

// Path turns a raw request target (origin-form "/a/b?q", as received: not decoded) into the path
// policies match on. The package doc lists the rules; a refusal is an *Error.
func Path(target string, opts Options) (string, error) {
	limit := opts.MaxTargetLength
	if limit <= 0 {
		limit = DefaultMaxTargetLength
	}
	if target == "" || target[0] != '/' {
		return "", refuse(ReasonNotOriginForm, "the target does not start with /")
	}
	if len(target) > limit {
		return "", refuse(ReasonTooLong, "the target is "+strconv.Itoa(len(target))+" bytes, more than "+strconv.Itoa(limit))
	}
	q, plain, err := scan(target)
	if err != nil {
		return "", err
	}
	if plain {
		return target[:q], nil
	}
	return clean(target[:q], opts.Allow)
}

// scan checks what is refused in the whole target (fragments, control bytes), finds the end of the
// path and reports whether the path is plain: ASCII with none of "%", ".", ";", "\" or "//".
func scan(target string) (q int, plain bool, err error) {
	q = len(target)
	plain = true
	for i := 0; i < len(target); i++ {
		c := target[i]
		switch {
		case c < 0x21 || c == 0x7f:
			return 0, false, refuse(ReasonControlCharacter, "a control byte at byte "+strconv.Itoa(i))
		case c == '#':
			return 0, false, refuse(ReasonFragment, "a # at byte "+strconv.Itoa(i))
		case i >= q:
			// The query: only fragments and control bytes matter.
		case c == '?':
			q = i
		case c == '%' || c == '.' || c == ';' || c == '\\' || c >= 0x80 || (c == '/' && i > 0 && target[i-1] == '/'):
			plain = false
		}
	}
	return q, plain, nil
}

// clean applies every path rule to p, which starts with "/" and holds no control byte or "#".
func clean(p string, allow Class) (string, error) {
	w := writer{src: p}
	// Without an escape to decode or a "//" to merge, the result is p itself: skip the copy.
	if strings.IndexByte(p, '%') >= 0 || strings.Contains(p, "//") {
		w.buf = make([]byte, 0, len(p))
		w.build = true
	}
	seg := 0 // where the current segment starts in the result
	for i := 0; i < len(p); {
		c := p[i]
		switch {
		case c == '/':
			if w.dotSegment(seg) {
				return "", refuse(ReasonDotSegment, "a dot segment ends at byte "+strconv.Itoa(i))
			}
			if w.n > 0 && w.last() == '/' {
				if !allow.Has(EmptySegments) {
					return "", refuse(ReasonEmptySegments, "an empty segment at byte "+strconv.Itoa(i))
				}
				i++
				continue
			}
			w.byte('/')
			seg = w.n
			i++
		case c == '\\':
			return "", refuse(ReasonBackslash, "a \\ at byte "+strconv.Itoa(i))
		case c == ';':
			if !allow.Has(Semicolon) {
				return "", refuse(ReasonSemicolon, "a ; at byte "+strconv.Itoa(i))
			}
			w.byte(c)
			i++
		case c >= 0x80:
			if !allow.Has(NonASCII) {
				return "", refuse(ReasonNonASCII, "a byte >= 0x80 at byte "+strconv.Itoa(i))
			}
			w.byte(c)
			i++
		case c == '%' && i+2 < len(p) && p[i+1] == '2' && p[i+2] == '0':
			// A space inside a segment ("/files/my%20doc") is common and reads alike
			// everywhere; one that begins or ends a segment may be trimmed by some servers,
			// which would turn "/admin%20" into "/admin".
			if w.n == seg || i+3 == len(p) || p[i+3] == '/' {
				return "", refuse(ReasonEncodedControl, "an escaped space begins or ends a segment at byte "+strconv.Itoa(i))
			}
			w.upperEscape(' ')
			i += 3
		case c == '%':
			if err := w.escape(p, i, allow); err != nil {
				return "", err
			}
			i += 3
		default:
			w.byte(c)
			i++
		}
	}
	if w.dotSegment(seg) {
		return "", refuse(ReasonDotSegment, "the last segment is a dot segment")
	}
	if !w.build {
		return p, nil
	}
	return string(w.buf), nil
}

// escape decodes or keeps the escape at p[i].
func (w *writer) escape(p string, i int, allow Class) error {
	if i+2 >= len(p) || unhex(p[i+1]) < 0 || unhex(p[i+2]) < 0 {
		return refuse(ReasonBadEscape, "a % without two hex digits at byte "+strconv.Itoa(i))
	}
	v := byte(unhex(p[i+1])<<4 | unhex(p[i+2]))
	at := strconv.Itoa(i)
	switch {
	case v < 0x21 || v == 0x7f:
		return refuse(ReasonEncodedControl, "an escaped control byte at byte "+at)
	case v == '/' || v == '\\':
		if !allow.Has(EncodedSlash) {
			return refuse(ReasonEncodedSlash, "an escaped / or \\ at byte "+at)
		}
		w.upperEscape(v)
	case v == '.':
		if !allow.Has(EncodedDot) {
			return refuse(ReasonEncodedDot, "an escaped . at byte "+at)
		}
		w.byte('.')
	case v == '%':
		if !allow.Has(EncodedPercent) {
			return refuse(ReasonEncodedPercent, "an escaped % at byte "+at)
		}
		w.upperEscape(v)
	case v == ';':
		// An escaped ';' is a path parameter to servers that decode before they split.
		if !allow.Has(Semicolon) {
			return refuse(ReasonSemicolon, "an escaped ; at byte "+at)
		}
		w.byte(';')
	case v == '?' || v == '#':
		// Decoded, they would end the path for whoever reads the result next.
		w.upperEscape(v)
	default:
		w.byte(v)
	}
	return nil
}

// writer builds the result. When build is false the result is known to equal the source, so only
// the length n is tracked and segments are read from the source.
type writer struct {
	src   string
	buf   []byte
	build bool
	n     int
}

func (w *writer) byte(c byte) {
	if w.build {
		w.buf = append(w.buf, c)
	}
	w.n++
}

func (w *writer) upperEscape(v byte) {
	const hex = "0123456789ABCDEF"
	w.byte('%')
	w.byte(hex[v>>4])
	w.byte(hex[v&0xf])
}

func (w *writer) last() byte {
	if w.build {
		return w.buf[w.n-1]
	}
	return w.src[w.n-1]
}

// dotSegment reports whether the result from seg to its end is "." or "..", ignoring ";params"
// (which Tomcat and Spring strip before resolving dot segments).
func (w *writer) dotSegment(seg int) bool {
	if w.build {
		return isDotSegment(w.buf[seg:w.n])
	}
	return isDotSegment(w.src[seg:w.n])
}

func isDotSegment[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == ';' {
			s = s[:i]
			break
		}
	}
	return len(s) == 1 && s[0] == '.' || len(s) == 2 && s[0] == '.' && s[1] == '.'
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}
