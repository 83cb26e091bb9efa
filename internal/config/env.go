package config

import (
	"maps"
	"strings"
)

// ApplyEnv overrides fields from the environment variables named by the Env constants,
// reading them through getenv (pass os.Getenv) so that it has no effect beyond c. An unset or
// empty variable changes nothing, so an empty EXTAUTHZ_REDIS_URL cannot switch a file's Redis
// off in favour of the embedded store. Problems Validate finds in an overridden field name the
// variable instead of a file line.
func (c *Config) ApplyEnv(getenv func(string) string) {
	overrides := []struct {
		env, path string
		field     *string
	}{
		{EnvRedisURL, "redis.url", &c.Redis.URL},
		{EnvRedisPassword, "redis.password", &c.Redis.Password},
		{EnvGRPCAddr, "listen.grpc", &c.Listen.GRPC},
		{EnvHTTPAddr, "listen.http", &c.Listen.HTTP},
		{EnvAdminAddr, "listen.admin", &c.Listen.Admin},
		// The traces-specific variable comes last so that it wins, as OpenTelemetry specifies.
		{EnvOTLPEndpoint, "tracing.endpoint", &c.Tracing.Endpoint},
		{EnvOTLPTracesEndpoint, "tracing.endpoint", &c.Tracing.Endpoint},
	}
	var origins map[string]origin
	for _, o := range overrides {
		v := getenv(o.env)
		if v == "" {
			continue
		}
		*o.field = v
		// Copies of c share its origins, so they are copied before the first write.
		if origins == nil {
			origins = maps.Clone(c.origins)
			if origins == nil {
				origins = map[string]origin{}
			}
		}
		origins[o.path] = origin{env: o.env, val: v}
	}
	if v := getenv(EnvSessionSecret); v != "" {
		var secrets []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				secrets = append(secrets, s)
			}
		}
		c.Sessions.Secrets = secrets
		if origins == nil {
			origins = maps.Clone(c.origins)
			if origins == nil {
				origins = map[string]origin{}
			}
		}
		// The value is a secret: the origin records the variable, never its text.
		origins["sessions.secrets"] = origin{env: EnvSessionSecret, val: secrets}
	}
	if origins != nil {
		c.origins = origins
	}
}
