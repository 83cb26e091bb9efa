package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/server"
)

// serveFlags are the serve command's flags; each overrides the config file when given.
type serveFlags struct {
	config, grpcAddr, httpAddr, adminAddr, redisURL, rlsDir string
}

func parseServeFlags(args []string, stderr io.Writer) (*serveFlags, map[string]bool, error) {
	var f serveFlags
	fs := flag.NewFlagSet("extauthz serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.config, "config", "", "config `FILE` (YAML); without it, defaults and flags only")
	fs.StringVar(&f.grpcAddr, "grpc-addr", "", "gRPC listen `HOST:PORT` (default "+config.DefaultGRPCAddr+")")
	fs.StringVar(&f.httpAddr, "http-addr", "", "HTTP authorization listen `HOST:PORT` (default "+config.DefaultHTTPAddr+")")
	fs.StringVar(&f.adminAddr, "admin-addr", "", "admin listen `HOST:PORT` for /healthz /readyz /metrics (default "+config.DefaultAdminAddr+")")
	fs.StringVar(&f.redisURL, "redis-url", "", "Redis `URL` (redis://, rediss://, unix://); none anywhere means the embedded in-memory store")
	fs.StringVar(&f.rlsDir, "rls-config-dir", "", "envoyproxy/ratelimit config `DIR` (one domain per YAML file)")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	return &f, set, nil
}

// loadServeConfig reads the file (or the defaults), then the environment, then the flags, and
// validates the result once.
func loadServeConfig(f *serveFlags, set map[string]bool, getenv func(string) string) (*config.Config, error) {
	override := func(cfg *config.Config) {
		if set["grpc-addr"] {
			cfg.Listen.GRPC = f.grpcAddr
		}
		if set["http-addr"] {
			cfg.Listen.HTTP = f.httpAddr
		}
		if set["admin-addr"] {
			cfg.Listen.Admin = f.adminAddr
		}
		if set["redis-url"] {
			cfg.Redis.URL = f.redisURL
		}
		if set["rls-config-dir"] {
			cfg.RateLimit.ConfigDir = f.rlsDir
		}
	}
	if f.config != "" {
		return config.LoadWith(f.config, getenv, override)
	}
	cfg := config.Default()
	cfg.ApplyEnv(getenv)
	override(cfg)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func runServe(args []string, stdout, stderr io.Writer) int {
	f, set, err := parseServeFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "extauthz serve: %v\n", err)
		return 2
	}
	cfg, err := loadServeConfig(f, set, os.Getenv)
	if err == nil {
		err = checkConfig(cfg)
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz serve: invalid configuration:\n%v\n", err)
		return 1
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "extauthz serve: %v\n", err)
		return 1
	}
	defer func() { _ = log.Sync() }()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, f.config, log); err != nil {
		log.Error("extauthz stopped with an error", zap.Error(err))
		return 1
	}
	log.Info("extauthz stopped")
	return 0
}

