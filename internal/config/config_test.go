package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit/rls"
)

// noEnv is a getenv for tests that must not see the process's environment.
func noEnv(string) string { return "" }

// envMap is a getenv that reads m.
func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// problems unpacks the *FieldErrors an error from Parse or Validate joins.
func problems(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []*FieldError
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("problem %v is a %T, want *FieldError", e, e)
		}
		out = append(out, fe)
	}
	return out
}

// exported returns c without its record of origins, for comparisons against literals.
func exported(c *Config) Config {
	v := *c
	v.origins = nil
	return v
}

const fullConfig = `
listen:
  grpc: 0.0.0.0:7001
  http: "[::1]:7002"
  admin: localhost:7003
redis:
  url: rediss://app:secret@redis.internal:6380/2
  username: other
  password: override
  timeout: 40ms
  dial_timeout: 2s
  pool_size: 20
  min_idle_conns: 2
  tls:
    ca_file: /etc/ca.pem
    cert_file: /etc/client.pem
    key_file: /etc/client.key
    server_name: redis.internal
    insecure_skip_verify: true
response_headers: legacy
ratelimit:
  config_dir: /etc/rls.d
  prefix: "edge:"
  watch: false
log:
  level: debug
  format: console
shutdown:
  grace: 1m
  drain: 5s
`

