package authz

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/redistest"
)

func checkClient(t *testing.T, e *Engine) authv3.AuthorizationClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, NewCheckServer(e))
	go func() { _ = gs.Serve(l) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func checkRequest(method, path string, headers map[string]string, ext map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "192.0.2.9", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Host: "example.com", Headers: headers,
		}},
		ContextExtensions: ext,
	}}
}

func TestCheckOverGRPC(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	c := checkClient(t, newTestEngine(t, rdb))
	ctx := context.Background()

	// Allowed: identity headers overwrite, missing ones removed, metadata set.
	resp, err := c.Check(ctx, checkRequest("GET", "/admin/panel?x=1", map[string]string{"cookie": "sid=alice", "x-user-id": "forged"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status.Code != int32(code.Code_OK) {
		t.Fatalf("status = %v", resp.Status)
	}
	ok := resp.GetOkResponse()
	var got []string
	for _, h := range ok.Headers {
		if h.AppendAction != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Fatalf("header %s has append_action %v", h.Header.Key, h.AppendAction)
		}
		got = append(got, h.Header.Key+"="+h.Header.Value)
	}
	if strings.Join(got, ",") != "x-user-id=alice,x-user-role=admin" {
		t.Fatalf("ok_response.headers = %v", got)
	}
	for _, h := range ok.HeadersToRemove {
		if h == "x-user-id" || h == "x-user-role" {
			t.Fatalf("a header that is set is also removed: %v", ok.HeadersToRemove)
		}
	}
	if p := resp.DynamicMetadata.Fields[MetaPrincipal].GetStringValue(); p != "alice" {
		t.Fatalf("metadata principal = %q", p)
	}

	// Denied: 401 with a JSON body and append_action on every header.
	resp, err = c.Check(ctx, checkRequest("GET", "/admin/panel", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	den := resp.GetDeniedResponse()
	if resp.Status.Code != int32(code.Code_UNAUTHENTICATED) || den.Status.Code != 401 || den.Body != `{"error":"authentication required"}` {
		t.Fatalf("denied = %v %v", resp.Status, den)
	}
	for _, h := range den.Headers {
		if h.AppendAction != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Fatalf("denied header %s without append_action", h.Header.Key)
		}
	}

	// 429 after the login limit, from the socket address.
	for i := 0; i < 2; i++ {
		if resp, _ = c.Check(ctx, checkRequest("POST", "/login", nil, nil)); resp.GetOkResponse() == nil {
			t.Fatalf("login %d denied", i+1)
		}
		if len(resp.GetOkResponse().ResponseHeadersToAdd) == 0 {
			t.Fatal("no RateLimit headers on an allowed, limited request")
		}
	}
	resp, _ = c.Check(ctx, checkRequest("POST", "/login", nil, nil))
	if resp.GetDeniedResponse().GetStatus().GetCode() != 429 || resp.Status.Code != int32(code.Code_RESOURCE_EXHAUSTED) {
		t.Fatalf("3rd login = %v", resp)
	}
	hasRetry := false
	for _, h := range resp.GetDeniedResponse().Headers {
		if h.Header.Key == "Retry-After" {
			hasRetry = true
		}
	}
	if !hasRetry {
		t.Fatal("429 without Retry-After")
	}

	// A route naming its policy through context_extensions.
	resp, _ = c.Check(ctx, checkRequest("GET", "/anything", nil, map[string]string{"policy": "health"}))
	if resp.GetOkResponse() == nil {
		t.Fatalf("named policy: %v", resp)
	}

	// Redis down under a closed policy: error_response and a non-OK status, never a fake deny.
	r.Stop()
	resp, err = c.Check(ctx, checkRequest("GET", "/admin/x", map[string]string{"cookie": "sid=down"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetErrorResponse() == nil || resp.Status.Code == int32(code.Code_OK) {
		t.Fatalf("backend failure = %v", resp)
	}
}

func TestCheckWithHeaderMap(t *testing.T) {
	down := downClient(t)
	e := newTestEngine(t, down)
	req := checkRequest("GET", "/admin/x", nil, nil)
	req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "Cookie", RawValue: []byte("sid=alice")},
	}}
	resp, err := NewCheckServer(e).Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil {
		t.Fatalf("header_map cookie not used: %v", resp)
	}
}

func TestHTTPModes(t *testing.T) {
	r := redistest.Start(t)
	rdb := redisClient(t, r)
	srv := httptest.NewServer(NewHTTPHandler(newTestEngine(t, rdb)))
	t.Cleanup(srv.Close)

	do := func(method, path string, h map[string]string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		for k, v := range h {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	// Envoy http_service: original method and path after the prefix.
	if resp := do("GET", "/envoy/admin/x", map[string]string{"Cookie": "sid=alice"}); resp.StatusCode != 200 || resp.Header.Get("X-User-Id") != "alice" {
		t.Fatalf("envoy allow: %d %v", resp.StatusCode, resp.Header)
	}
	// On an open route the identity headers a client might send are listed for Envoy to strip.
	if resp := do("GET", "/envoy/healthz", map[string]string{"X-User-Id": "forged"}); resp.StatusCode != 200 ||
		!strings.Contains(resp.Header.Get("X-Envoy-Auth-Headers-To-Remove"), "x-user-id") {
		t.Fatalf("envoy open route: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := do("GET", "/envoy/admin/x", nil); resp.StatusCode != 401 {
		t.Fatalf("envoy deny: %d", resp.StatusCode)
	}
	// nginx: original request in X-Original-*; 429 becomes 403 + X-Extauthz-Status.
	// No trusted_proxies: the peer (this test, 127.0.0.1) is the client whatever the headers say.
	nginx := map[string]string{"X-Original-Method": "POST", "X-Original-Uri": "/login?next=/", "X-Real-Ip": "198.51.100.1"}
	for i := 0; i < 2; i++ {
		if resp := do("GET", "/nginx", nginx); resp.StatusCode != 200 {
			t.Fatalf("nginx login %d: %d", i+1, resp.StatusCode)
		}
	}
	resp := do("GET", "/nginx", nginx)
	if resp.StatusCode != 403 || resp.Header.Get(StatusHeader) != "429" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("nginx 429 mapping: %d %v", resp.StatusCode, resp.Header)
	}
	// forward_auth: X-Forwarded-*; denials verbatim (429 stays 429).
	fwd := map[string]string{"X-Forwarded-Method": "POST", "X-Forwarded-Uri": "/login", "X-Forwarded-For": "203.0.113.5, 198.51.100.1"}
	if resp := do("GET", "/forward", fwd); resp.StatusCode != 429 || resp.Header.Get("RateLimit") == "" {
		t.Fatalf("forward 429 (same peer as nginx; forwarding headers are not trusted): %d %v", resp.StatusCode, resp.Header)
	}
	// The operator names a policy in the endpoint's path; the query string (which Caddy passes
	// through from the client) never chooses one, and an unknown name is refused, never a fallback.
	if resp := do("GET", "/forward/health", map[string]string{"X-Forwarded-Uri": "/x"}); resp.StatusCode != 200 {
		t.Fatalf("forward with a named policy: %d", resp.StatusCode)
	}
	if resp := do("GET", "/forward?policy=health", map[string]string{"X-Forwarded-Uri": "/x"}); resp.StatusCode != 403 {
		t.Fatalf("a client's ?policy= chose a policy: %d", resp.StatusCode)
	}
	if resp := do("GET", "/nginx/health?policy=admin", map[string]string{"X-Original-Uri": "/admin/x"}); resp.StatusCode != 200 {
		t.Fatalf("nginx with a named policy and a client's query: %d", resp.StatusCode)
	}
	if resp := do("GET", "/forward/nope", map[string]string{"X-Forwarded-Uri": "/healthz"}); resp.StatusCode != 500 || resp.Header.Get(StatusHeader) != "500" {
		t.Fatalf("unknown policy: %d", resp.StatusCode)
	}
	// A target components could read differently is refused on every endpoint.
	if resp := do("GET", "/forward", map[string]string{"X-Forwarded-Uri": "/healthz/../admin/x"}); resp.StatusCode != 400 {
		t.Fatalf("forward dot segments: %d", resp.StatusCode)
	}
	if resp := do("GET", "/nginx", map[string]string{"X-Original-Uri": "/healthz#/../admin"}); resp.StatusCode != 403 || resp.Header.Get(StatusHeader) != "400" {
		t.Fatalf("nginx fragment: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := do("GET", "/nginx", nil); resp.Header.Get(StatusHeader) != "400" {
		t.Fatalf("nginx without X-Original-URI: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := do("GET", "/elsewhere", nil); resp.StatusCode != 404 {
		t.Fatalf("unknown endpoint: %d", resp.StatusCode)
	}
}
