package main

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

// buildEngine wires the ext_authz decision core from cfg: sessions when secrets are set, API
// keys always (a key must still be issued before it resolves), and the policy limiter.
func buildEngine(cfg *config.Config, rc *redisconn.Client, backend decisionRedis, format ratelimit.Format, log *zap.Logger, m *metrics.Metrics) (*authz.Engine, error) {
	opts := authz.Options{
		Limiter:         ratelimit.NewLimiter(backend),
		Timeout:         rc.Timeout(),
		Headers:         format,
		Logger:          log.Named("authz"),
		Metrics:         m,
		DecisionSample:  cfg.Log.DecisionSample,
		DecisionDenials: cfg.Log.DecisionDenials,
	}
	if cfg.Sessions.Enabled() {
		sopts := sessions.Options{
			CookieName: cfg.Sessions.Cookie,
			Prefix:     cfg.Sessions.Prefix,
			Secrets:    cfg.Sessions.Secrets,
			Subject:    cfg.Sessions.Subject,
			Headers:    cfg.Sessions.Headers,
			Roles:      cfg.Sessions.Roles,
		}
		if t := cfg.Sessions.Touch; t != nil {
			sopts.TouchTTL, sopts.TouchEvery = t.TTL.D(), t.Every.D()
		}
		st, err := sessions.New(backend, sopts)
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		opts.Sessions = st
	}
	ks, err := apikeys.New(rc.Redis(), apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
	if err != nil {
		return nil, fmt.Errorf("apikeys: %w", err)
	}
	opts.Keys = ks
	return authz.New(cfg, opts)
}
