package config

import "time"

// The defaults of the authorization sections.
const (
	DefaultSessionCookie  = "connect.sid"
	DefaultSessionPrefix  = "sess:"
	DefaultSessionSubject = "userId"
	DefaultTouchTTL       = 24 * time.Hour
	DefaultTouchEvery     = time.Minute
	DefaultAPIKeyPrefix   = "apikey:"
	DefaultAPIKeyToken    = "eak_"
	DefaultLimitPrefix    = "rl:"
	// DefaultLimitLocalCacheSize bounds each replica's table of policy limit keys (the
	// over-limit cache and the local counts used when Redis fails), about 200 bytes an entry.
	DefaultLimitLocalCacheSize = 100000
	// DefaultCreditsStatus is apikeys.credits_status: a key out of credits is told to slow
	// down, like a rate limit, unless the operator prefers 403.
	DefaultCreditsStatus = 429

	// EnvSessionSecret holds the session secrets, comma-separated, newest first. It overrides
	// sessions.secrets so that secrets can live in a Kubernetes Secret, not a ConfigMap.
	EnvSessionSecret = "SESSION_SECRET"
)

// The accepted values of the policy settings.
var (
	authModes      = []string{"none", "session", "apikey", "any", "optional"}
	failureModes   = []string{"closed", "open"}
	policyModes    = []string{"enforce", "shadow"}
	limitAlgos     = []string{"fixed", "sliding", "gcra"}
	limitSubjects  = []string{"principal", "ip", "apikey", "header:NAME"}
	defaultAPIKeys = []string{"x-api-key", "authorization"}
	// APIKeyFields are the record fields apikeys.identity_headers may name.
	APIKeyFields = []string{"id", "owner", "name", "tier", "scopes"}
)

// Sessions configures express-session cookies resolved against connect-redis records. Sessions
// are on when at least one secret is set.
type Sessions struct {
	// Cookie is the session cookie's name, express-session's `name` option.
	Cookie string `yaml:"cookie"`
	// Prefix is connect-redis's `prefix` option: the Redis key is Prefix + session id.
	Prefix string `yaml:"prefix"`
	// Secrets are express-session's `secret` list: the first signs, all verify.
	Secrets []string `yaml:"secrets"`
	// Subject is the dotted path in the session JSON naming the principal (passport.user).
	Subject string `yaml:"subject"`
	// Headers maps an upstream request header to a dotted path in the session JSON.
	Headers map[string]string `yaml:"headers"`
	// Roles is the dotted path holding a role or a list of roles.
	Roles string `yaml:"roles"`
	// Scopes is the dotted path holding a scope or a list of scopes. When set, a policy's
	// scopes requirement applies to sessions as it does to API keys; when unset, sessions
	// carry no scopes and scopes requirements apply to API keys only (sessions pass them).
	Scopes string `yaml:"scopes"`
	// Touch, when set, extends sessions like connect-redis's touch, throttled.
	Touch *Touch `yaml:"touch"`
	// StripCookie removes the session cookie from the upstream request.
	StripCookie bool `yaml:"strip_cookie"`
	// Index keeps a per-user index of sessions for "sign out everywhere" (sessionindex.go).
	Index SessionIndex `yaml:"index"`
}

// Touch configures the throttled EXPIRE of resolved sessions.
type Touch struct {
	// TTL applies when the session has no cookie.originalMaxAge (connect-redis's `ttl`).
	TTL Duration `yaml:"ttl"`
	// Every is the shortest time between two touches of one session by one replica.
	Every Duration `yaml:"every"`
}

// Enabled reports whether session resolution is configured.
func (s Sessions) Enabled() bool { return len(s.Secrets) > 0 }

// APIKeys configures API key resolution.
type APIKeys struct {
	// Prefix starts the Redis keys of API key records.
	Prefix string `yaml:"prefix"`
	// TokenPrefix starts every key handed out, so keys are recognisable (and scannable).
	TokenPrefix string `yaml:"token_prefix"`
	// Headers are checked in order; "authorization" means "Bearer <key>".
	Headers []string `yaml:"headers"`
	// KeepHeader forwards the key's header upstream; by default it is removed.
	KeepHeader bool `yaml:"keep_header"`
	// IdentityHeaders maps an upstream request header to a field of the key's record (id,
	// owner, name, tier or scopes), set when a request is allowed by an API key, as
	// sessions.headers does for sessions. A client's own copy is always removed.
	IdentityHeaders map[string]string `yaml:"identity_headers"`
	// CreditsStatus is the status of a request denied because its key's credits are used up:
	// 429 (the default, as for a rate limit) or 403.
	CreditsStatus int `yaml:"credits_status"`
}

// Limits configures the Redis keys of policy limits.
type Limits struct {
	// Prefix starts every policy limit key. "rl:" matches rate-limit-redis's default, so that
	// fixed-window counters can be shared with Express apps during a migration.
	Prefix string `yaml:"prefix"`
	// LocalCacheSize is how many limit keys each replica remembers: keys already over their
	// limit, answered without Redis until their retry-after, and per-process counts that
	// decide when Redis fails. 0 turns both off.
	LocalCacheSize int `yaml:"local_cache_size"`
}

