package redisconn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// defaultPort is the port a redis:// or rediss:// URL without one means.
const defaultPort = "6379"

// endpoint is what a Redis URL names, with the credentials kept apart so that nothing that
// prints an endpoint can print them.
type endpoint struct {
	// scheme is redis, rediss or unix. Sentinel and Cluster schemes will add their own values
	// and fill addrs with more than one address.
	scheme string
	// addrs holds host:port pairs, or a single socket path for unix.
	addrs []string
	// db is the logical database selected on every new connection.
	db       int
	username string
	password string
}

// describe renders the endpoint as a URL without credentials, for logs and errors.
func (e endpoint) describe() string {
	if e.scheme == "unix" {
		return fmt.Sprintf("unix://%s?db=%d", e.addrs[0], e.db)
	}
	return fmt.Sprintf("%s://%s/%d", e.scheme, strings.Join(e.addrs, ","), e.db)
}

// parseURL turns a redis://, rediss:// or unix:// URL into an endpoint. Each scheme is one
// case of the switch, so redis-sentinel:// and redis-cluster:// can be added as cases that
// return several addresses without touching the callers of New.
//
// Errors never repeat the password: the credentials are cut out of the URL before net/url
// sees it, because url.Parse quotes the whole input in its errors.
func parseURL(raw string) (endpoint, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || scheme == "" {
		return endpoint{}, errors.New("redisconn: url needs a scheme: redis://, rediss:// or unix://")
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "redis", "rediss", "unix":
	case "redis-sentinel", "redis-cluster":
		return endpoint{}, fmt.Errorf("redisconn: %s:// urls are not supported yet", scheme)
	default:
		// The scheme is echoed only when it is short and plain, so that a URL pasted without its
		// scheme ("user:pass@host") cannot put a password into the message.
		if len(scheme) > 16 || strings.ContainsAny(scheme, ":@/") {
			return endpoint{}, errors.New("redisconn: url has an unsupported scheme: use redis://, rediss:// or unix://")
		}
		return endpoint{}, fmt.Errorf("redisconn: url scheme %q is not supported: use redis://, rediss:// or unix://", scheme)
	}

	// The authority ends at the first '/', '?' or '#', exactly as net/url decides it.
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	var ep endpoint
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		var err error
		if ep.username, ep.password, err = parseUserinfo(authority[:at]); err != nil {
			return endpoint{}, err
		}
		authority = authority[at+1:]
	}
	// An '@' after the authority almost always means a password with an unescaped '/', '?' or
	// '#' in it, so part of the password now sits in the path. Say so without echoing anything.
	if strings.Contains(tail, "@") {
		return endpoint{}, errors.New("redisconn: url has '@' after the host: percent-encode '/', '?', '#' and '@' inside credentials")
	}
	u, err := url.Parse(scheme + "://" + authority + tail)
	if err != nil {
		// Safe to print: the credentials are no longer part of the parsed string.
		return endpoint{}, fmt.Errorf("redisconn: invalid url: %w", err)
	}
	if u.Fragment != "" {
		return endpoint{}, errors.New("redisconn: url must not have a #fragment")
	}
	ep.scheme = scheme
	if scheme == "unix" {
		err = ep.parseUnix(u)
	} else {
		err = ep.parseTCP(u)
	}
	if err != nil {
		return endpoint{}, err
	}
	return ep, nil
}

// parseUserinfo splits and unescapes "user:password". Its errors say what is wrong but never
// quote the input, which is the secret itself.
func parseUserinfo(s string) (user, pass string, err error) {
	rawUser, rawPass, _ := strings.Cut(s, ":")
	if user, err = url.PathUnescape(rawUser); err != nil {
		return "", "", errors.New("redisconn: url username has an invalid %-escape (not shown)")
	}
	if pass, err = url.PathUnescape(rawPass); err != nil {
		return "", "", errors.New("redisconn: url password has an invalid %-escape (not shown)")
	}
	return user, pass, nil
}

// parseTCP reads host, port and the database number from redis:// and rediss:// URLs.
func (e *endpoint) parseTCP(u *url.URL) error {
	host := u.Hostname()
	if host == "" {
		return errors.New("redisconn: url has no host")
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("redisconn: url port %q is not in 1-65535", port)
	}
	if len(u.Query()) > 0 {
		return fmt.Errorf("redisconn: url parameters %s are not supported: set client options in the config file", queryNames(u))
	}
	if p := strings.TrimPrefix(u.Path, "/"); p != "" {
		db, err := parseDB(p)
		if err != nil {
			return err
		}
		e.db = db
	}
	e.addrs = []string{net.JoinHostPort(host, port)}
	return nil
}

// parseUnix reads the socket path and the db query parameter from unix:///path?db=N.
func (e *endpoint) parseUnix(u *url.URL) error {
	if u.Host != "" {
		// The host is not echoed: with a mangled URL it may be part of a password.
		return errors.New("redisconn: unix url must not name a host: write unix:///absolute/path.sock")
	}
	if u.Path == "" || u.Path == "/" {
		return errors.New("redisconn: unix url has no socket path")
	}
	q := u.Query()
	if db := q.Get("db"); db != "" {
		n, err := parseDB(db)
		if err != nil {
			return err
		}
		e.db = n
	}
	q.Del("db")
	if len(q) > 0 {
		return fmt.Errorf("redisconn: url parameters %s are not supported: only db is", queryNames(&url.URL{RawQuery: q.Encode()}))
	}
	e.addrs = []string{u.Path}
	return nil
}

// parseDB accepts a non-negative decimal database number.
func parseDB(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("redisconn: url database %q is not a non-negative number", s)
	}
	return n, nil
}

// queryNames lists the parameter names of u, never their values, which may be secrets.
func queryNames(u *url.URL) string {
	var names []string
	for k := range u.Query() {
		names = append(names, strconv.Quote(k))
	}
	// Sorted, so that the message is the same on every run.
	slices.Sort(names)
	return strings.Join(names, ", ")
}
