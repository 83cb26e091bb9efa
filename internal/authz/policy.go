// Package authz is the decision core of ext_authz: it reads what a transport received into
// one canonical request, matches it to a compiled route policy (internal/policy), resolves who
// the caller is (an express-session cookie or an API key), checks roles and scopes, applies the
// policy's rate limits, and answers allow or deny with the headers each proxy needs. The gRPC
// Check server and the HTTP authorization handlers are thin transports over the same Engine.
package authz

import "github.com/extauthz/extauthz/internal/policy"

// Auth modes of a policy.
const (
	AuthNone     = policy.AuthNone
	AuthSession  = policy.AuthSession
	AuthAPIKey   = policy.AuthAPIKey
	AuthAny      = policy.AuthAny
	AuthOptional = policy.AuthOptional
)
