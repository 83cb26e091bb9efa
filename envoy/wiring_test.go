package envoy_test

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/extauthz/extauthz/internal/authz"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
)

// The names Envoy and extauthz have to agree on.
const (
	// extAuthzName is the ext_authz filter's canonical name, which is also the dynamic metadata
	// namespace its Check answers land in.
	extAuthzName = "envoy.filters.http.ext_authz"
	// httpOptionsKey is where a cluster's HTTP protocol options live.
	httpOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	// Envoy's defaults for the two filters' call timeouts.
	defaultAuthzTimeout     = 200 * time.Millisecond
	defaultRateLimitTimeout = 20 * time.Millisecond
)

// extauthzSide is what the Envoy configs are checked against: the extauthz config they run
// beside and the rate limit domains it serves.
type extauthzSide struct {
	cfg      *config.Config
	policies map[string]bool
	rls      *rls.Config
	grpcPort uint32
	httpPort uint32
}

// wiring checks that a decoded config fits extauthz: filter order, the clusters the filters
// call, the policies routes name, the rate limit descriptors routes send and the admin address.
func wiring(b *bootstrapv3.Bootstrap, nodes []node, side extauthzSide) []error {
	var errs []error
	if a := b.GetAdmin().GetAddress().GetSocketAddress(); a != nil {
		if ip := net.ParseIP(a.GetAddress()); ip == nil || !ip.IsLoopback() {
			errs = append(errs, fmt.Errorf("admin: binds %q; keep Envoy's admin on loopback", a.GetAddress()))
		}
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		clusters[c.GetName()] = c
	}
	hcms := 0
	for _, n := range nodes {
		if h, ok := n.msg.Interface().(*hcmv3.HttpConnectionManager); ok {
			hcms++
			errs = append(errs, checkHCM(n.path, h, under(nodes, n.path), clusters, side)...)
		}
	}
	if hcms == 0 {
		errs = append(errs, fmt.Errorf("no http_connection_manager: nothing asks extauthz"))
	}
	return errs
}

// under returns the nodes below path.
func under(nodes []node, path string) []node {
	var out []node
	for _, n := range nodes {
		if strings.HasPrefix(n.path, path+".") {
			out = append(out, n)
		}
	}
	return out
}

// httpFilter is one decoded entry of an HCM's http_filters.
type httpFilter struct {
	name string
	cfg  proto.Message
}

func checkHCM(path string, h *hcmv3.HttpConnectionManager, below []node, clusters map[string]*clusterv3.Cluster, side extauthzSide) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
	}
	var filters []httpFilter
	for i, f := range h.GetHttpFilters() {
		if f.GetTypedConfig() == nil {
			fail("http_filters[%d] %q: no typed_config", i, f.GetName())
			continue
		}
		m, err := anypb.UnmarshalNew(f.GetTypedConfig(), proto.UnmarshalOptions{})
		if err != nil {
			fail("http_filters[%d] %q: %v", i, f.GetName(), err)
			continue
		}
		filters = append(filters, httpFilter{name: f.GetName(), cfg: m})
	}
	errs = append(errs, filterOrder(path, filters)...)

	var grpcAuthz bool
	stages := map[uint32]string{} // ratelimit filter stage -> domain
	for _, f := range filters {
		switch c := f.cfg.(type) {
		case *extauthzv3.ExtAuthz:
			if f.name != extAuthzName {
				fail("ext_authz filter is named %q: name it %s, the dynamic metadata namespace the ratelimit metadata actions read", f.name, extAuthzName)
			}
			if c.GetGrpcService() != nil {
				grpcAuthz = true
			}
			for _, e := range checkExtAuthz(c, clusters, side) {
				fail("%s: %v", f.name, e)
			}
		case *ratelimitv3.RateLimit:
			stages[c.GetStage()] = c.GetDomain()
			for _, e := range checkRateLimit(c, clusters, side) {
				fail("%s: %v", f.name, e)
			}
		}
	}

	names := map[string]bool{}
	for _, f := range filters {
		names[f.name] = true
	}
	for _, n := range below {
		// A typed_per_filter_config entry whose key names no filter of this chain is silently
		// unused: a typo would quietly drop a route's policy or its ext_authz opt-out.
		if fd := n.msg.Descriptor().Fields().ByName("typed_per_filter_config"); fd != nil && fd.IsMap() {
			n.msg.Get(fd).Map().Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				if !names[k.String()] {
					fail("%s.typed_per_filter_config: %q is not the name of a filter in this chain", n.path, k.String())
				}
				return true
			})
		}
		switch m := n.msg.Interface().(type) {
		case *extauthzv3.ExtAuthzPerRoute:
			for _, e := range checkPolicy(m, grpcAuthz, side) {
				fail("%s: %v", n.path, e)
			}
		case *routev3.Route:
			if err := caseInsensitive(m); err != nil {
				fail("%s: %v", n.path, err)
			}
		case *routev3.RateLimit:
			domain, ok := stages[m.GetStage().GetValue()]
			if !ok {
				fail("%s: rate limit stage %d: no ratelimit filter of that stage in this chain, so it is never sent", n.path, m.GetStage().GetValue())
				continue
			}
			for _, e := range checkDescriptor(domain, m, side) {
				fail("%s: %v", n.path, e)
			}
		}
	}
	return errs
}

