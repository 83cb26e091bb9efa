package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// outcome is how one call ended.
type outcome int

const (
	outcomeOK     outcome = iota // allowed
	outcomeOver                  // over a rate limit (OVER_LIMIT, or a Check denied with 429)
	outcomeDenied                // a Check denied for another reason
	outcomeError                 // a gRPC error or an answer of unknown shape
)

// caller makes one call. Each worker owns its caller, so a caller may reuse its request and
// response messages: a unary Invoke has finished marshalling the request and unmarshalling the
// response (which resets the message first) by the time it returns.
type caller interface {
	call(ctx context.Context) (outcome, error)
}

// rateLimitCaller calls ShouldRateLimit with one descriptor per configured key name, each
// descriptor's value drawn from a fixed set so that the number of distinct counters is bounded.
type rateLimitCaller struct {
	conn   *grpc.ClientConn
	req    *rlsv3.RateLimitRequest
	resp   *rlsv3.RateLimitResponse
	values []string // shared by all workers, read only
	rng    *rand.Rand
}

// newRateLimitCaller builds a request for domain with descriptors entries keyed k0..k(n-1).
// seed makes each worker draw a different sequence of values.
func newRateLimitCaller(conn *grpc.ClientConn, domain string, descriptors int, values []string, seed uint64) *rateLimitCaller {
	req := &rlsv3.RateLimitRequest{Domain: domain}
	for i := range descriptors {
		req.Descriptors = append(req.Descriptors, &commonrlv3.RateLimitDescriptor{
			Entries: []*commonrlv3.RateLimitDescriptor_Entry{{Key: "k" + strconv.Itoa(i), Value: values[0]}},
		})
	}
	return &rateLimitCaller{
		conn:   conn,
		req:    req,
		resp:   &rlsv3.RateLimitResponse{},
		values: values,
		rng:    rand.New(rand.NewPCG(seed, 0x6c6f616467656e)),
	}
}

func (c *rateLimitCaller) call(ctx context.Context) (outcome, error) {
	if len(c.values) > 1 {
		for _, d := range c.req.Descriptors {
			d.Entries[0].Value = c.values[c.rng.IntN(len(c.values))]
		}
	}
	if err := c.conn.Invoke(ctx, rlsv3.RateLimitService_ShouldRateLimit_FullMethodName, c.req, c.resp); err != nil {
		return outcomeError, err
	}
	switch code := c.resp.GetOverallCode(); code {
	case rlsv3.RateLimitResponse_OK:
		return outcomeOK, nil
	case rlsv3.RateLimitResponse_OVER_LIMIT:
		return outcomeOver, nil
	default:
		return outcomeError, fmt.Errorf("overall code %v", code)
	}
}

// checkOptions shape the HTTP request that a Check call describes.
type checkOptions struct {
	host, path, cookie string
	headers            map[string]string // extra headers, names in lower case as Envoy sends them
}

// checkCaller calls Check with the attributes Envoy's ext_authz filter sends for a plain GET.
type checkCaller struct {
	conn *grpc.ClientConn
	req  *authv3.CheckRequest
	resp *authv3.CheckResponse
}

func newCheckCaller(conn *grpc.ClientConn, o checkOptions, worker int) *checkCaller {
	id := fmt.Sprintf("loadgen-%d", worker)
	headers := map[string]string{
		":authority":        o.host,
		":method":           "GET",
		":path":             o.path,
		":scheme":           "http",
		"accept":            "*/*",
		"user-agent":        "extauthz-loadgen",
		"x-forwarded-proto": "http",
		"x-request-id":      id,
	}
	if o.cookie != "" {
		headers["cookie"] = o.cookie
	}
	for k, v := range o.headers {
		headers[k] = v
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress("127.0.0.1", 40000+uint32(worker%20000))},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress("127.0.0.1", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:       id,
				Method:   "GET",
				Headers:  headers,
				Path:     o.path,
				Host:     o.host,
				Scheme:   "http",
				Protocol: "HTTP/1.1",
			},
		},
	}}
	return &checkCaller{conn: conn, req: req, resp: &authv3.CheckResponse{}}
}

func socketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       ip,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func (c *checkCaller) call(ctx context.Context) (outcome, error) {
	if err := c.conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, c.req, c.resp); err != nil {
		return outcomeError, err
	}
	code := codes.Code(c.resp.GetStatus().GetCode())
	switch {
	case c.resp.GetErrorResponse() != nil:
		// The service could not decide (its backend failed): Envoy's failure mode would
		// apply, so this is an error, not a denial.
		return outcomeError, errors.New("check answered error_response: " + c.resp.GetStatus().GetMessage())
	case code == codes.OK:
		return outcomeOK, nil
	case code == codes.ResourceExhausted,
		c.resp.GetDeniedResponse().GetStatus().GetCode() == typev3.StatusCode_TooManyRequests:
		return outcomeOver, nil
	default:
		return outcomeDenied, nil
	}
}
