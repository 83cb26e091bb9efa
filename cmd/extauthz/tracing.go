package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/tracing"
)

// startTracing builds the tracing pipeline when the config turns it on. It returns nil when
// tracing is off; a nil *tracing.Provider adds no gRPC option and shuts down as a no-op.
func startTracing(c config.Tracing, log *zap.Logger) (*tracing.Provider, error) {
	if !c.Enabled {
		return nil, nil
	}
	endpoint, plaintext := c.OTLPTarget()
	p, err := tracing.New(tracing.Options{
		Endpoint:       endpoint,
		Plaintext:      plaintext,
		SampleRatio:    c.SampleRatio,
		ServiceName:    c.ServiceName,
		ServiceVersion: version,
		Timeout:        c.Timeout.D(),
		Logger:         log.Named("tracing"),
	})
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	log.Info("tracing Check and ShouldRateLimit over OTLP/gRPC",
		zap.String("endpoint", endpoint), zap.Bool("plaintext", plaintext),
		zap.Float64("sample_ratio", c.SampleRatio), zap.String("service_name", c.ServiceName))
	return p, nil
}

// stopTracing flushes the spans still queued, within tracing.timeout. serve defers it, so it
// runs once the listeners have drained and the last calls' spans have ended.
func stopTracing(p *tracing.Provider, log *zap.Logger) {
	if err := p.Shutdown(context.Background()); err != nil {
		log.Warn("tracing: final flush failed, spans dropped", zap.Error(err))
	}
}
