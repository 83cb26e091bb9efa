package server

import (
	"net/http"
	"os"
	"strings"
)

// masked replaces a secret in the command line /debug/pprof/cmdline shows.
const masked = "***"

// secretFlagWords mark a flag whose value is a secret, wherever they appear in its name
// (--redis-password, --session-secret, --token-file is masked too: better one path hidden
// than one secret shown).
var secretFlagWords = []string{"password", "passwd", "secret", "token", "credential"}

// redactArgs returns args with every credential masked: the password of any URL
// (redis://user:***@host, or ***@host when the user info is a single word) and the value
// of any flag whose name says it is a secret, given as --flag=value or --flag value.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	maskNext := false
	for i, a := range args {
		if maskNext {
			out[i], maskNext = masked, false
			continue
		}
		if name, val, ok := flagParts(a); ok && secretFlag(name) {
			if val == nil {
				out[i], maskNext = a, true
			} else {
				out[i] = a[:len(a)-len(*val)] + masked
			}
			continue
		}
		out[i] = redactQuery(redactURLs(a))
	}
	return out
}

// redactQuery masks the value of every query parameter whose name says it is a secret
// (?sentinel_password=..., &token=...), wherever a '?' or '&' starts one, up to the next '&'
// or white space.
func redactQuery(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		b.WriteByte(c)
		if c != '?' && c != '&' {
			continue
		}
		rest := s[i+1:]
		eq := strings.IndexAny(rest, "=& \t\n")
		if eq < 0 || rest[eq] != '=' || !secretFlag(rest[:eq]) {
			continue
		}
		end := strings.IndexAny(rest[eq+1:], "& \t\n")
		if end < 0 {
			end = len(rest) - eq - 1
		}
		b.WriteString(rest[:eq+1] + masked)
		i += eq + 1 + end
	}
	return b.String()
}

// flagParts splits "-name", "--name" or "--name=value". val is nil when the arg has no '='.
func flagParts(a string) (name string, val *string, ok bool) {
	if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
		return "", nil, false
	}
	name = strings.TrimLeft(a, "-")
	if n, v, found := strings.Cut(name, "="); found {
		return n, &v, true
	}
	return name, nil, true
}

func secretFlag(name string) bool {
	name = strings.ToLower(name)
	for _, w := range secretFlagWords {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// redactURLs masks the user info of every scheme://user:pass@host in s. The user info is
// taken to end at the last '@' before the next space rather than at the authority's end, so
// that a password with an unescaped '/', '?' or '#' (which net/url would read as part of the
// path) is masked too; a path holding an '@' is masked with it, which errs on the safe side.
func redactURLs(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, " \t\n")
		if end < 0 {
			end = len(s)
		}
		at := strings.LastIndexByte(s[:end], '@')
		if at < 0 {
			continue
		}
		user, _, hasPass := strings.Cut(s[:at], ":")
		if hasPass && !strings.ContainsAny(user, "/?#") {
			b.WriteString(user + ":")
		}
		b.WriteString(masked)
		s = s[at:]
	}
}

// cmdline serves /debug/pprof/cmdline as net/http/pprof does (arguments separated by NUL),
// with credentials masked.
func cmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(strings.Join(redactArgs(os.Args), "\x00")))
}
