// Package envoy holds the Envoy bootstrap configurations that run extauthz beside Envoy (gRPC
// ext_authz and rate limit service, or ext_authz over HTTP) and the matching extauthz and rate
// limit configs. It has no code: its tests decode every config against Envoy's v3 API and check
// that the configs agree with each other and with extauthz.
package envoy