// Policy is one route policy; the first whose match fits a request decides it, unless the
// route names a policy through its ext_authz context_extensions.
type Policy struct {
	Name  string `yaml:"name"`
	Match Match  `yaml:"match"`
	// Auth is none, session, apikey, any or optional. Optional identifies the caller when it
	// can (a valid key or session) and otherwise lets it through as anonymous.
	Auth string `yaml:"auth"`
	// Roles, when set, require the principal to hold one of them.
	Roles []string `yaml:"roles"`
	// Scopes, when set, require an API key (and a session, when sessions.scopes is set) to
	// hold all of them; under auth optional an anonymous caller holds none.
	Scopes []string `yaml:"scopes"`
	// Limits apply to every request of the policy.
	Limits []Limit `yaml:"limits"`
	// Tiers replace Limits for API keys of that tier.
	Tiers map[string][]Limit `yaml:"tiers"`
	// Failure says what a Redis outage does.
	Failure Failure `yaml:"failure"`
	// Mode is enforce (the default) or shadow: a shadow policy decides and counts every request
	// as enforce would, logs and counts what it would deny, and lets every request through.
	Mode string `yaml:"mode"`
}

// Match selects requests; every part is optional and all that are set must fit.
type Match struct {
	PathPrefix string   `yaml:"path_prefix"`
	Methods    []string `yaml:"methods"`
	Host       string   `yaml:"host"`
	// CaseSensitive compares path_prefix case-sensitively. By default it ignores case, as
	// Express routes do: a case-sensitive prefix would let /API/ slip past an /api/ policy
	// into a catch-all while Express still serves it from its /api/ handler.
	CaseSensitive bool `yaml:"case_sensitive"`
}

// Limit is one rate limit of a policy.
type Limit struct {
	// Name labels the limit in headers (draft-8) and keys; default "<policy>-<index>".
	Name string `yaml:"name"`
	// By is principal, ip, apikey or header:NAME.
	By        string   `yaml:"by"`
	Requests  int64    `yaml:"requests"`
	Window    Duration `yaml:"window"`
	Algorithm string   `yaml:"algorithm"`
	// Burst is GCRA's burst; 0 means Requests.
	Burst int64 `yaml:"burst"`
	// SharedPrefix, with the fixed algorithm, keys the counter exactly as rate-limit-redis
	// does: SharedPrefix + the subject's value (the client address for by: ip). An Express app
	// running express-rate-limit + rate-limit-redis with the same prefix and key then shares
	// the counter with the sidecar during a migration.
	SharedPrefix string `yaml:"shared_prefix"`
	// IPv6Subnet is the prefix length an IPv6 client address is masked to before it keys a
	// by: ip limit (or a by: principal limit's anonymous fallback), so that a client cannot
	// rotate addresses inside its allocation; 0 means 56, as express-rate-limit 8 does, and
	// 128 keys on the exact address. IPv4 addresses are never masked.
	IPv6Subnet int `yaml:"ipv6_subnet"`
}

// Failure is a policy's behaviour when Redis fails.
type Failure struct {
	// Auth closed answers an error (Envoy's failure_mode_allow decides); open lets the
	// request through unauthenticated-but-marked.
	Auth string `yaml:"auth"`
	// Limits open lets the request through unlimited; closed answers an error.
	Limits string `yaml:"limits"`
}

// defaultSessions, defaultAPIKeys and defaultLimits fill Default.
func defaultSessions() Sessions {
	return Sessions{Cookie: DefaultSessionCookie, Prefix: DefaultSessionPrefix, Subject: DefaultSessionSubject, Index: defaultSessionIndex()}
}

func defaultLimits() Limits {
	return Limits{Prefix: DefaultLimitPrefix, LocalCacheSize: DefaultLimitLocalCacheSize}
}

func defaultAPIKeysSection() APIKeys {
	return APIKeys{Prefix: DefaultAPIKeyPrefix, TokenPrefix: DefaultAPIKeyToken, Headers: append([]string(nil), defaultAPIKeys...),
		CreditsStatus: DefaultCreditsStatus}
}

// fillPolicyDefaults sets what a policy may leave out. It runs after decoding, before checks.
func (c *Config) fillPolicyDefaults() {
	if c.Sessions.Touch != nil {
		if c.Sessions.Touch.TTL == 0 {
			c.Sessions.Touch.TTL = Duration(DefaultTouchTTL)
		}
		if c.Sessions.Touch.Every == 0 {
			c.Sessions.Touch.Every = Duration(DefaultTouchEvery)
		}
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if p.Auth == "" {
			p.Auth = "any"
		}
		if p.Failure.Auth == "" {
			p.Failure.Auth = "closed"
		}
		if p.Failure.Limits == "" {
			p.Failure.Limits = "open"
		}
		if p.Mode == "" {
			p.Mode = "enforce"
		}
		fillLimits(p.Limits)
		for _, ls := range p.Tiers {
			fillLimits(ls)
		}
	}
}

func fillLimits(ls []Limit) {
	for i := range ls {
		if ls[i].By == "" {
			ls[i].By = "principal"
		}
		if ls[i].Algorithm == "" {
			ls[i].Algorithm = "fixed"
		}
	}
}