// filterOrder wants ext_authz, then ratelimit (if any), then the router, last. ext_authz must
// come first because the ratelimit filter reads the principal it returns, and denied requests
// must not use up rate limit budget.
func filterOrder(path string, filters []httpFilter) []error {
	ea, limit, router := -1, -1, -1
	for i, f := range filters {
		switch f.cfg.(type) {
		case *extauthzv3.ExtAuthz:
			if ea < 0 {
				ea = i
			}
		case *ratelimitv3.RateLimit:
			if limit < 0 {
				limit = i
			}
		case *routerv3.Router:
			router = i
		}
	}
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: http_filters: %s", path, fmt.Sprintf(format, args...)))
	}
	switch {
	case ea < 0:
		fail("no ext_authz filter")
	case limit >= 0 && limit < ea:
		fail("ratelimit (#%d) runs before ext_authz (#%d)", limit, ea)
	}
	if router < 0 || router != len(filters)-1 {
		fail("the router must be the last filter")
	} else if ea > router || limit > router {
		fail("ext_authz and ratelimit must come before the router")
	}
	return errs
}

func checkExtAuthz(c *extauthzv3.ExtAuthz, clusters map[string]*clusterv3.Cluster, side extauthzSide) []error {
	var errs []error
	if c.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		errs = append(errs, fmt.Errorf("transport_api_version %s: want V3", c.GetTransportApiVersion()))
	}
	switch {
	case c.GetGrpcService() != nil:
		g := c.GetGrpcService()
		if g.GetEnvoyGrpc() == nil {
			errs = append(errs, fmt.Errorf("grpc_service: use envoy_grpc, so the cluster's HTTP/2 and circuit breakers apply"))
			break
		}
		errs = append(errs, checkCluster(clusters, g.GetEnvoyGrpc().GetClusterName(), side.grpcPort, true)...)
		timeout := defaultAuthzTimeout
		if g.GetTimeout() != nil {
			timeout = g.GetTimeout().AsDuration()
		}
		errs = append(errs, coversRedis("grpc_service.timeout", timeout, side)...)
	case c.GetHttpService() != nil:
		hs := c.GetHttpService()
		errs = append(errs, checkCluster(clusters, hs.GetServerUri().GetCluster(), side.httpPort, false)...)
		if hs.GetPathPrefix() != authz.PathEnvoy {
			errs = append(errs, fmt.Errorf("http_service.path_prefix %q: extauthz serves Envoy at %s", hs.GetPathPrefix(), authz.PathEnvoy))
		}
		errs = append(errs, coversRedis("http_service.server_uri.timeout", hs.GetServerUri().GetTimeout().AsDuration(), side)...)
	default:
		errs = append(errs, fmt.Errorf("neither grpc_service nor http_service"))
	}
	return errs
}

