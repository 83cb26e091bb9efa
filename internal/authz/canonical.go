package authz

import (
	"context"
	"net/netip"
	"strings"

	"github.com/extauthz/extauthz/internal/canon"
	"github.com/extauthz/extauthz/internal/policy"
)

// Raw is what a transport received, before any interpretation: the request target exactly as
// the client sent it (with its query, nothing decoded), and the address of the TCP peer or of
// Envoy's downstream.
type Raw struct {
	Method string
	// Target is the raw request target: Envoy's :path, nginx's $request_uri, Caddy's
	// X-Forwarded-Uri, or what follows /envoy.
	Target string
	Host   string
	// Headers have lower-case names, repeats joined (cookies with "; ").
	Headers map[string]string
	// HeaderCount is how many header lines arrived, repeats included.
	HeaderCount int
	// Peer is the address the request came from: the TCP peer on the HTTP endpoints, Envoy's
	// attributes.source.address over gRPC.
	Peer netip.Addr
	// Policy is the policy the operator's proxy configuration names, or "".
	Policy string
}

// Read turns what a transport received into the canonical Request the engine decides on. A
// request that different components could read differently is refused with a *canon.Error.
// Every transport calls it, so the same bytes mean the same request whichever proxy asked.
func (e *Engine) Read(raw Raw) (*Request, error) {
	return read(e.state.Load(), raw)
}

func read(st *policy.Set, raw Raw) (*Request, error) {
	if raw.HeaderCount > st.MaxHeaders {
		return nil, &canon.Error{Reason: "too_many_headers", Detail: "the request has more headers than request.max_headers allows"}
	}
	method, err := canon.Method(raw.Method)
	if err != nil {
		return nil, err
	}
	path, err := canon.Path(raw.Target, st.Target)
	if err != nil {
		return nil, err
	}
	if err := canon.Override(raw.Target, raw.Headers, st.Target.Allow); err != nil {
		return nil, err
	}
	host, err := canon.Host(raw.Host)
	if err != nil {
		return nil, err
	}
	return &Request{
		Method:   method,
		Host:     host,
		Path:     path,
		Headers:  raw.Headers,
		RemoteIP: clientIP(st, raw.Peer, raw.Headers),
		Policy:   raw.Policy,
	}, nil
}

// DecideRaw reads raw and decides it; a request that cannot be read is denied with 400.
func (e *Engine) DecideRaw(ctx context.Context, raw Raw) Decision {
	return e.decideRaw(ctx, e.state.Load(), raw)
}

// decideRaw is DecideRaw on the snapshot st, which the transport may already have loaded (Check
// needs its header cap before it builds the headers).
func (e *Engine) decideRaw(ctx context.Context, st *policy.Set, raw Raw) Decision {
	r, err := read(st, raw)
	if err != nil {
		return e.refuse(st, err)
	}
	return e.decideOn(ctx, st, r)
}

// Refuse is the decision for a request that could not be read: 400, counted and logged like
// any denial, with the bounded reason of the refusal and never the request's bytes.
func (e *Engine) Refuse(err error) Decision { return e.refuse(e.state.Load(), err) }

func (e *Engine) refuse(st *policy.Set, err error) Decision {
	reason := "bad_request"
	if ce, ok := err.(*canon.Error); ok {
		reason = ce.Reason
	}
	d := Decision{
		Kind:          KindNone,
		Status:        400,
		Reason:        "bad_request",
		Message:       "request refused: " + reason,
		RemoveHeaders: removals(st, nil, ""),
	}
	e.record(d, 0)
	return d
}

// clientIP is the address limits count `by: ip` against. The peer counts unless it is a trusted
// proxy; then the proxy's header is believed: x-real-ip as it stands, x-forwarded-for read from
// the right, skipping trusted proxies, so the first address a trusted proxy saw connect is the
// client. A client can put anything at the left of x-forwarded-for, never at its right.
func clientIP(st *policy.Set, peer netip.Addr, headers map[string]string) string {
	peer = peer.Unmap()
	if !peer.IsValid() {
		return ""
	}
	if !trusted(st.TrustedProxies, peer) {
		return peer.String()
	}
	v := headers[st.ClientIPHeader]
	if v == "" {
		return peer.String()
	}
	if st.ClientIPHeader == "x-real-ip" {
		if a, ok := parseIP(v); ok {
			return a.String()
		}
		return peer.String()
	}
	client := peer
	for v != "" {
		var hop string
		if i := strings.LastIndexByte(v, ','); i >= 0 {
			hop, v = v[i+1:], v[:i]
		} else {
			hop, v = v, ""
		}
		a, ok := parseIP(hop)
		if !ok {
			// A trusted proxy appended everything to the right of here; what it could not
			// parse came from further out, so the last good hop is the client.
			break
		}
		client = a
		if !trusted(st.TrustedProxies, a) {
			break
		}
	}
	return client.String()
}

func trusted(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseIP reads one address of a forwarding header: bare, or with a port, or bracketed.
func parseIP(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// PeerAddr parses a transport's peer address ("host:port", "host" or "[v6]:port").
func PeerAddr(s string) netip.Addr {
	a, _ := parseIP(s)
	return a
}
