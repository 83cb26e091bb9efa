package redisurl

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// schemeList is what a message offers when the scheme is missing or unknown.
const schemeList = "redis://, rediss://, unix://, redis-sentinel://, rediss-sentinel://, redis-cluster:// or rediss-cluster://"

// Parse reads a Redis URL:
//
//	redis://[user:password@]host[:port][/db]                  one server (rediss:// for TLS)
//	unix://[user:password@]/path/to/redis.sock[?db=N]          one server over a unix socket
//	redis-sentinel://[user:password@]host[:port],host[:port],.../master-name[/db]
//	    [?sentinel_username=...&sentinel_password=...&tls=true] (rediss-sentinel:// for TLS)
//	redis-cluster://[user:password@]host[:port],host[:port],...[/0][?tls=true]
//	    (rediss-cluster:// for TLS)
//
// The userinfo is for the data nodes; the sentinels have their own credentials in the query.
// A host without a port gets 6379 (26379 for a sentinel); IPv6 addresses go in brackets, a
// zone as %25 ([fe80::1%25eth0]). Credentials, the database, the master name and query values
// are percent-decoded ('+' means a space in a query value, as url.QueryEscape writes it).
// The scheme is case-insensitive; nothing else is accepted: no other query parameter, no
// #fragment, no db other than 0 for a cluster.
//
// Errors are *Error. They never repeat the userinfo or a query value: the userinfo is cut out
// before anything else is read, and no message quotes a host, a port or a value.
func Parse(raw string) (URL, error) {
	if raw == "" {
		return URL{}, fail("scheme", "is empty")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		if strings.HasPrefix(strings.ToLower(raw), "unix:") {
			return URL{}, fail("scheme", "needs unix:// and an absolute path, as in unix:///run/redis.sock")
		}
		return URL{}, fail("scheme", "needs a scheme: "+schemeList)
	}
	scheme = strings.ToLower(scheme)
	var u URL
	if u.Topology, u.TLS, ok = lookupScheme(scheme); !ok {
		// The scheme is echoed only when it is short and plain, so that a URL pasted without
		// its scheme ("user:pass@host") cannot put a password into the message.
		if !isName(scheme, 16) {
			return URL{}, fail("scheme", "has an unsupported scheme: use "+schemeList)
		}
		return URL{}, fail("scheme", fmt.Sprintf("scheme %q is not supported: use %s", scheme, schemeList))
	}
	if strings.IndexFunc(rest, isControl) >= 0 {
		return URL{}, fail("url", "has a control character: percent-encode it")
	}

	// The authority ends at the first '/', '?' or '#', as in net/url.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		var err error
		if u.Username, u.Password, err = parseUserinfo(authority[:at]); err != nil {
			return URL{}, err
		}
		authority = authority[at+1:]
	}
	// An '@' after the authority almost always means a password with an unescaped '/', '?' or
	// '#' in it, so part of the password now sits in the path. Say so without echoing anything.
	if strings.Contains(tail, "@") {
		return URL{}, fail("userinfo", "has '@' after the host: percent-encode '/', '?', '#' and '@' inside credentials")
	}
	if strings.Contains(tail, "#") {
		return URL{}, fail("fragment", "must not have a #fragment")
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	q, err := parseQuery(rawQuery)
	if err != nil {
		return URL{}, err
	}

	switch u.Topology {
	case Unix:
		err = u.parseUnix(authority, path, q)
	case Single:
		err = u.parseSingle(authority, path, q)
	case Sentinel:
		err = u.parseSentinel(authority, path, q)
	case Cluster:
		err = u.parseCluster(authority, path, q)
	}
	if err != nil {
		return URL{}, err
	}
	return u, nil
}

// lookupScheme maps a lower-case scheme to its topology and whether it means TLS.
func lookupScheme(s string) (t Topology, tls, ok bool) {
	switch s {
	case "redis":
		return Single, false, true
	case "rediss":
		return Single, true, true
	case "unix":
		return Unix, false, true
	case "redis-sentinel":
		return Sentinel, false, true
	case "rediss-sentinel":
		return Sentinel, true, true
	case "redis-cluster":
		return Cluster, false, true
	case "rediss-cluster":
		return Cluster, true, true
	}
	return 0, false, false
}

