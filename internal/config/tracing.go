package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// The defaults of the tracing section.
const (
	// DefaultTracingEndpoint is an OpenTelemetry Collector (or agent) beside the sidecar,
	// listening for OTLP over gRPC on its standard port.
	DefaultTracingEndpoint = "127.0.0.1:4317"
	// DefaultTracingSampleRatio is the share of traces the sidecar starts itself. A call that
	// carries a trace context (Envoy's traceparent or B3 headers) follows the caller's
	// sampling decision instead, so with Envoy tracing on this ratio rarely applies; without
	// it, 1% of ten thousand calls a second is still a hundred traces a second.
	DefaultTracingSampleRatio = 0.01
	DefaultTracingServiceName = "extauthz"
	// DefaultTracingTimeout bounds one export to the collector, retries included, and the
	// final flush at shutdown, so a collector that is down delays exit by at most this much.
	DefaultTracingTimeout = 5 * time.Second
	// MaxTracingTimeout keeps a stuck collector from holding up shutdown for long.
	MaxTracingTimeout = time.Minute

	// EnvOTLPEndpoint and EnvOTLPTracesEndpoint are OpenTelemetry's standard variables for
	// the collector address; they override tracing.endpoint, the traces-specific one winning.
	// They never turn tracing on: an address injected into every container of a pod must not
	// change what a sidecar that does not trace does.
	EnvOTLPEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvOTLPTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
)

// Tracing configures OpenTelemetry tracing of the gRPC Check and ShouldRateLimit calls,
// exported over OTLP/gRPC. It is off by default, and then costs nothing on the request path.
type Tracing struct {
	// Enabled turns tracing on.
	Enabled bool `yaml:"enabled"`
	// Endpoint is the collector's OTLP/gRPC address: host:port, or a URL whose scheme picks
	// the transport (http:// plaintext, https:// TLS; a path is ignored).
	Endpoint string `yaml:"endpoint"`
	// Insecure sends plaintext to a host:port endpoint, which suits a collector on loopback
	// or in the same pod; false uses TLS checked against the system roots.
	Insecure bool `yaml:"insecure"`
	// SampleRatio is the share (0 to 1) of traces started here, by trace id. Calls that carry
	// a trace context follow its sampled flag.
	SampleRatio float64 `yaml:"sample_ratio"`
	// ServiceName is the service.name resource attribute of every span.
	ServiceName string `yaml:"service_name"`
	// Timeout bounds one export, retries included, and the flush at shutdown.
	Timeout Duration `yaml:"timeout"`
}

func defaultTracing() Tracing {
	return Tracing{
		Endpoint:    DefaultTracingEndpoint,
		Insecure:    true,
		SampleRatio: DefaultTracingSampleRatio,
		ServiceName: DefaultTracingServiceName,
		Timeout:     Duration(DefaultTracingTimeout),
	}
}

// tracing checks the tracing section whether or not it is enabled, so that a mistake is
// found before the day it is switched on; the one exception is an endpoint that came from
// the environment while tracing is off, which may be meant for another container.
func (k *checker) tracing() {
	t := k.c.Tracing
	if o := k.c.origins["tracing.endpoint"]; t.Enabled || o.env == "" {
		if msg := checkOTLPEndpoint(t.Endpoint); msg != "" {
			k.fail("tracing.endpoint", t.Endpoint, "%s", msg)
		}
	}
	if r := t.SampleRatio; !(r >= 0 && r <= 1) {
		k.fail("tracing.sample_ratio", r, "must be from 0 to 1, got %v", r)
	}
	if strings.TrimSpace(t.ServiceName) == "" {
		k.fail("tracing.service_name", t.ServiceName, "must not be empty")
	}
	switch {
	case t.Timeout <= 0:
		k.fail("tracing.timeout", t.Timeout, "must be > 0, got %s", t.Timeout)
	case t.Timeout.D() > MaxTracingTimeout:
		k.fail("tracing.timeout", t.Timeout, "must be at most %s, got %s", Duration(MaxTracingTimeout), t.Timeout)
	}
}

// checkOTLPEndpoint returns what is wrong with a collector address, or "". Messages do not
// quote a URL, which may hold credentials.
func checkOTLPEndpoint(ep string) string {
	if ep == "" {
		return "must be set, as host:port or http(s)://host:port"
	}
	if !strings.Contains(ep, "://") {
		host, port, err := splitAddr(ep)
		switch {
		case err != nil:
			return err.Error()
		case host == "" || port == 0:
			return fmt.Sprintf("%q needs a host and a port other than 0 (the collector's OTLP/gRPC port is usually 4317)", ep)
		}
		return ""
	}
	u, err := url.Parse(ep)
	switch {
	case err != nil:
		return "not a valid URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Sprintf("scheme %q is not http or https (OTLP/gRPC: http:// is plaintext, https:// is TLS)", u.Scheme)
	case u.User != nil:
		return "must not hold credentials: the exporter reads headers from OTEL_EXPORTER_OTLP_HEADERS"
	case u.Hostname() == "" || u.Port() == "":
		return "needs a host and a port, as in http://collector:4317"
	}
	if _, _, err := splitAddr(u.Host); err != nil || u.Port() == "0" {
		return "needs a port from 1 to 65535, as in http://collector:4317"
	}
	return ""
}

// OTLPTarget returns the host:port an endpoint names and whether it is to be reached over
// plaintext: a URL's scheme decides, otherwise Insecure. It expects a validated endpoint.
func (t Tracing) OTLPTarget() (hostPort string, plaintext bool) {
	if !strings.Contains(t.Endpoint, "://") {
		return t.Endpoint, t.Insecure
	}
	u, err := url.Parse(t.Endpoint)
	if err != nil {
		return t.Endpoint, t.Insecure
	}
	return u.Host, u.Scheme == "http"
}
