package apikeys

import "strings"

// FromHeaders returns the first candidate key found under names, in order, and the header it
// came from. headers maps lower-case header names to values; names are lower-cased before the
// lookup. For "authorization" only "Bearer <key>" counts (the scheme in any case, then one or
// more spaces), so that Basic credentials or a session token in another scheme are skipped
// and the next name is tried; any other header counts with its whole value, trimmed. The
// candidate is not checked: pass it to Lookup, which rejects garbage without a Redis call.
func FromHeaders(headers map[string]string, names []string) (key, header string, ok bool) {
	for _, name := range names {
		name = strings.ToLower(name)
		v, found := headers[name]
		if !found {
			continue
		}
		if name == "authorization" {
			v, found = bearer(v)
			if !found {
				continue
			}
		}
		v = strings.Trim(v, " \t")
		if v == "" {
			continue
		}
		return v, name, true
	}
	return "", "", false
}

// bearer returns the credentials of an RFC 6750 "Bearer" authorization value. A credential
// with whitespace inside is not a token, so it is refused rather than cut at the first blank.
func bearer(v string) (string, bool) {
	const scheme = "bearer"
	v = strings.Trim(v, " \t")
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) || v[len(scheme)] != ' ' {
		return "", false
	}
	tok := strings.TrimLeft(v[len(scheme):], " ")
	if tok == "" || strings.ContainsAny(tok, " \t") {
		return "", false
	}
	return tok, true
}