// serve wires the components from cfg and runs them until ctx ends.
func serve(ctx context.Context, cfg *config.Config, configPath string, log *zap.Logger) error {
	m := metrics.New()
	format, err := ratelimit.ParseFormat(cfg.ResponseHeaders)
	if err != nil {
		return err
	}

	ropts := redisOptions(cfg.Redis, cfg.Cache.MaxBytes)
	// rc is set before the client can dial (it dials after Start), so the callback may read it.
	var rc *redisconn.Client
	ropts.OnBusy = m.RedisInflightRejected.Inc
	ropts.OnConnFailure = func(reason string) {
		m.RedisConnFailures.WithLabelValues(reason).Inc()
		// The sampled logger keeps an outage to a few lines a second.
		log.Warn("redis connection failed; the client dials again", zap.String("reason", reason), zap.String("redis", rc.Describe()))
	}
	if !cfg.Cache.Enabled {
		ropts.CacheBytes = -1
	}
	// Only serve listens on redis.embedded_addr: the other commands that start an embedded
	// store of their own (extauthz test) take a free port, so that they never collide with
	// the running sidecar whose store `apikey` and `sessions` reach there.
	ropts.EmbeddedAddr = cfg.Redis.EmbeddedAddr
	invalidations := m.CacheInvalidations.WithLabelValues("all")
	ropts.OnInvalidation = func(keys int) { invalidations.Add(float64(keys)) }
	rc, err = redisconn.New(ropts, log)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer rc.Close()
	log.Info("redis configured", zap.String("redis", rc.Describe()), zap.Bool("embedded", rc.Embedded()), zap.Duration("timeout", rc.Timeout()))
	// Dial now, in the background: a sidecar that starts before its Redis serves what needs no
	// Redis and turns ready by itself once the client has connected.
	rc.Start()
	if cacheOn(cfg, rc) {
		m.CacheActive.Set(1)
	}

	var fwopts []ratelimit.FixedWindowOption
	if rc.Cluster() {
		fwopts = append(fwopts, ratelimit.FixedWindowClusterSlots())
	}
	svc := rls.NewService(ratelimit.NewFixedWindow(rc, fwopts...), nil, rls.Options{
		Prefix:             cfg.RateLimit.Prefix,
		Headers:            format,
		Timeout:            rc.Timeout(),
		Logger:             log.Named("rls"),
		Metrics:            m,
		OverLimitCacheSize: cfg.RateLimit.OverLimitCacheSize,
		MaxDescriptors:     cfg.RateLimit.MaxDescriptors,
		MaxEntries:         cfg.RateLimit.MaxEntries,
		MaxHitsAddend:      uint64(cfg.RateLimit.MaxHitsAddend),
	})
	var reloader *rls.Reloader
	if dir := cfg.RateLimit.ConfigDir; dir != "" {
		reloader = rls.NewReloader(dir, svc, log.Named("rls"), m)
		if err := reloader.Reload(); err != nil {
			return fmt.Errorf("rate limit config %s: %w", dir, err)
		}
		if cfg.RateLimit.Watch {
			if err := reloader.Watch(ctx); err != nil {
				return fmt.Errorf("watch rate limit config %s: %w", dir, err)
			}
		}
	} else {
		log.Warn("no ratelimit.config_dir: ShouldRateLimit answers OK with no limit for every domain")
	}

	index, rec, stopIndex := startSessionIndex(ctx, cfg, rc, log, m)
	defer stopIndex()
	engine, err := buildEngineWith(cfg, rc, format, log, m, rec)
	if err != nil {
		return err
	}
	if len(cfg.Policies) == 0 {
		log.Warn("no policies: every ext_authz Check and HTTP authorization request is denied (403)")
	}

	tp, err := startTracing(cfg.Tracing, log)
	if err != nil {
		return err
	}
	defer stopTracing(tp, log)

	srv, err := server.New(server.Options{
		GRPCExtra:     tp.GRPCServerOptions(),
		GRPCAddr:      cfg.Listen.GRPC,
		HTTPAddr:      cfg.Listen.HTTP,
		AdminAddr:     cfg.Listen.Admin,
		RateLimit:     svc,
		Authorization: authz.NewCheckServer(engine),
		HTTPHandler:   authz.NewHTTPHandler(engine),
		Backend:       rc,
		Grace:         cfg.Shutdown.Grace.D(),
		Drain:         cfg.Shutdown.Drain.D(),
		MaxInflight:   cfg.Server.MaxInflight,
		HTTP:          httpLimits(cfg.Server.HTTP),
		GRPC:          grpcLimits(cfg.Server.GRPC),
		Pprof:         cfg.Admin.Pprof,
		AdminAPI:      adminAPI(cfg, index, log),
		AdminAPIAllow: cfg.Admin.APIAllowPrefixes(),
		Logger:        log,
		Metrics:       m,
	})
	if err != nil {
		return err
	}
	srv.SetLoaded(true)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				reloadPolicies(configPath, cfg, engine, log, m)
				if reloader == nil {
					continue
				}
				log.Info("SIGHUP: reloading rate limit config")
				_ = reloader.Reload()
			}
		}
	}()

	log.Info("extauthz listening",
		zap.String("version", version),
		zap.String("grpc", srv.GRPCAddr().String()),
		zap.String("http", srv.HTTPAddr().String()),
		zap.String("admin", srv.AdminAddr().String()),
		zap.String("response_headers", format.String()))
	return srv.Run(ctx)
}