func TestParseGood(t *testing.T) {
	full := Config{
		Listen: Listen{GRPC: "0.0.0.0:7001", HTTP: "[::1]:7002", Admin: "localhost:7003"},
		Redis: Redis{
			URL: "rediss://app:secret@redis.internal:6380/2", EmbeddedAddr: DefaultEmbeddedAddr, Username: "other", Password: "override",
			Timeout: Duration(40 * time.Millisecond), DialTimeout: Duration(2 * time.Second),
			PoolSize: 20, MinIdleConns: 2, PipelineSlots: DefaultPipelineSlots, PipelineMax: DefaultPipelineMax, MaxInflight: DefaultRedisMaxInflight,
			TLS: TLS{CAFile: "/etc/ca.pem", CertFile: "/etc/client.pem", KeyFile: "/etc/client.key",
				ServerName: "redis.internal", InsecureSkipVerify: true},
		},
		ResponseHeaders: "legacy",
		RateLimit:       RateLimit{ConfigDir: "/etc/rls.d", Prefix: "edge:", Watch: false, OverLimitCacheSize: DefaultOverLimitCacheSize, MaxDescriptors: rls.DefaultMaxDescriptors, MaxEntries: rls.DefaultMaxEntries, MaxHitsAddend: rls.DefaultMaxHitsAddend},
		Log:             Log{Level: "debug", Format: "console", DecisionDenials: true},
		Shutdown:        Shutdown{Grace: Duration(time.Minute), Drain: Duration(5 * time.Second)},
		Tracing:         defaultTracing(),
		Sessions:        defaultSessions(),
		APIKeys:         defaultAPIKeysSection(),
		Limits:          defaultLimits(),
		Cache:           defaultCache(),
		Server:          defaultServer(),
		Admin:           Admin{API: true},
		ClientIPHeader:  DefaultClientIPHeader,
		Request:         Request{MaxHeaders: DefaultMaxHeaders, MaxTargetLength: DefaultMaxTargetLength},
	}
	withDefaults := func(edit func(c *Config)) Config {
		c := Default()
		edit(c)
		return *c
	}
	tests := []struct {
		name string
		yaml string
		want Config
	}{
		{"empty file", "", *Default()},
		{"only comments", "# nothing set\n", *Default()},
		{"null document", "~\n", *Default()},
		{"trailing document separator", "log: {level: warn}\n---\n", withDefaults(func(c *Config) { c.Log.Level = "warn" })},
		{"empty section keeps defaults", "listen:\nredis:\n", *Default()},
		{"null value keeps default", "redis:\n  timeout:\n", *Default()},
		{"full file", fullConfig, full},
		{"partial section keeps other defaults", "listen:\n  grpc: :0\n",
			withDefaults(func(c *Config) { c.Listen.GRPC = ":0" })},
		{"durations", "redis: {timeout: 1.5ms, dial_timeout: 250ms}\nshutdown: {grace: 1h30m, drain: 0}\n",
			withDefaults(func(c *Config) {
				c.Redis.Timeout = Duration(1500 * time.Microsecond)
				c.Redis.DialTimeout = Duration(250 * time.Millisecond)
				c.Shutdown.Grace = Duration(90 * time.Minute)
				c.Shutdown.Drain = 0
			})},
		{"unix socket", "redis: {url: 'unix:///run/redis.sock?db=3'}\n",
			withDefaults(func(c *Config) { c.Redis.URL = "unix:///run/redis.sock?db=3" })},
		{"port 0 may repeat", "listen: {grpc: '127.0.0.1:0', http: '127.0.0.1:0', admin: '127.0.0.1:0'}\n",
			withDefaults(func(c *Config) { c.Listen = Listen{GRPC: "127.0.0.1:0", HTTP: "127.0.0.1:0", Admin: "127.0.0.1:0"} })},
		{"same port on different hosts", "listen: {grpc: '127.0.0.1:9001', http: '127.0.0.2:9001'}\n",
			withDefaults(func(c *Config) { c.Listen.HTTP = "127.0.0.2:9001" })},
		{"anchor and merge key", "listen: &l {grpc: ':7001', http: ':7002'}\nlog:\n  <<: {level: debug, format: console}\n  format: json\n",
			withDefaults(func(c *Config) {
				c.Listen.GRPC, c.Listen.HTTP = ":7001", ":7002"
				c.Log = Log{Level: "debug", Format: "json", DecisionDenials: true}
			})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse("cfg.yaml", []byte(tt.yaml), noEnv)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := exported(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseBad(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		env      map[string]string
		wantPath string
		wantLine int    // 0: the problem has no line
		wantMsg  string // a substring of the message
	}{
		{"unknown top-level key", "listen: {}\nredsi: {}\n", nil, "redsi", 2, `did you mean "redis"?`},
		{"unknown nested key", "listen:\n  grpc: :1\n  grcp: :2\n", nil, "listen.grcp", 3, `unknown field (did you mean "grpc"?)`},
		{"unknown deeply nested key", "redis:\n  url: rediss://r\n  tls:\n    ca: x\n", nil, "redis.tls.ca", 4, "unknown field"},
		{"camelCase key", "redis:\n  dialTimeout: 1s\n", nil, "redis.dialTimeout", 2, `did you mean "dial_timeout"?`},
		{"unknown key without suggestion", "log:\n  colour: true\n", nil, "log.colour", 2, "known: level, format"},
		{"duplicate key", "log:\n  level: info\n  level: debug\n", nil, "log.level", 3, "duplicate key (first set at line 2)"},
		{"section not a mapping", "listen: 127.0.0.1:9001\n", nil, "listen", 1, `expected a mapping, got "127.0.0.1:9001"`},
		{"top level not a mapping", "- a\n- b\n", nil, "", 1, "expected a mapping of config sections"},
		{"string for int", "redis:\n  pool_size: ten\n", nil, "redis.pool_size", 2, `expected an integer, got "ten"`},
		{"fraction for int", "redis:\n  pool_size: 1.5\n", nil, "redis.pool_size", 2, "expected an integer, got the number 1.5"},
		{"int for bool", "ratelimit:\n  watch: 1\n", nil, "ratelimit.watch", 2, "expected true or false"},
		{"list for string", "log:\n  level: [info]\n", nil, "log.level", 2, "expected a string, got a list"},
		{"bare integer duration", "redis:\n  timeout: 25\n", nil, "redis.timeout", 2, "use a unit, e.g. 25ms"},
		{"quoted integer duration", "redis:\n  timeout: '25'\n", nil, "redis.timeout", 2, "use a unit, e.g. 25ms"},
		{"garbage duration", "shutdown:\n  grace: soon\n", nil, "shutdown.grace", 2, `"soon" is not a duration`},
		{"syntax error", "listen:\n  grpc: [\n", nil, "", 2, "invalid YAML"},
		{"two documents", "log: {level: info}\n---\nlog: {level: debug}\n", nil, "", 2, "more than one YAML document"},
		{"zero timeout", "redis:\n  timeout: 0s\n", nil, "redis.timeout", 2, "must be > 0"},
		{"negative timeout", "redis:\n  timeout: -5ms\n", nil, "redis.timeout", 2, "must be > 0"},
		{"timeout too long", "redis:\n  timeout: 11s\n", nil, "redis.timeout", 2, "must be at most 10s"},
		{"zero dial timeout", "redis:\n  dial_timeout: 0s\n", nil, "redis.dial_timeout", 2, "must be > 0"},
		{"negative pool size", "redis:\n  pool_size: -1\n", nil, "redis.pool_size", 2, "must be >= 0"},
		{"negative min idle", "redis:\n  min_idle_conns: -1\n", nil, "redis.min_idle_conns", 2, "must be >= 0"},
		{"zero max inflight", "redis:\n  max_inflight: 0\n", nil, "redis.max_inflight", 2, "must be >= 1"},
		{"too many pipeline slots", "redis:\n  pipeline_slots: 65\n", nil, "redis.pipeline_slots", 2, "must be 0..64"},
		{"address without port", "listen:\n  grpc: localhost\n", nil, "listen.grpc", 2, "is not host:port"},
		{"port out of range", "listen:\n  http: ':70000'\n", nil, "listen.http", 2, "port must be a number"},
		{"empty address", "listen:\n  admin: ''\n", nil, "listen.admin", 2, "must be set"},
		{"bad host", "listen:\n  admin: 'a b:1'\n", nil, "listen.admin", 2, "neither an IP address nor a host name"},
		{"same address twice", "listen:\n  grpc: 127.0.0.1:7000\n  http: 127.0.0.1:7000\n", nil, "listen.http", 3, "clashes with listen.grpc"},
		{"wildcard clashes", "listen:\n  grpc: :7000\n  admin: 127.0.0.1:7000\n", nil, "listen.admin", 3, "clashes with listen.grpc"},
		{"url without scheme", "redis:\n  url: 127.0.0.1:6379\n", nil, "redis.url", 2, "needs a scheme"},
		{"url wrong scheme", "redis:\n  url: http://r:6379\n", nil, "redis.url", 2, `scheme "http" is not supported`},
		{"url bad db", "redis:\n  url: redis://r:6379/x\n", nil, "redis.url", 2, `database "x" is not a non-negative number`},
		{"url negative db", "redis:\n  url: redis://r:6379/-1\n", nil, "redis.url", 2, "is not a non-negative number"},
		{"url db parameter", "redis:\n  url: redis://r:6379?db=2\n", nil, "redis.url", 2, "put the database in the path"},
		{"url long path", "redis:\n  url: redis://r:6379/0/1\n", nil, "redis.url", 2, `database "0/1" is not a non-negative number`},
		{"url bad port", "redis:\n  url: redis://r:0\n", nil, "redis.url", 2, "port is not in 1-65535"},
		{"unix socket as host", "redis:\n  url: unix://run/redis.sock\n", nil, "redis.url", 2, "must be absolute"},
		{"unix without path", "redis:\n  url: unix://\n", nil, "redis.url", 2, "no socket path"},
		{"sentinel without master", "redis:\n  url: redis-sentinel://s1,s2\n", nil, "redis.url", 2, "has no master name"},
		{"sentinel empty host", "redis:\n  url: redis-sentinel://s1,,s3/m\n", nil, "redis.url", 2, "empty entry in its host list (host 2 of 3)"},
		{"cluster db", "redis:\n  url: redis-cluster://n1,n2/2\n", nil, "redis.url", 2, "a cluster has database 0 only"},
		{"tls with sentinel url", "redis:\n  url: redis-sentinel://s1/m\n  tls:\n    ca_file: ca.pem\n", nil, "redis.tls", 3, "tls options need a rediss:// url"},
		{"tls with redis url", "redis:\n  url: redis://r\n  tls:\n    ca_file: ca.pem\n", nil, "redis.tls", 3, "tls options need a rediss:// url"},
		{"tls with embedded store", "redis:\n  tls:\n    insecure_skip_verify: true\n", nil, "redis.tls", 2, "tls options need a rediss:// url"},
		{"cert without key", "redis:\n  url: rediss://r\n  tls:\n    cert_file: c.pem\n", nil, "redis.tls.cert_file", 4, "needs redis.tls.key_file too"},
		{"key without cert", "redis:\n  url: rediss://r\n  tls:\n    key_file: k.pem\n", nil, "redis.tls.key_file", 4, "needs redis.tls.cert_file too"},
		{"response headers", "response_headers: draft7\n", nil, "response_headers", 1, `did you mean "draft-7"?`},
		{"empty prefix", "ratelimit:\n  prefix: ''\n", nil, "ratelimit.prefix", 2, "must not be empty"},
		{"prefix with hash tag", "ratelimit:\n  prefix: 'rls:{x}:'\n", nil, "ratelimit.prefix", 2, "must not contain { or }"},
		{"prefix with space", "ratelimit:\n  prefix: 'rls: '\n", nil, "ratelimit.prefix", 2, "whitespace"},
		{"log level", "log:\n  level: verbose\n", nil, "log.level", 2, "is not one of debug, info, warn, error"},
		{"log format", "log:\n  format: text\n", nil, "log.format", 2, "is not one of json, console"},
		{"negative grace", "shutdown:\n  grace: -1s\n", nil, "shutdown.grace", 2, "must be >= 0"},
		{"negative drain", "shutdown:\n  drain: -1s\n", nil, "shutdown.drain", 2, "must be >= 0"},
		{"bad env address names the variable", "listen:\n  grpc: :7001\n", map[string]string{EnvGRPCAddr: "nope"},
			"listen.grpc", 0, "(set by EXTAUTHZ_GRPC_ADDR)"},
		{"bad env url names the variable", "", map[string]string{EnvRedisURL: "redis://r/zero"},
			"redis.url", 0, "(set by EXTAUTHZ_REDIS_URL)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse("cfg.yaml", []byte(tt.yaml), envMap(tt.env))
			if err == nil {
				t.Fatalf("parse succeeded with %+v, want an error at %s", exported(c), tt.wantPath)
			}
			if c != nil {
				t.Errorf("parse returned a config with its error")
			}
			for _, p := range problems(t, err) {
				if p.Path != tt.wantPath || !strings.Contains(p.Msg, tt.wantMsg) {
					continue
				}
				if p.Line != tt.wantLine {
					t.Errorf("%v: line %d, want %d", p, p.Line, tt.wantLine)
				}
				if wantFile := map[bool]string{true: "cfg.yaml"}[tt.wantLine > 0]; p.File != wantFile {
					t.Errorf("%v: file %q, want %q", p, p.File, wantFile)
				}
				return
			}
			t.Errorf("got %v\nwant a problem at %q containing %q", err, tt.wantPath, tt.wantMsg)
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	const doc = `listen:
  grcp: :1
  http: nope
redis:
  timeout: 25
  pool_size: -3
response_headers: draft-9
log:
  level: loud
`
	_, err := parse("cfg.yaml", []byte(doc), noEnv)
	var got []string
	for _, p := range problems(t, err) {
		got = append(got, p.File+":"+strconv.Itoa(p.Line)+" "+p.Path)
	}
	want := []string{
		"cfg.yaml:2 listen.grcp",
		"cfg.yaml:3 listen.http",
		"cfg.yaml:5 redis.timeout",
		"cfg.yaml:6 redis.pool_size",
		"cfg.yaml:7 response_headers",
		"cfg.yaml:9 log.level",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q\nerror:\n%v", got, want, err)
	}
}

func TestParseReadsProcessEnvironment(t *testing.T) {
	t.Setenv(EnvRedisURL, "redis://from-env:6379/1")
	t.Setenv(EnvRedisPassword, "")
	t.Setenv(EnvGRPCAddr, "")
	t.Setenv(EnvHTTPAddr, "")
	t.Setenv(EnvAdminAddr, "")
	c, err := Parse("cfg.yaml", []byte("redis: {url: 'redis://from-file'}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Redis.URL, "redis://from-env:6379/1"; got != want {
		t.Errorf("redis.url = %q, want %q", got, want)
	}
}

func TestApplyEnv(t *testing.T) {
	c := Default()
	c.Redis.URL = "redis://file"
	c.Redis.Password = "file-password"
	c.ApplyEnv(envMap(map[string]string{
		EnvRedisURL:      "rediss://env:6380/0",
		EnvRedisPassword: "env-password",
		EnvGRPCAddr:      ":7001",
		EnvHTTPAddr:      ":7002",
		EnvAdminAddr:     ":7003",
	}))
	want := Default()
	want.Redis.URL, want.Redis.Password = "rediss://env:6380/0", "env-password"
	want.Listen = Listen{GRPC: ":7001", HTTP: ":7002", Admin: ":7003"}
	if got := exported(c); !reflect.DeepEqual(got, exported(want)) {
		t.Errorf("got  %+v\nwant %+v", got, exported(want))
	}

	// Unset and empty variables leave the fields alone.
	c = Default()
	c.Redis.URL = "redis://file"
	c.ApplyEnv(envMap(map[string]string{EnvRedisURL: ""}))
	if c.Redis.URL != "redis://file" {
		t.Errorf("an empty %s changed redis.url to %q", EnvRedisURL, c.Redis.URL)
	}
}

// TestApplyEnvLeavesCopiesAlone guards the origins map shared between copies of a Config.
func TestApplyEnvLeavesCopiesAlone(t *testing.T) {
	c, err := parse("cfg.yaml", []byte("listen:\n  grpc: :7001\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	cp := *c
	cp.ApplyEnv(envMap(map[string]string{EnvGRPCAddr: "bad"}))
	c.Listen.GRPC = "bad"
	for _, p := range problems(t, c.Validate()) {
		if strings.Contains(p.Msg, EnvGRPCAddr) {
			t.Errorf("the original blames the copy's environment: %v", p)
		}
	}
}

// TestValidateAfterOverride covers a flag changing a field after Parse: the problem must not
// point at the file line that set the old value.
func TestValidateAfterOverride(t *testing.T) {
	c, err := parse("cfg.yaml", []byte("log:\n  level: info\nlisten:\n  grpc: :7001\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	c.Listen.GRPC = "no-port"
	c.Log.Level = "loud"
	got := problems(t, c.Validate())
	if len(got) != 2 {
		t.Fatalf("got %v, want 2 problems", got)
	}
	for _, p := range got {
		if p.File != "" || p.Line != 0 {
			t.Errorf("%v: blamed on %s:%d, want no position", p, p.File, p.Line)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("log:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{EnvRedisURL, EnvRedisPassword, EnvGRPCAddr, EnvHTTPAddr, EnvAdminAddr} {
		t.Setenv(k, "")
	}
	c, err := Load(good)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Log.Level != "warn" {
		t.Errorf("log.level = %q, want warn", c.Log.Level)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("log:\n  level: warn\n  lvl: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if got, want := errString(err), bad+":3: log.lvl: unknown field"; !strings.HasPrefix(got, want) {
		t.Errorf("Load(bad) = %q, want prefix %q", got, want)
	}

	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an os.ErrNotExist", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if !Default().Embedded() {
		t.Error("Default().Embedded() = false, want true")
	}
	c := Default()
	c.Redis.URL = "redis://r"
	if c.Embedded() {
		t.Error("Embedded() with a redis.url = true, want false")
	}
}

func TestFieldErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  FieldError
		want string
	}{
		{"everything", FieldError{File: "cfg.yaml", Line: 7, Path: "redis.timeout", Msg: "must be > 0"}, "cfg.yaml:7: redis.timeout: must be > 0"},
		{"no line", FieldError{File: "cfg.yaml", Path: "redis.timeout", Msg: "must be > 0"}, "cfg.yaml: redis.timeout: must be > 0"},
		{"no file", FieldError{Line: 7, Path: "redis.timeout", Msg: "must be > 0"}, "line 7: redis.timeout: must be > 0"},
		{"path only", FieldError{Path: "redis.timeout", Msg: "must be > 0"}, "redis.timeout: must be > 0"},
		{"no path", FieldError{File: "cfg.yaml", Line: 2, Msg: "invalid YAML"}, "cfg.yaml:2: invalid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
