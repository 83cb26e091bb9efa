package redisconn

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// BenchmarkLatency measures where one decision's Redis time goes at light load: calls one at a
// time, 200 µs apart (5,000/s), each timed from its start. It reports p50 and p99 in µs for
//
//   - raw: EVALSHA written and its reply read on a dedicated connection by the calling
//     goroutine itself: the kernel and Redis, nothing else (the floor);
//   - client: the sidecar's client as configured (rueidis, AlwaysPipelining, 20 µs flush delay);
//   - client-noflush: the same with no flush delay;
//   - client-sync: without AlwaysPipelining, so that a lone call is written and read on the
//     caller's goroutine (rueidis's default, which the sidecar cannot use: it broke the
//     deadline on redials, redisclientcheck REPORT.md (a)).
//
// The difference between raw and client is the client's own cost per call: handing the
// command to rueidis's writer goroutine, the flush delay, and waking the caller from the
// reader goroutine. Run it with a fixed count, not a time:
//
//	go test -run '^$' -bench Latency -benchtime 20000x ./internal/redisconn/
func BenchmarkLatency(b *testing.B) {
	s := redistest.Start(b)
	const script = `local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n`
	sha := sha1Hex(script)
	ctx := context.Background()
	if _, err := s.Do(ctx, "SCRIPT", "LOAD", script); err != nil {
		b.Fatal(err)
	}

	b.Run("raw", func(b *testing.B) {
		conn, err := net.Dial("tcp", s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		req := []byte(fmt.Sprintf("*5\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$7\r\nlat:raw\r\n$5\r\n60000\r\n", sha))
		paced(b, func() error {
			if _, err := conn.Write(req); err != nil {
				return err
			}
			line, err := r.ReadString('\n')
			if err == nil && line[0] != ':' {
				err = fmt.Errorf("reply %q", line)
			}
			return err
		})
	})
	for _, v := range []struct {
		name  string
		flush time.Duration
		sync  bool
	}{{"client", maxFlushDelay, false}, {"client-noflush", 0, false}, {"client-sync", maxFlushDelay, true}} {
		b.Run(v.name, func(b *testing.B) {
			c, err := New(Options{URL: s.URL(), Timeout: time.Second}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.ropt.MaxFlushDelay = v.flush
			c.ropt.AlwaysPipelining = !v.sync
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if err := c.WaitReady(wctx); err != nil {
				b.Fatal(err)
			}
			keys := []string{"lat:" + v.name}
			paced(b, func() error {
				cctx, cancel := c.WithTimeout(ctx)
				defer cancel()
				_, err := c.Eval(cctx, sha, script, keys, 60000)
				return err
			})
		})
	}
}

// paced runs call b.N times, one at a time, starting one every 200 µs (or at once when the
// previous call ran late), and reports the calls' p50 and p99.
func paced(b *testing.B, call func() error) {
	b.Helper()
	const every = 200 * time.Microsecond
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(start.Add(time.Duration(i) * every)); d > 0 {
			time.Sleep(d)
		}
		t0 := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}