func checkRateLimit(c *ratelimitv3.RateLimit, clusters map[string]*clusterv3.Cluster, side extauthzSide) []error {
	var errs []error
	if c.GetDomain() == "" {
		errs = append(errs, fmt.Errorf("no domain"))
	} else if !side.rls.HasDomain(c.GetDomain()) {
		errs = append(errs, fmt.Errorf("domain %q is not in extauthz's ratelimit.config_dir (has %v)", c.GetDomain(), side.rls.Domains()))
	}
	if c.GetEnableXRatelimitHeaders() != ratelimitv3.RateLimit_OFF {
		errs = append(errs, fmt.Errorf("enable_x_ratelimit_headers %s: extauthz adds the RateLimit headers itself", c.GetEnableXRatelimitHeaders()))
	}
	timeout := defaultRateLimitTimeout
	if c.GetTimeout() != nil {
		timeout = c.GetTimeout().AsDuration()
	}
	errs = append(errs, coversRedis("timeout", timeout, side)...)
	svc := c.GetRateLimitService()
	if svc == nil {
		return append(errs, fmt.Errorf("no rate_limit_service: every call would succeed without asking extauthz"))
	}
	if svc.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		errs = append(errs, fmt.Errorf("rate_limit_service.transport_api_version %s: want V3", svc.GetTransportApiVersion()))
	}
	if svc.GetGrpcService().GetEnvoyGrpc() == nil {
		return append(errs, fmt.Errorf("rate_limit_service: use envoy_grpc"))
	}
	return append(errs, checkCluster(clusters, svc.GetGrpcService().GetEnvoyGrpc().GetClusterName(), side.grpcPort, true)...)
}

// coversRedis wants a proxy-side timeout longer than extauthz's Redis deadline, so that a slow
// Redis ends in extauthz's own answer (an error or an open policy) rather than a proxy timeout.
func coversRedis(field string, timeout time.Duration, side extauthzSide) []error {
	redis := side.cfg.Redis.Timeout.D()
	if timeout != 0 && timeout <= redis {
		return []error{fmt.Errorf("%s %s is not above extauthz's redis.timeout %s", field, timeout, redis)}
	}
	return nil
}

// checkCluster wants the cluster to exist, every endpoint on port, and, for gRPC, HTTP/2.
func checkCluster(clusters map[string]*clusterv3.Cluster, name string, port uint32, grpc bool) []error {
	c, ok := clusters[name]
	if !ok {
		return []error{fmt.Errorf("cluster %q is not defined in static_resources.clusters", name)}
	}
	var errs []error
	n := 0
	for _, le := range c.GetLoadAssignment().GetEndpoints() {
		for _, ep := range le.GetLbEndpoints() {
			sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
			n++
			if sa.GetPortValue() != port {
				errs = append(errs, fmt.Errorf("cluster %q: endpoint %s:%d, want port %d", name, sa.GetAddress(), sa.GetPortValue(), port))
			}
		}
	}
	if n == 0 {
		errs = append(errs, fmt.Errorf("cluster %q has no endpoints", name))
	}
	if grpc && !http2(c) {
		errs = append(errs, fmt.Errorf("cluster %q: gRPC needs typed_extension_protocol_options %s with explicit_http_config.http2_protocol_options", name, httpOptionsKey))
	}
	return errs
}

func http2(c *clusterv3.Cluster) bool {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpOptionsKey]
	if !ok {
		return false
	}
	var o upstreamhttpv3.HttpProtocolOptions
	if err := a.UnmarshalTo(&o); err != nil {
		return false
	}
	return o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil
}

// caseInsensitive wants a route that names a policy to match its path in any case: the apps
// behind (Express) route case-insensitively, while extauthz's path_prefix match is
// case-sensitive, so a case-sensitive route lets /API/x fall through to a more open policy.
func caseInsensitive(r *routev3.Route) error {
	a, ok := r.GetTypedPerFilterConfig()[extAuthzName]
	if !ok {
		return nil
	}
	var pr extauthzv3.ExtAuthzPerRoute
	if err := a.UnmarshalTo(&pr); err != nil || pr.GetCheckSettings().GetContextExtensions()[authz.PolicyContextKey] == "" {
		return nil
	}
	m := r.GetMatch()
	if m.GetPrefix() == "" && m.GetPath() == "" {
		return nil
	}
	if cs := m.GetCaseSensitive(); cs == nil || cs.GetValue() {
		return fmt.Errorf("route naming policy %q matches case-sensitively: set match.case_sensitive: false", pr.GetCheckSettings().GetContextExtensions()[authz.PolicyContextKey])
	}
	return nil
}

