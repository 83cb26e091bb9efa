package main

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

// buildEngine wires the ext_authz decision core from cfg: sessions when secrets are set, API
// keys always (a key must still be issued before it resolves), and the policy limiter, all on
// the one Redis client. Session and key reads go through the client's cache (client tracking)
// when cache.enabled is set and the store is not the embedded one.
func buildEngine(cfg *config.Config, rc *redisconn.Client, format ratelimit.Format, log *zap.Logger, m *metrics.Metrics) (*authz.Engine, error) {
	return buildEngineWith(cfg, rc, format, log, m, nil)
}

// buildEngineWith is buildEngine with the session index's writer (serve's, sessionindex.go),
// nil for none.
func buildEngineWith(cfg *config.Config, rc *redisconn.Client, format ratelimit.Format, log *zap.Logger, m *metrics.Metrics, rec *sessions.Recorder) (*authz.Engine, error) {
	var lopts []ratelimit.LimiterOption
	if rc.Cluster() {
		lopts = append(lopts, ratelimit.WithClusterSlots())
	}
	opts := authz.Options{
		Limiter:         ratelimit.NewGuard(ratelimit.NewLimiter(rc, lopts...), ratelimit.GuardOptions{Size: cfg.Limits.LocalCacheSize, OnCacheHit: m.PolicyOverLimitCacheHits.Inc, OnFallback: m.LimitFallbackObserver()}),
		Timeout:         rc.Timeout(),
		Headers:         format,
		Logger:          log.Named("authz"),
		Metrics:         m,
		DecisionSample:  cfg.Log.DecisionSample,
		DecisionDenials: cfg.Log.DecisionDenials,
	}
	caching := cacheOn(cfg, rc)
	if cfg.Sessions.Enabled() {
		sopts := sessions.Options{
			CookieName: cfg.Sessions.Cookie,
			Prefix:     cfg.Sessions.Prefix,
			Secrets:    cfg.Sessions.Secrets,
			Subject:    cfg.Sessions.Subject,
			Headers:    cfg.Sessions.Headers,
			Roles:      cfg.Sessions.Roles,
			Scopes:     cfg.Sessions.Scopes,
			Recorder:   rec,
		}
		if t := cfg.Sessions.Touch; t != nil {
			sopts.TouchTTL, sopts.TouchEvery = t.TTL.D(), t.Every.D()
		}
		if caching {
			sopts.Cache = &sessions.CacheOptions{TTL: cfg.Cache.TTL.D(), Observe: m.CacheObserver("session")}
		}
		st, err := sessions.New(rc, sopts)
		if err != nil {
			return nil, fmt.Errorf("sessions: %w", err)
		}
		opts.Sessions = st
	}
	kopts := apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix}
	if caching {
		kopts.Cache = &apikeys.CacheOptions{TTL: cfg.Cache.TTL.D(), Observe: m.CacheObserver("apikey")}
	}
	ks, err := apikeys.New(rc, kopts)
	if err != nil {
		return nil, fmt.Errorf("apikeys: %w", err)
	}
	opts.Keys = ks
	set, err := policy.Compile(cfg)
	if err != nil {
		return nil, err
	}
	return authz.New(set, opts), nil
}

// cacheOn reports whether session and key reads go through the client-side cache: when the
// cache section says so and the store can track keys (the embedded one cannot).
func cacheOn(cfg *config.Config, rc *redisconn.Client) bool {
	return cfg.Cache.Enabled && !rc.Embedded()
}

// checkConfig runs every check the server runs before it serves, without starting anything:
// the Redis URL through the very client builder the server uses (it does no network I/O),
// the policies through policy.Compile, and the rate limit directory through rls.LoadDir.
// `config validate` and start-up both call it, so nothing that validates fails at start-up.
func checkConfig(cfg *config.Config) error {
	var errs []error
	if cfg.Redis.URL != "" {
		rc, err := redisconn.New(redisOptions(cfg.Redis, cfg.Cache.MaxBytes), nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("redis: %w", err))
		} else {
			_ = rc.Close()
		}
	}
	if _, err := policy.Compile(cfg); err != nil {
		errs = append(errs, err)
	}
	if dir := cfg.RateLimit.ConfigDir; dir != "" {
		if _, err := rls.LoadDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("ratelimit.config_dir %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
