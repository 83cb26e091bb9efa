package rls

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/metrics"
)

// Reloader loads a config directory into a Service: on demand (SIGHUP) and, with Watch, on
// every change to the directory. A new config is validated whole and swapped atomically; a bad
// one keeps the old config, is logged with file and line, and is counted.
type Reloader struct {
	dir string
	svc *Service
	log *zap.Logger
	m   *metrics.Metrics

	mu sync.Mutex // serialises loads so an older read can never win over a newer one
}

// NewReloader returns a Reloader of dir into svc. log and m may be nil.
func NewReloader(dir string, svc *Service, log *zap.Logger, m *metrics.Metrics) *Reloader {
	if log == nil {
		log = zap.NewNop()
	}
	return &Reloader{dir: dir, svc: svc, log: log, m: m}
}

// Reload loads the directory now. It returns the load error, having kept the old config.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cfg, err := LoadDir(r.dir)
	if err != nil {
		r.log.Error("rate limit config rejected, keeping the previous one", zap.String("dir", r.dir), zap.Error(err))
		if r.m != nil {
			r.m.ConfigReloads.WithLabelValues("ratelimit", "error").Inc()
		}
		return err
	}
	r.svc.Swap(cfg)
	r.log.Info("rate limit config loaded", zap.String("dir", r.dir), zap.Strings("domains", cfg.Domains()), zap.Int("rules", cfg.NumRules()))
	if r.m != nil {
		r.m.ConfigReloads.WithLabelValues("ratelimit", "success").Inc()
		r.m.ConfigLastReload.WithLabelValues("ratelimit").SetToCurrentTime()
	}
	return nil
}

// debounce gathers the burst of events one edit or one ConfigMap swap makes into one reload.
const debounce = 150 * time.Millisecond

// Watch reloads the directory after changes until ctx ends. It watches the directory itself,
// not the files, so editors that replace files and Kubernetes' atomic ..data symlink swap are
// both seen. It returns an error only when the watch cannot be set up.
func (r *Reloader) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	dir := filepath.Clean(r.dir)
	if err := w.Add(dir); err != nil {
		w.Close()
		return err
	}
	go func() {
		defer w.Close()
		var timer *time.Timer
		var fire <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				if timer != nil {
					timer.Stop()
				}
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Op == fsnotify.Chmod {
					continue
				}
				if timer == nil {
					timer = time.NewTimer(debounce)
				} else {
					timer.Reset(debounce)
				}
				fire = timer.C
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				r.log.Warn("rate limit config watch error", zap.Error(err))
			case <-fire:
				fire = nil
				_ = r.Reload()
			}
		}
	}()
	return nil
}
