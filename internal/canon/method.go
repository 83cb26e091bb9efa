package canon

// Method checks an HTTP method: a non-empty RFC 9110 token without lower-case letters, since
// methods are case-sensitive and a router that upper-cases "get" would read another method than a
// policy written for "GET". It returns m unchanged or refuses it (bad_method).
func Method(m string) (string, error) {
	if m == "" {
		return "", refuse(ReasonBadMethod, "an empty method")
	}
	for i := 0; i < len(m); i++ {
		if !methodByte(m[i]) {
			return "", refuse(ReasonBadMethod, "a method byte that is not an upper-case token character")
		}
	}
	return m, nil
}

// methodByte reports whether c is an RFC 9110 tchar other than a lower-case letter.
func methodByte(c byte) bool {
	switch {
	case 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}
