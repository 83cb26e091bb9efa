package authz

import (
	"slices"

	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// A policy in mode: shadow is a dry run, as OPA-Envoy's dry-run and envoyproxy/ratelimit's
// shadow_mode: decide runs in full (identity, roles and scopes, every limit counted exactly as
// the enforced policy would count it, over-limit cache included), and only then is a denial,
// or a Redis failure, turned into an allow. The decision is logged and counted as what it
// would have been (extauthz_would_deny_total{policy,reason}, the would_deny fields of the
// decision log), and as an allow with reason "shadow" in extauthz_authz_decisions_total.
//
// What the upstream gets is what an allowed request of the same caller gets: the identity
// headers of a resolved session or key, none for an anonymous caller (a bad cookie, a revoked
// key, no credential), and every configured identity header the decision does not set is
// removed all the same, so a client cannot forge one because a policy is only being tried.
// The API key's header is stripped as usual.
//
// What the client gets is what it got before the policy existed: a shadow policy adds no
// RateLimit or Retry-After headers, allowed or not. envoyproxy/ratelimit reports a shadow
// descriptor in its X-RateLimit headers (remaining 0 once over); we do not, as our own
// ShouldRateLimit does not for shadow_mode rules, because a client that honours the headers
// would slow down and the dry run would enforce after all.
//
// A Redis failure never blocks a shadow policy, whatever its failure modes say: a failure that
// would have been an error is let through like failure-open, marked x-extauthz-degraded with
// what was skipped ("auth": as an anonymous caller; "limits": with the resolved identity), and
// counted as would-deny backend_error.

// shadowState is what decide keeps, for a shadow policy only, that a denial does not carry
// and the allowed answer needs.
type shadowState struct {
	// on is set when the decision's policy is in mode: shadow.
	on bool
	// identified is set once the caller's identity was settled (resolved, anonymous, or
	// skipped under failure.auth: open): a backend error after it came from the limits.
	identified bool
	// headers are the identity headers an allowed answer sets.
	headers []ratelimit.Header
	// keyHeader is the header an API key came in, stripped upstream.
	keyHeader string
	// authDegraded and limitsDegraded record a failure-open path decide already took.
	authDegraded, limitsDegraded bool
}

// shadowed turns the decision of a shadow policy into what the proxy is told: an allow with
// the identity headers, whatever the decision was, and no RateLimit headers for the client.
func shadowed(st *policy.Set, d Decision) Decision {
	d.ResponseHeaders = nil
	if d.Allow {
		return d
	}
	sh := d.shadow
	would := d.Reason
	authDegraded, limitsDegraded := sh.authDegraded, sh.limitsDegraded
	if d.Err != nil {
		would = "backend_error"
		if sh.identified {
			limitsDegraded = true
		} else {
			authDegraded = true
		}
	}
	out := Decision{
		Allow:     true,
		Status:    200,
		Reason:    "shadow",
		WouldDeny: would,
		// Kept for the decision log only: Err is not set, so no transport reads it.
		ErrReason: d.ErrReason,
		Policy:    d.Policy,
		Kind:      d.Kind,
		Principal: d.Principal,
		Tier:      d.Tier,
		shadow:    sh,
	}
	var set []ratelimit.Header
	if sh.identified {
		set = sh.headers
	}
	var marker string
	switch {
	case authDegraded && limitsDegraded:
		marker = "auth,limits"
	case authDegraded:
		marker = "auth"
	case limitsDegraded:
		marker = "limits"
	}
	if marker != "" {
		// Clipped, so that the marker never lands in a backing array the identity shares.
		set = append(slices.Clip(set), ratelimit.Header{Name: DegradedHeader, Value: marker})
	}
	out.SetHeaders = set
	out.RemoveHeaders = removals(st, set, sh.keyHeader)
	if sh.keyHeader != "" && !st.KeepKeyHeader {
		out.KeyHeader = sh.keyHeader
	}
	return out
}
