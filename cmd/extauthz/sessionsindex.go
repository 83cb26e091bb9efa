package main

import (
	"context"
	"net/http"
	"sync"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/adminapi"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

// newSessionIndex returns the session index cfg describes, or nil when sessions or
// sessions.index are off. The config is validated, so the options are valid.
func newSessionIndex(cfg *config.Config, rc *redisconn.Client) (*sessions.Index, error) {
	if !cfg.Sessions.Enabled() || !cfg.Sessions.Index.Enabled {
		return nil, nil
	}
	return sessions.NewIndex(rc, sessions.IndexOptions{
		Prefix:        cfg.Sessions.Index.Prefix,
		SessionPrefix: cfg.Sessions.Prefix,
		MaxPerUser:    cfg.Sessions.Index.MaxPerUser,
		Subject:       cfg.Sessions.Subject,
	})
}

// startSessionIndex builds the session index and starts its background writer, which runs
// until ctx ends or stop is called; stop returns once it has stopped. Both are nil when the
// index is off (or, which validation rules out, its options are bad: that is logged).
func startSessionIndex(ctx context.Context, cfg *config.Config, rc *redisconn.Client, log *zap.Logger, m *metrics.Metrics) (ix *sessions.Index, rec *sessions.Recorder, stop func()) {
	ix, err := newSessionIndex(cfg, rc)
	if err != nil {
		log.Error("session index off", zap.Error(err))
	}
	if ix == nil {
		return nil, nil, func() {}
	}
	im := m.NewSessionIndex()
	ok, failed := im.Writes.WithLabelValues("ok"), im.Writes.WithLabelValues("error")
	ilog := log.Named("sessions")
	rec = sessions.NewRecorder(ix, sessions.RecorderOptions{
		Every:  cfg.Sessions.Index.SeenEvery.D(),
		OnDrop: im.Dropped.Inc,
		OnWrite: func(err error) {
			if err == nil {
				ok.Inc()
				return
			}
			failed.Inc()
			// The sampled logger keeps an outage to a few lines a second; the error names
			// no sid.
			ilog.Warn("session index write failed", zap.Error(err))
		},
	})
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rec.Run(ctx)
	}()
	return ix, rec, func() { cancel(); wg.Wait() }
}

// adminAPI returns the admin listener's /v1/ handler, or nil when admin.api is off.
func adminAPI(cfg *config.Config, ix *sessions.Index, log *zap.Logger) http.Handler {
	if !cfg.Admin.API {
		return nil
	}
	opts := adminapi.Options{Logger: log.Named("adminapi")}
	if ix != nil {
		opts.Sessions = ix
	}
	return adminapi.New(opts)
}
