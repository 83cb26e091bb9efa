package main

import (
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/keyspace"
	"github.com/extauthz/extauthz/internal/localcache"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

// buildEngine wires the ext_authz decision core from cfg: sessions when secrets are set, API
// keys always (a key must still be issued before it resolves), and the policy limiter. When
// the local cache is on, it also returns the keyspace watcher that feeds the caches their
// invalidations; the caller runs it.
func buildEngine(cfg *config.Config, rc *redisconn.Client, backend decisionRedis, format ratelimit.Format, log *zap.Logger, m *metrics.Metrics) (*authz.Engine, *keyspace.Watcher, error) {
	watcher := newWatcher(cfg, rc, log, m)
	opts := authz.Options{
		Limiter:         ratelimit.NewGuard(ratelimit.NewLimiter(backend), ratelimit.GuardOptions{Size: cfg.Limits.LocalCacheSize, OnCacheHit: m.PolicyOverLimitCacheHits.Inc, OnFallback: m.LimitFallbackObserver()}),
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
		if watcher != nil {
			sopts.Cache = cacheOptions(cfg.Cache, m.CacheObserver("session"))
		}
		st, err := sessions.New(backend, sopts)
		if err != nil {
			return nil, nil, fmt.Errorf("sessions: %w", err)
		}
		opts.Sessions = st
		if inv := st.Invalidation(); inv != nil {
			watcher.Watch("session", cfg.Sessions.Prefix, cacheTarget(cfg.Cache, inv))
		}
	}
	kopts := apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix, Lookups: backend}
	if watcher != nil {
		kopts.Cache = cacheOptions(cfg.Cache, m.CacheObserver("apikey"))
	}
	ks, err := apikeys.New(rc.Redis(), kopts)
	if err != nil {
		return nil, nil, fmt.Errorf("apikeys: %w", err)
	}
	opts.Keys = ks
	if inv := ks.Invalidation(); inv != nil {
		watcher.Watch("apikey", cfg.APIKeys.Prefix, cacheTarget(cfg.Cache, inv))
	}
	set, err := policy.Compile(cfg)
	if err != nil {
		return nil, nil, err
	}
	return authz.New(set, opts), watcher, nil
}

// checkConfig runs every check the server runs before it serves, without starting anything:
// the Redis URL through the very client builder the server uses (it does no network I/O),
// the policies through policy.Compile, and the rate limit directory through rls.LoadDir.
// `config validate` and start-up both call it, so nothing that validates fails at start-up.
func checkConfig(cfg *config.Config) error {
	var errs []error
	if cfg.Redis.URL != "" {
		rc, err := redisconn.New(redisOptions(cfg.Redis), nil)
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

// newWatcher returns the keyspace watcher for the local caches, or nil when the cache is off,
// the store is the embedded one (nothing else writes to it) or the client is not a single
// Redis connection (Cluster sends notifications per node).
func newWatcher(cfg *config.Config, rc *redisconn.Client, log *zap.Logger, m *metrics.Metrics) *keyspace.Watcher {
	if !cfg.Cache.Enabled || rc.Embedded() {
		return nil
	}
	rdb, ok := rc.Redis().(*redis.Client)
	if !ok {
		log.Warn("the local session/API key cache needs a single Redis server or Sentinel; it is off")
		return nil
	}
	return keyspace.New(rdb, log.Named("cache"), keyspace.Options{
		OnEvent: func(name string) { m.CacheInvalidations.WithLabelValues(name).Inc() },
		OnActive: func(on bool) {
			if on {
				m.CacheActive.Set(1)
			} else {
				m.CacheActive.Set(0)
			}
		},
	})
}

// cacheOptions are the session or API key cache's settings from the cache section.
func cacheOptions(c config.Cache, observe func(string)) *localcache.Options {
	return &localcache.Options{TTL: c.TTL.D(), NegativeTTL: c.NegativeTTL.D(), MaxEntries: c.MaxEntries, Observe: observe}
}

// cacheTarget is t, or, when the cache does not require keyspace notifications, t switched
// on for good: losing the notifications then only flushes it.
func cacheTarget(c config.Cache, t keyspace.Target) keyspace.Target {
	if c.RequireNotifications {
		return t
	}
	t.SetActive(true)
	return alwaysOn{t}
}

type alwaysOn struct{ keyspace.Target }

func (a alwaysOn) SetActive(bool) { a.Target.SetActive(true) }
