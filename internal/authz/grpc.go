package authz

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// PolicyContextKey is the context_extensions key a route sets to pick a policy by name.
const PolicyContextKey = "policy"

// MetadataNamespace is where the dynamic metadata goes in Envoy when the ext_authz filter's
// name is the usual one; Envoy files it under the filter's own name whatever we say.
const (
	MetaPrincipal = "principal"
	MetaAuth      = "auth"
	MetaTier      = "tier"
	MetaPolicy    = "policy"
	// MetaWouldDeny carries, on a request a shadow policy let through, the reason enforcing
	// it would have denied it, for Envoy's access log.
	MetaWouldDeny = "would_deny"
)

// CheckServer is envoy.service.auth.v3.Authorization over an Engine.
type CheckServer struct {
	authv3.UnimplementedAuthorizationServer
	engine *Engine
}

var _ authv3.AuthorizationServer = (*CheckServer)(nil)

// NewCheckServer returns the gRPC Check service of e.
func NewCheckServer(e *Engine) *CheckServer { return &CheckServer{engine: e} }

// Check decides one request Envoy asks about.
func (s *CheckServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	http := req.GetAttributes().GetRequest().GetHttp()
	if http == nil {
		return nil, status.Error(codes.InvalidArgument, "check request has no attributes.request.http")
	}
	raw := Raw{
		Method: http.GetMethod(),
		Target: http.GetPath(),
		Host:   http.GetHost(),
		Peer:   socketIP(req.GetAttributes().GetSource().GetAddress()),
		Policy: req.GetAttributes().GetContextExtensions()[PolicyContextKey],
	}
	st := s.engine.state.Load()
	raw.Headers, raw.HeaderCount = requestHeaders(http, st.MaxHeaders)
	d := s.engine.decideRaw(ctx, st, raw)
	return checkResponse(d), nil
}

// checkResponse turns a Decision into Envoy's answer.
func checkResponse(d Decision) *authv3.CheckResponse {
	switch {
	case d.Err != nil:
		// error_response with a non-OK status: Envoy's failure_mode_allow / status_on_error
		// decide, exactly as if the service were unreachable.
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(code.Code_UNAVAILABLE), Message: "authorization backend unavailable"},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
			}},
		}
	case d.Allow:
		return &authv3.CheckResponse{
			Status: okStatus,
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:              headerOptions(d.SetHeaders),
				HeadersToRemove:      d.RemoveHeaders,
				ResponseHeadersToAdd: headerOptions(d.ResponseHeaders),
			}},
			DynamicMetadata: metadata(d),
		}
	default:
		hs := make([]ratelimit.Header, 0, len(d.ResponseHeaders)+2)
		hs = append(hs, ratelimit.Header{Name: "content-type", Value: "application/json"})
		if d.Status == 401 {
			hs = append(hs, ratelimit.Header{Name: "www-authenticate", Value: `Bearer realm="extauthz"`})
		}
		hs = append(hs, d.ResponseHeaders...)
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(grpcCodeFor(d.Status)), Message: d.Reason},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
				Headers: headerOptions(hs),
				Body:    errorBody(d.Message),
			}},
			DynamicMetadata: metadata(d),
		}
	}
}

func grpcCodeFor(httpStatus int) code.Code {
	switch httpStatus {
	case 400:
		return code.Code_INVALID_ARGUMENT
	case 500:
		return code.Code_INTERNAL
	case 401:
		return code.Code_UNAUTHENTICATED
	case 429:
		return code.Code_RESOURCE_EXHAUSTED
	default:
		return code.Code_PERMISSION_DENIED
	}
}

// headerOptions always sets append_action: newer Envoy treats an unset action as APPEND, which
// would add a second line next to a client's copy. The options and their values come from two
// backing arrays, so that n headers cost three allocations rather than 2n+1.
func headerOptions(hs []ratelimit.Header) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	opts := make([]corev3.HeaderValueOption, len(hs))
	vals := make([]corev3.HeaderValue, len(hs))
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		vals[i].Key, vals[i].Value = h.Name, h.Value
		opts[i].Header = &vals[i]
		opts[i].AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		out[i] = &opts[i]
	}
	return out
}

// okStatus is the Status of every allowed answer. Responses share it: gRPC only reads it
// (protobuf-go keeps a message's cached size atomically), and nothing here writes to it.
var okStatus = &rpcstatus.Status{Code: int32(code.Code_OK)}

// internedValues holds one read-only structpb.Value per policy name and principal kind: a
// bounded set, from the configuration and a closed list, shared by every response like
// okStatus.
var internedValues sync.Map // string -> *structpb.Value

func internedString(s string) *structpb.Value {
	if v, ok := internedValues.Load(s); ok {
		return v.(*structpb.Value)
	}
	v, _ := internedValues.LoadOrStore(s, structpb.NewStringValue(s))
	return v.(*structpb.Value)
}

func metadata(d Decision) *structpb.Struct {
	if d.Policy == "" {
		return nil
	}
	f := make(map[string]*structpb.Value, 4)
	f[MetaPolicy] = internedString(d.Policy)
	f[MetaAuth] = internedString(d.Kind)
	if d.Principal != "" {
		f[MetaPrincipal] = structpb.NewStringValue(d.Principal)
	}
	if d.Tier != "" {
		f[MetaTier] = structpb.NewStringValue(d.Tier)
	}
	if d.WouldDeny != "" {
		f[MetaWouldDeny] = internedString(d.WouldDeny)
	}
	return &structpb.Struct{Fields: f}
}

// requestHeaders returns the request's headers with lower-case names and how many header
// lines arrived. Envoy fills `headers` (duplicates already joined) unless it was told to send
// `header_map` instead; then repeats are joined here, in time linear in the input. Past max
// lines nothing is built: the request is refused for its count alone.
func requestHeaders(h *authv3.AttributeContext_HttpRequest, max int) (map[string]string, int) {
	if hs := h.GetHeaders(); len(hs) > 0 {
		return hs, len(hs)
	}
	hm := h.GetHeaderMap().GetHeaders()
	if len(hm) > max {
		return nil, len(hm)
	}
	out := make(map[string]string, len(hm))
	var repeats map[string][]string
	for _, hv := range hm {
		name := strings.ToLower(hv.GetKey())
		val := hv.GetValue()
		if val == "" && len(hv.GetRawValue()) > 0 {
			val = string(hv.GetRawValue())
		}
		prev, ok := out[name]
		if !ok {
			out[name] = val
			continue
		}
		if repeats == nil {
			repeats = map[string][]string{}
		}
		if _, started := repeats[name]; !started {
			repeats[name] = []string{prev}
		}
		repeats[name] = append(repeats[name], val)
	}
	for name, vs := range repeats {
		out[name] = strings.Join(vs, headerSep(name))
	}
	return out, len(hm)
}

// headerSep joins repeats of a header as Envoy does: cookies with "; ", the rest with ", ".
func headerSep(name string) string {
	if name == "cookie" {
		return "; "
	}
	return ", "
}

func socketIP(a *corev3.Address) netip.Addr {
	return PeerAddr(a.GetSocketAddress().GetAddress())
}

// errorBody is {"error": msg} without encoding/json on the hot path; msg is one of our own
// fixed messages, so it needs no escaping beyond quotes and backslashes.
func errorBody(msg string) string {
	var b strings.Builder
	b.Grow(len(msg) + 12)
	b.WriteString(`{"error":"`)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		if c < 0x20 {
			continue
		}
		b.WriteByte(c)
	}
	b.WriteString(`"}`)
	return b.String()
}