// checkPolicy wants context_extensions to hold only the policy key, naming a policy extauthz has.
func checkPolicy(pr *extauthzv3.ExtAuthzPerRoute, grpcAuthz bool, side extauthzSide) []error {
	ext := pr.GetCheckSettings().GetContextExtensions()
	if len(ext) == 0 {
		return nil
	}
	if !grpcAuthz {
		return []error{fmt.Errorf("context_extensions are sent over gRPC only; this chain's ext_authz uses http_service")}
	}
	var errs []error
	for k, v := range ext {
		if k != authz.PolicyContextKey {
			errs = append(errs, fmt.Errorf("context_extensions key %q: extauthz reads only %q", k, authz.PolicyContextKey))
			continue
		}
		if !side.policies[v] {
			errs = append(errs, fmt.Errorf("context_extensions policy %q is not a policy in extauthz.yaml", v))
		}
	}
	return errs
}

// checkDescriptor builds the descriptor a request would send for rl, with sample values, and
// wants the domain to hold a limit for it: a descriptor no rule matches costs an RPC per request
// and limits nothing.
func checkDescriptor(domain string, rl *routev3.RateLimit, side extauthzSide) []error {
	var entries []*commonrlv3.RateLimitDescriptor_Entry
	var errs []error
	add := func(key, def, value string) {
		if key == "" {
			key = def
		}
		entries = append(entries, &commonrlv3.RateLimitDescriptor_Entry{Key: key, Value: value})
	}
	for i, a := range rl.GetActions() {
		switch {
		case a.GetRemoteAddress() != nil:
			add("remote_address", "", "192.0.2.10")
		case a.GetGenericKey() != nil:
			add(a.GetGenericKey().GetDescriptorKey(), "generic_key", a.GetGenericKey().GetDescriptorValue())
		case a.GetHeaderValueMatch() != nil:
			add(a.GetHeaderValueMatch().GetDescriptorKey(), "header_match", a.GetHeaderValueMatch().GetDescriptorValue())
		case a.GetRequestHeaders() != nil:
			add(a.GetRequestHeaders().GetDescriptorKey(), "", "sample")
		case a.GetQueryParameters() != nil:
			add(a.GetQueryParameters().GetDescriptorKey(), "", "sample")
		case a.GetMetadata() != nil:
			md := a.GetMetadata()
			errs = append(errs, checkMetadataAction(md)...)
			add(md.GetDescriptorKey(), "", "sample-principal")
		default:
			errs = append(errs, fmt.Errorf("actions[%d]: no sample value for this action in envoy_test.go; add one", i))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if side.rls.Match(domain, entries) == nil {
		keys := make([]string, len(entries))
		for i, e := range entries {
			keys[i] = e.GetKey() + "=" + e.GetValue()
		}
		errs = append(errs, fmt.Errorf("descriptor (%s) has no limit in domain %q of rls.d", strings.Join(keys, ", "), domain))
	}
	return errs
}

// checkMetadataAction wants a read of ext_authz's metadata to name a field extauthz sets.
func checkMetadataAction(md *routev3.RateLimit_Action_MetaData) []error {
	key := md.GetMetadataKey()
	if key.GetKey() != extAuthzName {
		return nil
	}
	var errs []error
	if md.GetSource() != routev3.RateLimit_Action_MetaData_DYNAMIC {
		errs = append(errs, fmt.Errorf("metadata action reads %s from %s: ext_authz writes DYNAMIC metadata", extAuthzName, md.GetSource()))
	}
	fields := []string{authz.MetaPrincipal, authz.MetaAuth, authz.MetaTier, authz.MetaPolicy}
	if p := key.GetPath(); len(p) != 1 || !slices.Contains(fields, p[0].GetKey()) {
		errs = append(errs, fmt.Errorf("metadata action path %v: extauthz sets one level, one of %v", p, fields))
	}
	return errs
}
