// Command nullserver answers Envoy's ShouldRateLimit and Check with OK and does nothing else.
// It is the benchmark's ceiling: it runs with the sidecar's own gRPC server options, as a process
// of its own so its CPU can be read by PID, and whatever separates the sidecar from it is the cost
// of the sidecar's work (matching, Redis, metrics).
//
// It prints "listening on ADDR" once the listener is bound (so -addr 127.0.0.1:0 works) and
// serves until SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/extauthz/extauthz/internal/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "nullserver: %v\n", err)
		os.Exit(1)
	}
}

// stopGrace bounds how long in-flight calls may finish after a signal.
const stopGrace = 5 * time.Second

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("nullserver", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen `HOST:PORT` (loopback only; port 0 picks a free one)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr %s: only loopback addresses are allowed", *addr)
	}

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer(server.GRPCOptions()...)
	rlsv3.RegisterRateLimitServiceServer(s, nullRateLimit{})
	authv3.RegisterAuthorizationServer(s, nullAuthorization{})

	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	fmt.Fprintf(stdout, "listening on %s\n", l.Addr())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// GracefulStop waits for every call, so a client that never finishes is cut off after
	// stopGrace rather than keeping the process alive.
	t := time.AfterFunc(stopGrace, s.Stop)
	defer t.Stop()
	s.GracefulStop()
	<-served
	return nil
}

// nullRateLimit answers every ShouldRateLimit with OK and an OK status per descriptor, the
// shape of the sidecar's answer when no limit is reached.
type nullRateLimit struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

var _ rlsv3.RateLimitServiceServer = nullRateLimit{}

func (nullRateLimit) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	statuses := make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(req.GetDescriptors()))
	for i := range statuses {
		statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	}
	return &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: statuses}, nil
}

// nullAuthorization allows every Check.
type nullAuthorization struct {
	authv3.UnimplementedAuthorizationServer
}

var _ authv3.AuthorizationServer = nullAuthorization{}

func (nullAuthorization) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{
		Status:       &status.Status{},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}, nil
}
