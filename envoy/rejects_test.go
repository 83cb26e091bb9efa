package envoy_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestRejects proves that each check can fail: every case breaks a good config in one way and
// wants the error that names it.
func TestRejects(t *testing.T) {
	side := loadSide(t)
	// Paths into sidecar.yaml and http-service.yaml.
	hcm := []any{"static_resources", "listeners", 0, "filter_chains", 0, "filters", 0, "typed_config"}
	filter := func(i int) []any { return append(clone(hcm), "http_filters", i, "typed_config") }
	route := func(i int) []any { return append(clone(hcm), "route_config", "virtual_hosts", 0, "routes", i) }
	cluster := func(i int) []any { return []any{"static_resources", "clusters", i} }

	tests := []struct {
		name   string
		file   string
		mutate func(t *testing.T, tree any)
		want   string
	}{
		{
			name: "unknown field inside a typed_config",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				g := obj(t, tree, append(filter(0), "grpc_service")...)
				g["timout"] = g["timeout"]
				delete(g, "timeout")
			},
			want: `unknown field "timout"`,
		},
		{
			name:   "unknown top-level field",
			file:   "sidecar.yaml",
			mutate: func(t *testing.T, tree any) { obj(t, tree)["static_resource"] = map[string]any{} },
			want:   `unknown field "static_resource"`,
		},
		{
			name: "unregistered @type",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, filter(0)...)["@type"] = "type.googleapis.com/envoy.extensions.filters.http.nope.v3.Nope"
			},
			want: "unable to resolve",
		},
		{
			name: "negative timeout inside an Any fails ValidateAll",
			file: "http-service.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(filter(1), "http_service", "server_uri")...)["timeout"] = "-1s"
			},
			want: "HttpUri.Timeout",
		},
		{
			name:   "negative connect_timeout fails ValidateAll",
			file:   "sidecar.yaml",
			mutate: func(t *testing.T, tree any) { obj(t, tree, cluster(1)...)["connect_timeout"] = "-1s" },
			want:   "Cluster.ConnectTimeout",
		},
		{
			name: "negative gRPC timeout, which ValidateAll allows",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(filter(0), "grpc_service")...)["timeout"] = "-0.2s"
			},
			want: "negative duration",
		},
		{
			name: "deprecated field",
			file: "http-service.yaml",
			mutate: func(t *testing.T, tree any) {
				ea := obj(t, tree, filter(1)...)
				hs := obj(t, ea, "http_service")
				hs["authorization_request"] = map[string]any{"allowed_headers": ea["allowed_headers"]}
				delete(ea, "allowed_headers")
			},
			want: "allowed_headers: field is deprecated",
		},
		{
			name: "ratelimit before ext_authz",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				fs := get(t, tree, append(clone(hcm), "http_filters")...).([]any)
				fs[0], fs[1] = fs[1], fs[0]
			},
			want: "runs before ext_authz",
		},
		{
			name: "router not last",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				fs := get(t, tree, append(clone(hcm), "http_filters")...).([]any)
				fs[1], fs[2] = fs[2], fs[1]
			},
			want: "router must be the last filter",
		},
		{
			name: "ext_authz under another name",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(clone(hcm), "http_filters", 0)...)["name"] = "authz"
			},
			want: "dynamic metadata namespace",
		},
		{
			name: "policy extauthz does not have",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				ext := obj(t, tree, append(route(2), "typed_per_filter_config", extAuthzName, "check_settings", "context_extensions")...)
				ext["policy"] = "apii"
			},
			want: `policy "apii" is not a policy in extauthz.yaml`,
		},
		{
			name: "context_extensions key extauthz ignores",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				ext := obj(t, tree, append(route(2), "typed_per_filter_config", extAuthzName, "check_settings", "context_extensions")...)
				ext["polciy"] = ext["policy"]
				delete(ext, "policy")
			},
			want: `key "polciy"`,
		},
		{
			name: "case-sensitive route naming a policy",
			file: "front-proxy.yaml",
			mutate: func(t *testing.T, tree any) {
				delete(obj(t, tree, append(clone(hcm), "route_config", "virtual_hosts", 0, "routes", 2, "match")...), "case_sensitive")
			},
			want: `route naming policy "api" matches case-sensitively`,
		},
		{
			name: "typed_per_filter_config key naming no filter",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				pf := obj(t, tree, append(route(0), "typed_per_filter_config")...)
				pf["envoy.filters.http.extauthz"] = pf[extAuthzName]
				delete(pf, extAuthzName)
			},
			want: "is not the name of a filter in this chain",
		},
		{
			name: "gRPC cluster on the HTTP port",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				sa := obj(t, tree, append(cluster(1), "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address")...)
				sa["port_value"] = int64(9002)
			},
			want: "want port 9001",
		},
		{
			name:   "gRPC cluster without HTTP/2",
			file:   "sidecar.yaml",
			mutate: func(t *testing.T, tree any) { delete(obj(t, tree, cluster(1)...), "typed_extension_protocol_options") },
			want:   "gRPC needs",
		},
		{
			name: "filter calling a cluster that does not exist",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(filter(1), "rate_limit_service", "grpc_service", "envoy_grpc")...)["cluster_name"] = "ratelimit"
			},
			want: `cluster "ratelimit" is not defined`,
		},
		{
			name: "http_service on the wrong path",
			file: "http-service.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(filter(1), "http_service")...)["path_prefix"] = "/authz"
			},
			want: "extauthz serves Envoy at /envoy",
		},
		{
			name:   "ratelimit timeout left at Envoy's 20ms",
			file:   "sidecar.yaml",
			mutate: func(t *testing.T, tree any) { delete(obj(t, tree, filter(1)...), "timeout") },
			want:   "is not above extauthz's redis.timeout",
		},
		{
			name: "descriptor without a limit",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, append(route(1), "route", "rate_limits", 1, "actions", 0, "generic_key")...)["descriptor_value"] = "signup"
			},
			want: "(route=signup, remote_address=192.0.2.10) has no limit",
		},
		{
			name: "metadata field extauthz never sets",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				mk := obj(t, tree, append(route(2), "route", "rate_limits", 1, "actions", 0, "metadata", "metadata_key")...)
				mk["path"] = []any{map[string]any{"key": "user"}}
			},
			want: "extauthz sets one level",
		},
		{
			name: "rate limit domain extauthz does not serve",
			file: "sidecar.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, filter(1)...)["domain"] = "egde"
			},
			want: `domain "egde" is not in extauthz's ratelimit.config_dir`,
		},
		{
			name: "admin on every interface",
			file: "front-proxy.yaml",
			mutate: func(t *testing.T, tree any) {
				obj(t, tree, "admin", "address", "socket_address")["address"] = "0.0.0.0"
			},
			want: "keep Envoy's admin on loopback",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tree := parseFile(t, tt.file)
			if err := check(tree, side); err != nil {
				t.Fatalf("%s before the change: %v", tt.file, err)
			}
			tt.mutate(t, tree)
			err := check(tree, side)
			if err == nil {
				t.Fatalf("%s with the change: no error, want one containing %q", tt.file, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s with the change: got %v\nwant an error containing %q", tt.file, err, tt.want)
			}
		})
	}
}

// get follows path (map keys and slice indexes) into a parsed YAML tree.
func get(t *testing.T, v any, path ...any) any {
	t.Helper()
	for i, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				t.Fatalf("%v: not a mapping", path[:i+1])
			}
			if v, ok = m[k]; !ok {
				t.Fatalf("%v: no such key", path[:i+1])
			}
		case int:
			s, ok := v.([]any)
			if !ok || k >= len(s) {
				t.Fatalf("%v: not a list with that index", path[:i+1])
			}
			v = s[k]
		default:
			t.Fatalf("%v: bad path element %v", path, p)
		}
	}
	return v
}

// obj is get for a mapping.
func obj(t *testing.T, v any, path ...any) map[string]any {
	t.Helper()
	m, ok := get(t, v, path...).(map[string]any)
	if !ok {
		t.Fatalf("%s: not a mapping", fmt.Sprint(path...))
	}
	return m
}

// clone copies a path so that appending to it never writes into a shared array.
func clone(p []any) []any { return append([]any(nil), p...) }
