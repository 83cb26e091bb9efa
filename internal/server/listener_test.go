package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/metrics"
)

// okHandler answers 200 without reading the body, as the authorization endpoints do.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Extauthz-Status", "200")
	w.WriteHeader(http.StatusOK)
})

// rawConn is a client connection that speaks HTTP/1.1 by hand, so that a test controls
// exactly what is sent and when.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, r: bufio.NewReader(c)}
}

// roundTrip sends raw and reads one response.
func (c *rawConn) roundTrip(t *testing.T, raw string) *http.Response {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// closedWithin reports whether the server closes c within d: a read ends with EOF or a reset
// rather than the client's own deadline.
func (c *rawConn) closedWithin(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

const getForward = "GET /forward HTTP/1.1\r\nHost: x\r\n\r\n"

// At the cap, a new connection closes the longest idle keep-alive connection and is served;
// the count of open connections never passes the cap.
func TestHTTPConnectionCapEvictsIdle(t *testing.T) {
	m := metrics.New()
	s := start(t, Options{HTTPHandler: okHandler, HTTP: HTTPLimits{MaxConnections: 3}, Metrics: m})
	addr := s.HTTPAddr().String()
	var idle []*rawConn
	for i := range 3 {
		c := dialRaw(t, addr)
		if resp := c.roundTrip(t, getForward); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		idle = append(idle, c)
		// The server marks a connection idle just after its answer is out, so wait for that:
		// the connections must turn idle in the order they were opened.
		waitFor(t, 2*time.Second, fmt.Sprintf("%d idle connections", i+1), func() bool { return idleConns(s.httpConns) == i+1 })
	}

	c := dialRaw(t, addr)
	if resp := c.roundTrip(t, getForward); resp.StatusCode != 200 {
		t.Fatalf("request at the cap: status %d", resp.StatusCode)
	}
	if !idle[0].closedWithin(2 * time.Second) {
		t.Fatal("the longest idle connection was not closed to make room")
	}
	if n := s.httpConns.count(); n > 3 {
		t.Fatalf("%d connections open, cap 3", n)
	}
	if got := counter(t, m, "limited", "http", actionEvictedIdle); got != 1 {
		t.Fatalf("evicted_idle = %v, want 1", got)
	}
	if got := counter(t, m, "open", "http"); got != 3 {
		t.Fatalf("extauthz_open_connections{listener=http} = %v, want 3", got)
	}
	// The others are still served.
	if resp := idle[2].roundTrip(t, getForward); resp.StatusCode != 200 {
		t.Fatalf("a connection that was not evicted: status %d", resp.StatusCode)
	}
}

// A connection in the middle of a request is never evicted: with every connection busy, a
// new one is refused instead.
func TestHTTPConnectionCapRefusesWhenNoneIdle(t *testing.T) {
	g := newGate()
	m := metrics.New()
	s := start(t, Options{
		HTTPHandler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.wait(r.Context()) }),
		HTTP:        HTTPLimits{MaxConnections: 1},
		Metrics:     m,
	})
	addr := s.HTTPAddr().String()
	busy := dialRaw(t, addr)
	if _, err := io.WriteString(busy, getForward); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the request in the handler", func() bool { return g.inside() == 1 })
	c := dialRaw(t, addr)
	if !c.closedWithin(2 * time.Second) {
		t.Fatal("a connection past the cap was not closed")
	}
	if got := counter(t, m, "limited", "http", actionRefused); got != 1 {
		t.Fatalf("refused = %v, want 1", got)
	}
	close(g.open)
	_ = busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(busy.r, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the busy connection's answer: %v %v", resp, err)
	}
	resp.Body.Close()
}

// gRPC connections are never taken for idle: one past the cap is refused, and the open one
// keeps working.
func TestGRPCConnectionCap(t *testing.T) {
	m := metrics.New()
	s := start(t, Options{GRPC: GRPCLimits{MaxConnections: 1}, Metrics: m})
	conn, err := grpc.NewClient(s.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, s.GRPCAddr().String())
	if !c.closedWithin(2 * time.Second) {
		t.Fatal("a gRPC connection past the cap was not closed")
	}
	if got := counter(t, m, "limited", "grpc", actionRefused); got != 1 {
		t.Fatalf("refused = %v, want 1", got)
	}
	if _, err := hc.Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("the connection within the cap: %v", err)
	}
}