// parseUserinfo splits and unescapes "user:password". Its errors say what is wrong but never
// quote the input, which is the secret itself.
func parseUserinfo(s string) (user, pass string, err error) {
	rawUser, rawPass, _ := strings.Cut(s, ":")
	if user, err = url.PathUnescape(rawUser); err != nil {
		return "", "", fail("userinfo", "username has an invalid %-escape (not shown)")
	}
	if pass, err = url.PathUnescape(rawPass); err != nil {
		return "", "", fail("userinfo", "password has an invalid %-escape (not shown)")
	}
	return user, pass, nil
}

func (u *URL) parseSingle(authority, path string, q query) error {
	if err := q.only(u.Scheme(), nil, "set client options in the config file"); err != nil {
		return err
	}
	addrs, err := parseHosts(authority, DefaultPort)
	if err != nil {
		return err
	}
	if len(addrs) > 1 {
		return fail("host", fmt.Sprintf("names %d hosts: %s:// takes one; use redis-sentinel:// or redis-cluster:// for several", len(addrs), u.Scheme()))
	}
	u.Addrs = addrs
	if p := strings.TrimPrefix(path, "/"); p != "" {
		if u.DB, err = parseDB(p); err != nil {
			return err
		}
	}
	return nil
}

func (u *URL) parseUnix(authority, path string, q query) error {
	if authority != "" {
		// The host is not echoed: with a mangled URL it may be part of a password.
		return fail("host", "unix url must not name a host: the socket path must be absolute, as in unix:///run/redis.sock")
	}
	if err := q.only("unix", []string{"db"}, "only db is"); err != nil {
		return err
	}
	p, err := url.PathUnescape(path)
	switch {
	case err != nil:
		return fail("path", "socket path has an invalid %-escape")
	case p == "" || p == "/":
		return fail("path", "unix url has no socket path: write unix:///run/redis.sock")
	case strings.IndexFunc(p, isControl) >= 0:
		return fail("path", "socket path has a control character")
	}
	u.Addrs = []string{p}
	if v, ok := q["db"]; ok {
		if v == "" {
			return fail("db", "parameter \"db\" is empty: leave it out for database 0")
		}
		if u.DB, err = parseDB(v); err != nil {
			return err
		}
	}
	return nil
}

func (u *URL) parseSentinel(authority, path string, q query) error {
	if err := q.only(u.Scheme(), []string{"sentinel_password", "sentinel_username", "tls"}, "only sentinel_username, sentinel_password and tls are"); err != nil {
		return err
	}
	addrs, err := parseHosts(authority, DefaultSentinelPort)
	if err != nil {
		return err
	}
	u.Addrs = addrs
	master, db, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if master == "" {
		return fail("master name", "has no master name: write redis-sentinel://host:26379,host:26379/<master-name>[/<db>]")
	}
	if u.MasterName, err = url.PathUnescape(master); err != nil {
		return fail("master name", "master name has an invalid %-escape")
	}
	if strings.IndexFunc(u.MasterName, isSpaceOrControl) >= 0 {
		return fail("master name", "master name has a space or a control character")
	}
	if db != "" {
		if u.DB, err = parseDB(db); err != nil {
			return err
		}
	}
	u.SentinelUsername, u.SentinelPassword = q["sentinel_username"], q["sentinel_password"]
	return u.parseTLS(q)
}

func (u *URL) parseCluster(authority, path string, q query) error {
	if err := q.only(u.Scheme(), []string{"tls"}, "only tls is"); err != nil {
		return err
	}
	addrs, err := parseHosts(authority, DefaultPort)
	if err != nil {
		return err
	}
	u.Addrs = addrs
	if p := strings.TrimPrefix(path, "/"); p != "" {
		db, err := parseDB(p)
		if err != nil {
			return err
		}
		if db != 0 {
			return fail("db", "names database "+strconv.Itoa(db)+": a cluster has database 0 only, so leave the path out")
		}
	}
	return u.parseTLS(q)
}

