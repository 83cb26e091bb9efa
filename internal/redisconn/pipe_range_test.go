package redisconn

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Integer replies at the edge of int64 fail (or answer) their own command only. Redis
// answers -2^63 for a Lua number at or past 2^63 (INCRBY to 2^63-1, returned from a script)
// and an error for INCRBY past 2^63; concurrent decisions on the same pipelined connection
// all get their own replies, and the connection is never closed.
func TestPipeIntegerEdgesKeepTheConnection(t *testing.T) {
	var f failures
	_, p := startPipe(t, 5*time.Second, PipeOptions{Conns: 1, OnFailure: f.record})
	const (
		workers, each = 32, 40
		toMax         = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
		past          = "redis.call('SET', KEYS[1], '9223372036854775807') return redis.call('INCRBY', KEYS[1], 1)"
	)
	seen := make([]atomic.Bool, (workers/2)*each+1)
	var wg sync.WaitGroup
	var bad atomic.Int64
	var firstBad atomic.Value
	fail := func(format string, args ...any) {
		if bad.Add(1) == 1 {
			firstBad.Store(fmt.Sprintf(format, args...))
		}
	}
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				key := "edge:" + strconv.Itoa(w) + ":" + strconv.Itoa(i)
				switch {
				case w%2 == 0:
					n, err := p.Eval(ctx, incrScript, []string{"counter"}).Int64()
					if err != nil || n < 1 || int(n) >= len(seen) || seen[n].Swap(true) {
						fail("incr: %d, %v", n, err)
					}
				case i%2 == 0:
					n, err := p.Eval(ctx, toMax, []string{key}, "9223372036854775807").Int64()
					if err != nil || n != -1<<63 {
						fail("INCRBY to 2^63-1 from a script: %d, %v; want -2^63", n, err)
					}
				default:
					err := p.Eval(ctx, past, []string{key}).Err()
					var re replyError
					if !errors.As(err, &re) {
						fail("INCRBY past 2^63: %v, want an error reply", err)
					}
				}
				cancel()
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d calls failed or got another's reply; first: %v", n, firstBad.Load())
	}
	if got := f.list(); len(got) != 0 {
		t.Fatalf("OnFailure %v: the connection was closed", got)
	}
}

// An integer reply no int64 holds (no Redis sends one, but a proxy or a Redis-alike might)
// fails its command with errIntRange; the next command is answered on the same connection.
func TestPipeIntegerOutOfRangeFailsOneCommand(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var dials atomic.Int64
	replies := []string{":99999999999999999999\r\n", "*2\r\n:1\r\n:-99999999999999999999\r\n", "$2\r\nok\r\n"}
	var served sync.WaitGroup
	served.Add(1)
	go func() {
		defer served.Done()
		conn, err := l.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		dials.Add(1)
		br := bufio.NewReader(conn)
		for _, r := range replies {
			if _, err := readReply(br); err != nil {
				return
			}
			if _, err := conn.Write([]byte(r)); err != nil {
				return
			}
		}
		_, _ = readReply(br) // until the client closes
	}()
	c := newClient(t, Options{URL: "redis://" + l.Addr().String() + "/0", Timeout: 2 * time.Second})
	var f failures
	p := newPipe(t, c, PipeOptions{OnFailure: f.record})
	ctx := t.Context()
	if err := p.Eval(ctx, "return 1", nil).Err(); !errors.Is(err, errIntRange) {
		t.Fatalf("first reply: %v, want errIntRange", err)
	}
	if err := p.Eval(ctx, "return 1", nil).Err(); !errors.Is(err, errIntRange) {
		t.Fatalf("second reply: %v, want errIntRange", err)
	}
	if v, err := p.Get(ctx, "k").Result(); err != nil || v != "ok" {
		t.Fatalf("third reply: %q, %v; want ok", v, err)
	}
	_ = p.Close()
	served.Wait()
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d dials, want 1: the connection was not kept", n)
	}
	if got := f.list(); len(got) != 0 {
		t.Fatalf("OnFailure %v, want none", got)
	}
}