func TestHTTPListenerBounds(t *testing.T) {
	s := start(t, Options{HTTPHandler: okHandler, HTTP: HTTPLimits{
		ReadHeaderTimeout: 300 * time.Millisecond,
		ReadTimeout:       500 * time.Millisecond,
		IdleTimeout:       300 * time.Millisecond,
		MaxHeaderBytes:    1 << 10,
		MaxBodyBytes:      100,
	}})
	addr := s.HTTPAddr().String()

	t.Run("body over the cap is refused unread", func(t *testing.T) {
		c := dialRaw(t, addr)
		resp := c.roundTrip(t, "POST /forward HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
		if resp.StatusCode != 413 || resp.Header.Get("X-Extauthz-Status") != "413" || !resp.Close {
			t.Fatalf("got %d %q close=%v, want 413 with X-Extauthz-Status: 413 and Connection: close",
				resp.StatusCode, resp.Header.Get("X-Extauthz-Status"), resp.Close)
		}
	})
	t.Run("chunked body is answered and the connection closed", func(t *testing.T) {
		c := dialRaw(t, addr)
		resp := c.roundTrip(t, "POST /forward HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
		if resp.StatusCode != 200 || !resp.Close {
			t.Fatalf("got %d close=%v, want 200 with Connection: close", resp.StatusCode, resp.Close)
		}
		if !c.closedWithin(2 * time.Second) {
			t.Fatal("connection kept open with a chunked body unread")
		}
	})
	t.Run("small body keeps the connection", func(t *testing.T) {
		c := dialRaw(t, addr)
		resp := c.roundTrip(t, "POST /forward HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
		if resp.StatusCode != 200 || resp.Close {
			t.Fatalf("got %d close=%v, want 200 keep-alive", resp.StatusCode, resp.Close)
		}
		if resp := c.roundTrip(t, getForward); resp.StatusCode != 200 {
			t.Fatalf("second request: %d", resp.StatusCode)
		}
	})
	t.Run("slow body is cut at read_timeout", func(t *testing.T) {
		c := dialRaw(t, addr)
		t0 := time.Now()
		if _, err := io.WriteString(c, "POST /forward HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			c.closedWithin(5 * time.Second)
		}()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
	drip:
		for range 50 {
			select {
			case <-closed:
				break drip
			case <-tick.C:
				if _, err := c.Write([]byte("x")); err != nil {
					break drip
				}
			}
		}
		<-closed
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("a 1-byte-per-50ms body held the connection %v; read_timeout is 500ms", d)
		}
	})
	t.Run("slow headers are cut at read_header_timeout", func(t *testing.T) {
		c := dialRaw(t, addr)
		t0 := time.Now()
		if _, err := io.WriteString(c, "GET /forward HTTP/1.1\r\nHost: x\r\n"); err != nil {
			t.Fatal(err)
		}
		if !c.closedWithin(3 * time.Second) {
			t.Fatal("connection with unfinished headers never closed")
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("unfinished headers held the connection %v", d)
		}
	})
	t.Run("idle keep-alive is closed at idle_timeout", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.roundTrip(t, getForward)
		t0 := time.Now()
		if !c.closedWithin(3 * time.Second) {
			t.Fatal("idle connection never closed")
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("idle connection closed after %v; idle_timeout is 300ms", d)
		}
	})
	t.Run("headers over the cap are refused", func(t *testing.T) {
		c := dialRaw(t, addr)
		big := fmt.Sprintf("GET /forward HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 8<<10))
		if resp := c.roundTrip(t, big); resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("got %d, want 431", resp.StatusCode)
		}
	})
}

// /debug/pprof is served only with Pprof on a loopback address, and its cmdline masks
// credentials.
func TestPprof(t *testing.T) {
	saved := os.Args
	os.Args = []string{"extauthz", "serve", "--redis-url", "redis://user:hunter2@10.0.0.1:6379/0"}
	t.Cleanup(func() { os.Args = saved })
	s := start(t, Options{Pprof: true})
	admin := "http://" + s.AdminAddr().String()
	if code, _ := get(t, admin+"/debug/pprof/"); code != 200 {
		t.Fatalf("/debug/pprof/ with Pprof on loopback = %d, want 200", code)
	}
	code, body := get(t, admin+"/debug/pprof/cmdline")
	if code != 200 || strings.Contains(body, "hunter2") || !strings.Contains(body, "redis://user:***@10.0.0.1:6379/0") {
		t.Fatalf("/debug/pprof/cmdline = %d %q, want the password masked", code, body)
	}
}