// reloadPolicies re-reads the config file on SIGHUP and swaps in its policies and limits when
// the whole file is valid. Listeners, Redis, sessions and API key settings need a restart: the
// running ones are kept (a changed sessions.headers would otherwise be stripped but never set),
// and a change to them is logged. A bad file keeps the running policies.
func reloadPolicies(path string, running *config.Config, engine *authz.Engine, log *zap.Logger, m *metrics.Metrics) {
	if path == "" {
		return
	}
	cfg, err := config.Load(path)
	if err == nil {
		if !reflect.DeepEqual(cfg.Sessions, running.Sessions) || !reflect.DeepEqual(cfg.APIKeys, running.APIKeys) {
			log.Warn("SIGHUP: sessions and apikeys changes need a restart; keeping the running ones", zap.String("file", path))
		}
		if cfg.Cache != running.Cache || cfg.Tracing != running.Tracing {
			log.Warn("SIGHUP: cache and tracing changes need a restart; keeping the running ones", zap.String("file", path))
		}
		if !reflect.DeepEqual(cfg.Admin, running.Admin) {
			// admin.api_allow decides who may sign users out: say loudly that an edit to it
			// is not in force yet.
			log.Warn("SIGHUP: admin changes (pprof, api, api_allow) need a restart; keeping the running ones", zap.String("file", path))
		}
		// The running sessions and apikeys sections stay: the policy set compiled from them
		// must describe what the running resolvers set.
		cfg.Sessions, cfg.APIKeys = running.Sessions, running.APIKeys
		var set *policy.Set
		if set, err = policy.Compile(cfg); err == nil {
			engine.Load(set)
		}
	}
	if err != nil {
		log.Error("config file rejected on SIGHUP, keeping the running policies", zap.String("file", path), zap.Error(err))
		m.ConfigReloads.WithLabelValues("policies", "error").Inc()
		return
	}
	log.Info("policies reloaded", zap.String("file", path), zap.Int("policies", len(cfg.Policies)))
	m.ConfigReloads.WithLabelValues("policies", "success").Inc()
	m.ConfigLastReload.WithLabelValues("policies").SetToCurrentTime()
}

func httpLimits(h config.ServerHTTP) server.HTTPLimits {
	return server.HTTPLimits{
		ReadHeaderTimeout: h.ReadHeaderTimeout.D(),
		ReadTimeout:       h.ReadTimeout.D(),
		WriteTimeout:      h.WriteTimeout.D(),
		IdleTimeout:       h.IdleTimeout.D(),
		MaxHeaderBytes:    h.MaxHeaderBytes,
		MaxBodyBytes:      h.MaxBodyBytes,
		MaxConnections:    h.MaxConnections,
	}
}

// grpcLimits converts the validated section; validation keeps max_concurrent_streams within
// uint32.
func grpcLimits(g config.ServerGRPC) server.GRPCLimits {
	return server.GRPCLimits{
		MaxConcurrentStreams: uint32(g.MaxConcurrentStreams),
		MaxConnectionIdle:    g.MaxConnectionIdle.D(),
		MaxConnections:       g.MaxConnections,
		KeepaliveMinTime:     g.KeepaliveMinTime.D(),
	}
}

// redisOptions maps the redis section onto the client. cacheBytes is the cache section's
// max_bytes (the caller turns caching off with a negative value).
func redisOptions(r config.Redis, cacheBytes int) redisconn.Options {
	return redisconn.Options{
		URL:          r.URL,
		Username:     r.Username,
		Password:     r.Password,
		Timeout:      r.Timeout.D(),
		DialTimeout:  r.DialTimeout.D(),
		PoolSize:     r.PoolSize,
		MinIdleConns: r.MinIdleConns,
		MaxInFlight:  r.MaxInflight,
		ConnsPerNode: r.PipelineSlots,
		CacheBytes:   cacheBytes,
		TLS: redisconn.TLSOptions{
			CAFile:             r.TLS.CAFile,
			CertFile:           r.TLS.CertFile,
			KeyFile:            r.TLS.KeyFile,
			ServerName:         r.TLS.ServerName,
			InsecureSkipVerify: r.TLS.InsecureSkipVerify,
		},
	}
}

func newLogger(c config.Log, stderr io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, err
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(stderr)), lvl)
	// Sampling keeps an outage from turning into one log line per request: the first 10
	// lines of each message a second are written, then every 100th.
	core = zapcore.NewSamplerWithOptions(core, time.Second, 10, 100)
	return zap.New(core), nil
}
