// Package tracing exports OpenTelemetry spans of the sidecar's Envoy-facing gRPC calls (Check
// and ShouldRateLimit) to a collector over OTLP/gRPC. It installs nothing global: the tracer
// provider and propagators reach the gRPC server only through GRPCServerOptions, and when
// tracing is off there is no Provider at all, so the request path carries nothing.
package tracing

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
)

// Options configures a Provider.
type Options struct {
	// Endpoint is the collector's OTLP/gRPC address as host:port.
	Endpoint string
	// Plaintext sends spans without TLS; otherwise TLS is checked against the system roots.
	Plaintext bool
	// SampleRatio is the share (0 to 1) of traces started here. Calls that carry a trace
	// context follow its sampled flag instead.
	SampleRatio float64
	// ServiceName and ServiceVersion become the service.name and service.version resource
	// attributes.
	ServiceName, ServiceVersion string
	// Timeout bounds one export, retries included, and Shutdown's final flush.
	Timeout time.Duration
	// Logger receives export failures; nil discards them.
	Logger *zap.Logger
}

// Provider is a running tracing pipeline: sampler, batch span processor and OTLP exporter,
// and the gRPC stats handler that starts a span for each traced call. A nil *Provider is
// tracing switched off; its methods do nothing.
type Provider struct {
	tp      *sdktrace.TracerProvider
	handler stats.Handler
	timeout time.Duration
}

// tracedPrefix selects the calls that are traced: Envoy's ext_authz and ratelimit services.
// Health checks and reflection are left out, since a probe every few seconds would otherwise
// start traces of its own.
const tracedPrefix = "/envoy.service."

// New builds the pipeline. It does not connect: the exporter dials in the background, so a
// collector that is down costs dropped spans and logged warnings, never a failed start.
func New(opts Options) (*Provider, error) {
	switch {
	case opts.Endpoint == "":
		return nil, errors.New("no collector endpoint")
	case !(opts.SampleRatio >= 0 && opts.SampleRatio <= 1):
		return nil, fmt.Errorf("sample ratio %v is not from 0 to 1", opts.SampleRatio)
	case opts.Timeout <= 0:
		return nil, fmt.Errorf("timeout %v must be > 0", opts.Timeout)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	// Credentials are always given explicitly, so that OTEL_EXPORTER_OTLP_INSECURE or
	// _CERTIFICATE meant for another container cannot change what the config says.
	creds := insecure.NewCredentials()
	if !opts.Plaintext {
		creds = credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	}
	// otlptracegrpc.New only uses its context to start the client, which dials lazily.
	exp, err := otlptracegrpc.New(context.Background(),
		otlptracegrpc.WithEndpoint(opts.Endpoint),
		otlptracegrpc.WithTLSCredentials(creds),
		otlptracegrpc.WithTimeout(opts.Timeout),
	)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res, err := resource.New(context.Background(),
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(
			semconv.ServiceName(opts.ServiceName),
			semconv.ServiceVersion(opts.ServiceVersion),
		),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(opts.SampleRatio))),
		sdktrace.WithResource(res),
		// The batcher never blocks a call: when the queue is full, spans are dropped.
		sdktrace.WithBatcher(loggedExporter{exp, opts.Logger}, sdktrace.WithExportTimeout(opts.Timeout)),
	)
	// Envoy sends the trace context of its active tracer: W3C traceparent with the
	// OpenTelemetry tracer, B3 with Zipkin. traceparent is extracted last, so it wins when a
	// call carries both.
	prop := propagation.NewCompositeTextMapPropagator(b3.New(), propagation.TraceContext{}, propagation.Baggage{})
	h := otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(prop),
		// Spans only: the sidecar's metrics are its Prometheus ones.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool {
			return strings.HasPrefix(info.FullMethodName, tracedPrefix)
		}),
	)
	return &Provider{tp: tp, handler: h, timeout: opts.Timeout}, nil
}

// GRPCServerOptions returns the gRPC server options that trace calls: the otelgrpc stats
// handler. It is nil for a nil Provider. The handler records the method, the status code
// and the server address; it never records metadata or messages, so cookies, API keys and
// session ids stay out of spans.
func (p *Provider) GRPCServerOptions() []grpc.ServerOption {
	if p == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.StatsHandler(p.handler)}
}

// ForceFlush exports the spans ended so far.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// Shutdown exports the spans still queued and closes the exporter, within the configured
// timeout. Call it once the gRPC server has stopped, so the last calls' spans are included.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return p.tp.Shutdown(ctx)
}

// loggedExporter logs failed exports through the sidecar's logger. The SDK would otherwise
// hand them to OpenTelemetry's global error handler, which writes plain text to stderr
// beside the JSON logs; the batch processor does nothing else with the error.
type loggedExporter struct {
	sdktrace.SpanExporter
	log *zap.Logger
}

func (e loggedExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := e.SpanExporter.ExportSpans(ctx, spans); err != nil {
		e.log.Warn("trace export failed, spans dropped", zap.Int("spans", len(spans)), zap.Error(err))
	}
	return nil
}
