package config

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"unicode"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisurl"
)

// The accepted values of the enumerated settings.
var (
	responseHeaderFormats = []string{"draft-6", "draft-7", "draft-8", "legacy", "none"}
	logLevels             = []string{"debug", "info", "warn", "error"}
	logFormats            = []string{"json", "console"}
)

// Validate checks every field and the fields against each other and returns every problem
// joined (each a *FieldError), or nil. It is pure: it opens no file and resolves no name, so
// a missing TLS file is left for the Redis client builder to report.
func (c *Config) Validate() error { return join(c.check()) }

// check returns the problems Validate joins.
func (c *Config) check() []*FieldError {
	k := checker{c: c}
	k.listen()
	k.redis()
	k.oneOf("response_headers", c.ResponseHeaders, responseHeaderFormats)
	k.rateLimit()
	k.oneOf("log.level", c.Log.Level, logLevels)
	k.oneOf("log.format", c.Log.Format, logFormats)
	if d := c.Log.DecisionSample; d < 0 || d > 1 {
		k.fail("log.decision_sample", d, "must be from 0 to 1, got %v", d)
	}
	k.nonNegative("shutdown.grace", c.Shutdown.Grace)
	k.nonNegative("shutdown.drain", c.Shutdown.Drain)
	k.tracing()
	k.sessions()
	k.apiKeys()
	k.limitsSection()
	k.policies()
	k.cacheSection()
	k.server()
	k.request()
	return k.errs
}

// checker collects problems, pinning each to where its value came from.
type checker struct {
	c    *Config
	errs []*FieldError
}

// fail records a problem with the value val at path. The problem carries the file and line,
// or the environment variable, that set the field, but only while the field still holds the
// value that source gave it: a value changed since (by a flag, say) came from elsewhere.
func (k *checker) fail(path string, val any, format string, args ...any) {
	e := &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
	if o, ok := k.c.origins[path]; ok && reflect.DeepEqual(o.val, val) {
		if o.env != "" {
			e.Msg += " (set by " + o.env + ")"
		} else {
			e.File, e.Line = o.file, o.line
		}
	} else if !ok {
		// A field the file left out (a policy without a name) is pinned on the nearest
		// enclosing value the file did write.
		if o, found := k.nearestParent(path); found && o.env == "" {
			e.File, e.Line = o.file, o.line
		}
	}
	k.errs = append(k.errs, e)
}

// nearestParent returns the origin of the closest enclosing path of path ("a.b[2].c" has
// "a.b[2]", "a.b" and "a").
func (k *checker) nearestParent(path string) (origin, bool) {
	for {
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return origin{}, false
		}
		path = path[:i]
		if o, ok := k.c.origins[path]; ok {
			return o, true
		}
	}
}

