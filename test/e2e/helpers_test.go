package e2e

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/redistest"
)

// requireBinary returns the path of an external program the test needs. Without it the test
// is skipped with a message, except under CI (CI set), where it fails: CI must run it.
func requireBinary(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found on PATH; .ci/run must install it (%s)", name, install)
	}
	t.Skipf("%s not found on PATH: install it (%s) to run this test", name, install)
	return ""
}

// proc is one external process a test started (node, nginx, caddy). It runs in its own
// process group, dies with the test binary (Pdeathsig), and is stopped at cleanup.
type proc struct {
	name string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
}

// startProc starts cmd and registers its stop with t.Cleanup. Its output goes to an in-memory
// log that failures print.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group and waits up to 5 s before SIGKILL. It is safe to
// call more than once.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	// The group is the process's own (Setpgid), so this reaches nginx's workers too; nginx's
	// master waits for them before it exits.
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// waitLog waits until the process has printed want, failing the test when it exits first
// or timeout passes.
func (p *proc) waitLog(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(p.logs.String(), want) {
		if p.exited() {
			t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, want, p.logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not print %q within %v:\n%s", p.name, want, timeout, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitListen waits until addr accepts TCP connections.
func (p *proc) waitListen(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before listening on %s:\n%s", p.name, p.err, addr, p.logs.String())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s within %v:\n%s", p.name, addr, timeout, p.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// signCookie is express-session's cookie value for sid signed with secret, as it appears in
// a Cookie header: "s:" + sid + "." + base64(HMAC-SHA256(secret, sid)) without padding, then
// URL-encoded the way the cookie module's encodeURIComponent does it.
func signCookie(sid, secret string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(sid))
	raw := "s:" + sid + "." + base64.RawStdEncoding.EncodeToString(m.Sum(nil))
	return encodeURIComponent(raw)
}

// encodeURIComponent is JavaScript's: everything but A-Z a-z 0-9 - _ . ! ~ * ' ( ) is
// percent-encoded.
func encodeURIComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// sidOf returns the session id inside a URL-encoded signed cookie value.
func sidOf(t *testing.T, cookie string) string {
	t.Helper()
	raw, err := url.PathUnescape(cookie)
	if err != nil || !strings.HasPrefix(raw, "s:") {
		t.Fatalf("not a signed session cookie: %q", cookie)
	}
	dot := strings.LastIndexByte(raw, '.')
	if dot < 2 {
		t.Fatalf("not a signed session cookie: %q", cookie)
	}
	return raw[2:dot]
}

// writeSession stores a session the way connect-redis does (key "sess:"+sid, JSON with a
// cookie object and the app's fields at the top level, EX from maxAge) and returns the
// cookie value signed with secret.
func writeSession(t *testing.T, r *redistest.Server, sid, secret string, fields map[string]any) string {
	t.Helper()
	data := sessionJSON(t, fields)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, err := r.Do(ctx, "SET", "sess:"+sid, data, "EX", "3600"); err != nil || out != "+OK" {
		t.Fatalf("write session %s: %q %v", sid, out, err)
	}
	return signCookie(sid, secret)
}

// dialCheck opens a gRPC connection to the sidecar's ext_authz service.
func dialCheck(t *testing.T, s *sidecar) authv3.AuthorizationClient {
	t.Helper()
	conn, err := grpc.NewClient(s.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", s.grpcAddr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// checkRequest is an Envoy-shaped CheckRequest: the path carries its query string, headers
// are lower-case, the source is a socket address, and policy (when set) comes in
// context_extensions the way a route's per_filter_config puts it there.
func checkRequest(method, path string, headers map[string]string, policy string) *authv3.CheckRequest {
	hs := map[string]string{":authority": "app.example", "user-agent": "e2e"}
	for k, v := range headers {
		hs[strings.ToLower(k)] = v
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40123}},
		}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:       "e2e",
			Method:   method,
			Path:     path,
			Host:     "app.example",
			Scheme:   "http",
			Protocol: "HTTP/1.1",
			Headers:  hs,
		}},
	}}
	if policy != "" {
		req.Attributes.ContextExtensions = map[string]string{"policy": policy}
	}
	return req
}

// check sends one Check call with a deadline.
func check(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check %s %s: %v", req.GetAttributes().GetRequest().GetHttp().GetMethod(), req.GetAttributes().GetRequest().GetHttp().GetPath(), err)
	}
	return resp
}

// headerValue finds name (case-insensitively) in a list of header options.
func headerValue(hs []*corev3.HeaderValueOption, name string) (*corev3.HeaderValueOption, bool) {
	for _, h := range hs {
		if strings.EqualFold(h.GetHeader().GetKey(), name) {
			return h, true
		}
	}
	return nil, false
}

// readAll reads a body up to 1 MiB.
func readAll(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 1<<20))
	return string(b)
}

// firstLine returns the first line of s without its newline.
func firstLine(s string) string {
	sc := bufio.NewScanner(strings.NewReader(s))
	if sc.Scan() {
		return strings.TrimSpace(sc.Text())
	}
	return ""
}