// parseTLS reads the tls parameter of the sentinel and cluster forms, which means the same
// as their rediss- scheme.
func (u *URL) parseTLS(q query) error {
	v, ok := q["tls"]
	switch {
	case !ok:
	case v == "true":
		u.TLS = true
	case v == "false" && u.TLS:
		return fail("query", "parameter \"tls\" is false but the scheme is "+u.Scheme()+"://")
	case v == "false":
	default:
		return fail("query", "parameter \"tls\" must be true or false")
	}
	return nil
}

// parseDB accepts a non-negative decimal database number, percent-encoded or not. The text
// is quoted in the message: it comes from the path, where no credential can be once '@'
// has been ruled out there, and it is cut short.
func parseDB(s string) (int, error) {
	if v, err := url.PathUnescape(s); err == nil {
		s = v
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		if len(s) > 20 {
			s = s[:20] + "..."
		}
		return 0, fail("db", fmt.Sprintf("database %q is not a non-negative number", s))
	}
	return n, nil
}

// query holds the decoded parameters of a URL, each given once.
type query map[string]string

// parseQuery decodes raw ("a=1&b=2"). Messages quote a name only when it looks like one and
// never quote a value: sentinel_password is a secret.
func parseQuery(raw string) (query, error) {
	q := query{}
	for piece := range strings.SplitSeq(raw, "&") {
		if piece == "" {
			continue
		}
		rawKey, rawVal, _ := strings.Cut(piece, "=")
		k, err := url.QueryUnescape(rawKey)
		if err != nil {
			return nil, fail("query", "has a parameter name with an invalid %-escape")
		}
		v, err := url.QueryUnescape(rawVal)
		if err != nil {
			return nil, fail("query", fmt.Sprintf("parameter %s has a value with an invalid %%-escape (not shown)", quoteName(k)))
		}
		if _, dup := q[k]; dup {
			return nil, fail("query", fmt.Sprintf("parameter %s is given twice", quoteName(k)))
		}
		q[k] = v
	}
	return q, nil
}

// only returns an error naming every parameter of q not in allowed (all of them, sorted),
// with hint, and a pointer to the right form for db and tls on redis:// and rediss://.
func (q query) only(scheme string, allowed []string, hint string) error {
	var unknown []string
	for k := range q {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, quoteName(k))
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	// Sorted, so that the message is the same on every run.
	slices.Sort(unknown)
	unknown = slices.Compact(unknown)
	msg := "parameter " + unknown[0] + " is not supported"
	if len(unknown) > 1 {
		msg = "parameters " + strings.Join(unknown, ", ") + " are not supported"
	}
	msg += " by " + scheme + "://: " + hint
	if scheme == "redis" || scheme == "rediss" {
		if _, ok := q["db"]; ok {
			msg += "; put the database in the path, as in " + scheme + "://host:6379/2"
		}
		if _, ok := q["tls"]; ok {
			msg += "; use rediss:// for TLS"
		}
	}
	return fail("query", msg)
}

// quoteName quotes a parameter name when it is one that this package or some Redis client
// knows. Anything else may be a password pasted in the wrong place, so it is not shown.
func quoteName(k string) string {
	switch k {
	case "db", "tls", "sentinel_username", "sentinel_password",
		// Options of go-redis's, redis-py's and ioredis's URLs, and common guesses.
		"username", "user", "password", "protocol", "client_name", "max_retries",
		"min_retry_backoff", "max_retry_backoff", "timeout", "dial_timeout", "read_timeout",
		"write_timeout", "pool_fifo", "pool_size", "pool_timeout", "min_idle_conns",
		"max_idle_conns", "max_active_conns", "conn_max_idle_time", "conn_max_lifetime",
		"skip_verify", "ssl", "ssl_cert_reqs", "socket_timeout", "socket_connect_timeout",
		"health_check_interval", "master_name", "sentinel_master_id", "addr", "route_by_latency",
		"route_randomly", "read_only":
		return strconv.Quote(k)
	}
	return "(a name not shown)"
}

// isName reports whether s is 1 to max characters of ASCII letters, digits, '_', '-', '.' or
// '+': safe to repeat in a message.
func isName(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range []byte(s) {
		if !isAlnum(c) && !strings.ContainsRune("_-.+", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

func fail(part, msg string) *Error { return &Error{Part: part, Msg: msg} }