func (k *checker) oneOf(path, val string, allowed []string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	msg := fmt.Sprintf("%q is not one of %s", val, strings.Join(allowed, ", "))
	if s := suggest(val, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	k.fail(path, val, "%s", msg)
}

func (k *checker) nonNegative(path string, d Duration) {
	if d < 0 {
		k.fail(path, d, "must be >= 0, got %s", d)
	}
}

// listen checks each address and that no two of them would bind the same socket. Port 0
// asks the kernel for a free port, so it never clashes.
func (k *checker) listen() {
	type bound struct {
		path, host string
		port       int
	}
	var seen []bound
	for _, a := range []struct{ path, val string }{
		{"listen.grpc", k.c.Listen.GRPC},
		{"listen.http", k.c.Listen.HTTP},
		{"listen.admin", k.c.Listen.Admin},
	} {
		host, port, err := splitAddr(a.val)
		if err != nil {
			k.fail(a.path, a.val, "%v", err)
			continue
		}
		if port == 0 {
			continue
		}
		for _, b := range seen {
			if b.port == port && (b.host == host || wildcard(b.host) || wildcard(host)) {
				k.fail(a.path, a.val, "%q clashes with %s (%s)", a.val, b.path, net.JoinHostPort(b.host, strconv.Itoa(b.port)))
				break
			}
		}
		seen = append(seen, bound{a.path, host, port})
	}
}

// splitAddr checks a listen address: host:port, where host is empty (every interface), an IP
// (IPv6 in brackets) or a host name, and port a number from 0 to 65535.
func splitAddr(addr string) (host string, port int, err error) {
	if addr == "" {
		return "", 0, errors.New("must be set, as host:port")
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port (IPv6 hosts go in brackets: [::1]:9001)", addr)
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	if !validHost(host) {
		return "", 0, fmt.Errorf("%q: %q is neither an IP address nor a host name", addr, host)
	}
	return host, int(n), nil
}

func validHost(h string) bool {
	if h == "" {
		return true
	}
	ip, _, _ := strings.Cut(h, "%") // an IPv6 zone such as %eth0
	if net.ParseIP(ip) != nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

// wildcard reports whether a listen host binds every interface, and so clashes with any other
// host on the same port.
func wildcard(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

func (k *checker) redis() {
	r := k.c.Redis
	tls, urlOK := false, true
	if r.URL != "" {
		tls, urlOK = k.redisURL(r.URL)
	}
	k.embeddedAddr()
	switch {
	case r.Timeout <= 0:
		k.fail("redis.timeout", r.Timeout, "must be > 0, got %s", r.Timeout)
	case r.Timeout.D() > MaxRedisTimeout:
		k.fail("redis.timeout", r.Timeout, "must be at most %s, got %s", Duration(MaxRedisTimeout), r.Timeout)
	}
	if r.DialTimeout <= 0 {
		k.fail("redis.dial_timeout", r.DialTimeout, "must be > 0, got %s", r.DialTimeout)
	}
	if r.PoolSize < 0 {
		k.fail("redis.pool_size", r.PoolSize, "must be >= 0 (it is no longer used), got %d", r.PoolSize)
	}
	if r.PipelineSlots < 0 || r.PipelineSlots > MaxPipelineSlots {
		k.fail("redis.pipeline_slots", r.PipelineSlots, "must be 0..%d connections per node (0 means 1), got %d", MaxPipelineSlots, r.PipelineSlots)
	}
	if r.MaxInflight < 1 {
		k.fail("redis.max_inflight", r.MaxInflight, "must be >= 1, got %d", r.MaxInflight)
	}
	if r.PipelineMax < 1 {
		k.fail("redis.pipeline_max", r.PipelineMax, "must be >= 1, got %d", r.PipelineMax)
	}
	if r.MinIdleConns < 0 {
		k.fail("redis.min_idle_conns", r.MinIdleConns, "must be >= 0, got %d", r.MinIdleConns)
	}
	// An invalid URL has been reported already; guessing its scheme would only add noise.
	if r.TLS != (TLS{}) && urlOK && !tls {
		msg := "tls options need a rediss:// url (or rediss-sentinel://, rediss-cluster://, tls=true)"
		if r.URL == "" {
			msg += " (redis.url is empty, which selects the embedded store)"
		}
		k.fail("redis.tls", r.TLS, "%s", msg)
	}
	// The problem is pinned on the field that is set, since only that one has a line.
	switch t := r.TLS; {
	case t.CertFile != "" && t.KeyFile == "":
		k.fail("redis.tls.cert_file", t.CertFile, "needs redis.tls.key_file too: a client certificate goes with its key")
	case t.KeyFile != "" && t.CertFile == "":
		k.fail("redis.tls.key_file", t.KeyFile, "needs redis.tls.cert_file too: a client key goes with its certificate")
	}
}

// embeddedAddr checks redis.embedded_addr with the parser the store itself runs, even when
// redis.url is set (a file that only works until someone comments the url out is not valid),
// and, when the embedded store is in use on a fixed port, that no listener wants that port.
func (k *checker) embeddedAddr() {
	r := k.c.Redis
	ap, err := redisurl.ParseEmbeddedAddr(r.EmbeddedAddr)
	if err != nil {
		k.fail("redis.embedded_addr", r.EmbeddedAddr, "%v", err)
		return
	}
	if r.URL != "" || ap.Port() == 0 {
		return
	}
	for _, l := range []struct{ path, val string }{
		{"listen.grpc", k.c.Listen.GRPC},
		{"listen.http", k.c.Listen.HTTP},
		{"listen.admin", k.c.Listen.Admin},
	} {
		host, port, err := splitAddr(l.val)
		if err == nil && port == int(ap.Port()) && (wildcard(host) || net.ParseIP(host).Equal(net.IP(ap.Addr().AsSlice()))) {
			k.fail("redis.embedded_addr", r.EmbeddedAddr, "%q clashes with %s (%s)", r.EmbeddedAddr, l.path, l.val)
		}
	}
}

// redisURL checks raw with redisurl.Parse, the parser the Redis client builder runs, and
// reports whether it names a TLS connection. Its messages never quote a credential.
func (k *checker) redisURL(raw string) (tls, ok bool) {
	u, err := redisurl.Parse(raw)
	if err != nil {
		msg := err.Error()
		if ue, isURLErr := errors.AsType[*redisurl.Error](err); isURLErr {
			msg = ue.Msg
		}
		k.fail("redis.url", raw, "%s", msg)
		return false, false
	}
	return u.TLS, true
}

func (k *checker) rateLimit() {
	if n := k.c.RateLimit.OverLimitCacheSize; n < 0 {
		k.fail("ratelimit.over_limit_cache_size", n, "must be >= 0 (0 turns the cache off), got %d", n)
	}
	if n := k.c.RateLimit.MaxDescriptors; n < 1 || n > rls.MaxDescriptorsCap {
		k.fail("ratelimit.max_descriptors", n, "must be from 1 to %d, got %d", rls.MaxDescriptorsCap, n)
	}
	if n := k.c.RateLimit.MaxEntries; n < 1 || n > rls.MaxEntriesCap {
		k.fail("ratelimit.max_entries", n, "must be from 1 to %d, got %d", rls.MaxEntriesCap, n)
	}
	if n := k.c.RateLimit.MaxHitsAddend; n < 1 || n > ratelimit.MaxHits {
		k.fail("ratelimit.max_hits_addend", n, "must be from 1 to %d (2^52, where counts stop being exact), got %d", int64(ratelimit.MaxHits), n)
	}
	p := k.c.RateLimit.Prefix
	switch {
	case p == "":
		k.fail("ratelimit.prefix", p, "must not be empty: it keeps RLS counters apart from other keys")
	case strings.ContainsAny(p, "{}"):
		k.fail("ratelimit.prefix", p, "%q must not contain { or }: they would pick the keys' Redis Cluster hash slot", p)
	case strings.IndexFunc(p, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		k.fail("ratelimit.prefix", p, "%q must not contain whitespace or control characters", p)
	}
}
