package redisclientcheck

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// cutMarker in a command makes an armed cutProxy drop that command's reply.
const cutMarker = "CUTME"

// cutProxy forwards loopback TCP to a Redis server. Armed, it lets the next command that
// contains cutMarker reach Redis and run, then closes both connections instead of
// forwarding the reply: the call ran, and its client can only see a broken connection.
// That is the moment a client's retry would run a command twice.
type cutProxy struct {
	ln     net.Listener
	target string
	armed  atomic.Int64 // cuts still to make
	cuts   atomic.Int64 // cuts made
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) Addr() string { return p.ln.Addr().String() }

// arm makes the next command with cutMarker lose its reply.
func (p *cutProxy) arm() { p.armed.Add(1) }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		if !p.track(c, s) {
			return
		}
		var cutNext atomic.Bool
		p.wg.Add(2)
		go p.pump(c, s, func(b []byte) bool {
			if bytes.Contains(b, []byte(cutMarker)) && p.takeArm() {
				cutNext.Store(true)
			}
			return false
		})
		go p.pump(s, c, func([]byte) bool {
			if cutNext.CompareAndSwap(true, false) {
				p.cuts.Add(1)
				return true
			}
			return false
		})
	}
}

// takeArm uses up one armed cut, if any is left.
func (p *cutProxy) takeArm() bool {
	for {
		n := p.armed.Load()
		if n <= 0 {
			return false
		}
		if p.armed.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// track records a client and server connection pair; false when the proxy is closing.
func (p *cutProxy) track(c, s net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		_ = c.Close()
		_ = s.Close()
		return false
	}
	p.conns[c], p.conns[s] = true, true
	return true
}

// pump copies from src to dst until either fails or drop says to cut, which closes both.
func (p *cutProxy) pump(src, dst net.Conn, drop func([]byte) bool) {
	defer p.wg.Done()
	defer src.Close()
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if drop(buf[:n]) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *cutProxy) close() {
	_ = p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}
