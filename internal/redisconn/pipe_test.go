package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
)

const incrScript = "return redis.call('INCR', KEYS[1])"

// sizes records the batch sizes a Pipe reports.
type sizes struct {
	mu  sync.Mutex
	all []int
}

func (s *sizes) observe(n int) {
	s.mu.Lock()
	s.all = append(s.all, n)
	s.mu.Unlock()
}

func (s *sizes) get() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int(nil), s.all...)
}

// failures records the reasons a Pipe reports to OnFailure.
type failures struct {
	mu      sync.Mutex
	reasons []string
}

func (f *failures) record(reason string, err error) {
	f.mu.Lock()
	f.reasons = append(f.reasons, reason)
	f.mu.Unlock()
}

func (f *failures) has(reason string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.reasons {
		if r == reason {
			return true
		}
	}
	return false
}

func (f *failures) count() int { return len(f.list()) }

func (f *failures) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reasons...)
}

func startPipe(t *testing.T, timeout time.Duration, opts PipeOptions) (*redistest.Server, *Pipe) {
	t.Helper()
	s := redistest.Start(t)
	c := newClient(t, Options{URL: s.URL(), Timeout: timeout})
	return s, newPipe(t, c, opts)
}

// Concurrent callers get exactly their own replies, and their commands travel in batches
// no larger than MaxBatch.
func TestPipeConcurrentExactAndBatched(t *testing.T) {
	for _, conns := range []int{1, 3} {
		t.Run(fmt.Sprintf("conns=%d", conns), func(t *testing.T) {
			var got sizes
			_, p := startPipe(t, 5*time.Second, PipeOptions{Conns: conns, MaxBatch: 16, Observe: got.observe})
			const workers, each = 64, 200
			seen := make([]atomic.Bool, workers*each+1)
			var wg sync.WaitGroup
			var failed atomic.Int64
			for w := 0; w < workers; w++ {
				wg.Go(func() {
					for i := 0; i < each; i++ {
						ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
						n, err := p.Eval(ctx, incrScript, []string{"counter"}).Int64()
						cancel()
						if err != nil || n < 1 || n > workers*each || seen[n].Swap(true) {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d calls failed or got another caller's reply", failed.Load())
			}
			total, largest := 0, 0
			for _, n := range got.get() {
				total += n
				largest = max(largest, n)
			}
			if total != workers*each {
				t.Errorf("batches carried %d commands, want %d", total, workers*each)
			}
			if largest > 16 {
				t.Errorf("largest batch %d, want at most MaxBatch 16", largest)
			}
			if largest < 2 {
				t.Errorf("largest batch %d: concurrent commands were never batched", largest)
			}
		})
	}
}

// At light load every command goes out alone, at once, and the replies come back as the
// go-redis types and errors the callers expect.
func TestPipeRepliesAndErrors(t *testing.T) {
	var got sizes
	s, p := startPipe(t, time.Second, PipeOptions{Observe: got.observe})
	ctx := context.Background()
	calls := 0
	check := func(what string, err error) {
		t.Helper()
		calls++
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	if err := p.Get(ctx, "missing").Err(); err != redis.Nil {
		t.Fatalf("GET missing = %v, want redis.Nil", err)
	}
	calls++
	_, err := p.Eval(ctx, "return redis.call('SET', KEYS[1], ARGV[1])", []string{"k"}, "v\r\nwith CRLF").Result()
	check("EVAL SET", err)
	v, err := p.Get(ctx, "k").Result()
	check("GET", err)
	if v != "v\r\nwith CRLF" {
		t.Errorf("GET k = %q", v)
	}
	ok, err := p.Expire(ctx, "k", time.Minute).Result()
	check("EXPIRE", err)
	if !ok {
		t.Error("EXPIRE k = false, want true")
	}
	if ttl, _ := s.Do(ctx, "TTL", "k"); ttl != ":60" {
		t.Errorf("TTL k = %s, want :60", ttl)
	}
	ok, err = p.Expire(ctx, "k", 300*time.Millisecond).Result()
	check("EXPIRE under a second", err)
	if ttl, _ := s.Do(ctx, "TTL", "k"); !ok || ttl != ":1" {
		t.Errorf("EXPIRE k 300ms: %v, TTL %s, want the key kept with TTL 1", ok, ttl)
	}
	ok, err = p.Expire(ctx, "missing", time.Minute).Result()
	check("EXPIRE missing", err)
	if ok {
		t.Error("EXPIRE missing = true, want false")
	}

	// Every reply type a script can give, nested arrays and a nil inside one included.
	arr, err := p.Eval(ctx, `return {1, -2, 'three', {4, 'five'}, redis.status_reply('OK'), false, 7}`, nil).Slice()
	check("EVAL array", err)
	want := fmt.Sprint([]interface{}{int64(1), int64(-2), "three", []interface{}{int64(4), "five"}, "OK", nil, int64(7)})
	if fmt.Sprint(arr) != want {
		t.Errorf("array reply = %v, want %v", arr, want)
	}
	// Arguments of every scalar type, formatted as go-redis formats them.
	args, err := p.Eval(ctx, "return ARGV", nil, 1, int64(-2), uint32(3), 1.5, true, "s", []byte("b"), 250*time.Millisecond, nil).StringSlice()
	check("EVAL args", err)
	if fmt.Sprint(args) != "[1 -2 3 1.5 1 s b 250000000 ]" {
		t.Errorf("ARGV = %q", args)
	}
	n, err := p.EvalSha(ctx, scriptSHA(t, s, incrScript), []string{"n"}).Int64()
	check("EVALSHA", err)
	if n != 1 {
		t.Errorf("EVALSHA INCR = %d, want 1", n)
	}
	if err := p.Eval(ctx, "return nil", nil).Err(); err != redis.Nil {
		t.Errorf("nil reply = %v, want redis.Nil", err)
	}
	calls++

	// Error replies belong to their command; the connection stays usable.
	if err := p.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err(); !redis.HasErrorPrefix(err, "NOSCRIPT") {
		t.Errorf("unknown script = %v, want NOSCRIPT", err)
	}
	calls++
	if _, err := s.Do(ctx, "HSET", "h", "f", "v"); err != nil {
		t.Fatal(err)
	}
	if err := p.Get(ctx, "h").Err(); !redis.HasErrorPrefix(err, "WRONGTYPE") {
		t.Errorf("GET of a hash = %v, want WRONGTYPE", err)
	}
	calls++
	h, err := p.HGetAll(ctx, "h").Result()
	check("HGETALL", err)
	if fmt.Sprint(h) != "map[f:v]" {
		t.Errorf("HGETALL h = %v", h)
	}
	h, err = p.HGetAll(ctx, "missing").Result()
	check("HGETALL missing", err)
	if h == nil || len(h) != 0 {
		t.Errorf("HGETALL missing = %#v, want an empty map", h)
	}
	if err := p.HGetAll(ctx, "k").Err(); !redis.HasErrorPrefix(err, "WRONGTYPE") {
		t.Errorf("HGETALL of a string = %v, want WRONGTYPE", err)
	}
	calls++
	if err := p.Eval(ctx, "return redis.error_reply('MYERR custom')", nil).Err(); !redis.HasErrorPrefix(err, "MYERR") {
		t.Errorf("error reply = %v, want MYERR", err)
	}
	calls++
	// An argument the encoder does not know is refused before anything is sent.
	if err := p.Eval(ctx, "return 1", nil, struct{}{}).Err(); err == nil || !strings.Contains(err.Error(), "cannot send an argument of type struct {}") {
		t.Errorf("bad argument = %v", err)
	}
	if v, err := p.Get(ctx, "k").Result(); err != nil || v != "v\r\nwith CRLF" {
		t.Errorf("GET after the errors = %q %v", v, err)
	}
	calls++

	for _, n := range got.get() {
		if n != 1 {
			t.Fatalf("batch sizes %v: sequential calls must go out alone", got.get())
		}
	}
	if len(got.get()) != calls {
		t.Errorf("%d batches for %d sequential calls", len(got.get()), calls)
	}
}

func scriptSHA(t *testing.T, s *redistest.Server, script string) string {
	t.Helper()
	sha, err := s.Do(context.Background(), "SCRIPT", "LOAD", script)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(sha, "$")
}

// Every call is bounded by the timeout even when its context has no deadline, a caller's
// earlier deadline wins, and the Pipe works again once Redis answers.
func TestPipeDeadlinesAndRecovery(t *testing.T) {
	const timeout = 50 * time.Millisecond
	const slack = 300 * time.Millisecond // a loaded CI machine under -race
	s, p := startPipe(t, timeout, PipeOptions{})
	if err := p.Get(context.Background(), "warm").Err(); err != redis.Nil {
		t.Fatalf("warm-up GET: %v", err)
	}
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want time.Duration
	}{
		{"no deadline on ctx", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) }, timeout},
		{"later deadline on ctx", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 5*time.Second)
		}, timeout},
		{"earlier deadline on ctx", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 10*time.Millisecond)
		}, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.Do(context.Background(), "CLIENT", "PAUSE", "400", "ALL"); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var late, succeeded, notTimeout atomic.Int64
			for i := 0; i < 16; i++ {
				wg.Go(func() {
					ctx, cancel := tc.ctx()
					defer cancel()
					start := time.Now()
					err := p.Eval(ctx, incrScript, []string{"paused"}).Err()
					if time.Since(start) > tc.want+slack {
						late.Add(1)
					}
					switch {
					case err == nil:
						succeeded.Add(1)
					case !IsTimeout(err):
						t.Logf("not a timeout: %v", err)
						notTimeout.Add(1)
					}
				})
			}
			wg.Wait()
			if late.Load() != 0 || succeeded.Load() != 0 || notTimeout.Load() != 0 {
				t.Fatalf("during the pause: %d late, %d succeeded, %d not timeouts", late.Load(), succeeded.Load(), notTimeout.Load())
			}
			waitFor(t, 2*time.Second, func() error {
				return p.Eval(context.Background(), incrScript, []string{"after"}).Err()
			})
		})
	}
}

// waitFor retries f until it succeeds or the time is up.
func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A stopped (SIGSTOP) server holds the socket open and says nothing: calls time out, the
// connection is dropped, and a new one serves once the server runs again.
func TestPipeSilentServer(t *testing.T) {
	var f failures
	s, p := startPipe(t, 50*time.Millisecond, PipeOptions{OnFailure: f.record})
	ctx := context.Background()
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause()
	start := time.Now()
	err := p.Eval(ctx, incrScript, []string{"k"}).Err()
	if !IsTimeout(err) || time.Since(start) > 500*time.Millisecond {
		s.Resume()
		t.Fatalf("silent server: %v after %v, want a timeout after about 50ms", err, time.Since(start))
	}
	s.Resume()
	waitFor(t, 2*time.Second, func() error { return p.Eval(ctx, incrScript, []string{"k"}).Err() })
	if !f.has("timeout") {
		t.Errorf("OnFailure reasons %v, want a timeout", f.list())
	}
}

// Redis down: calls fail at once, not after the dial timeout, and the Pipe reconnects by
// itself when Redis is back.
func TestPipeRedisDownAndBack(t *testing.T) {
	var f failures
	s, p := startPipe(t, 100*time.Millisecond, PipeOptions{OnFailure: f.record})
	ctx := context.Background()
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	for i := 0; i < 5; i++ {
		start := time.Now()
		err := p.Eval(ctx, incrScript, []string{"k"}).Err()
		if err == nil || err == redis.Nil {
			t.Fatalf("redis down: call %d = %v", i, err)
		}
		if took := time.Since(start); took > 300*time.Millisecond {
			t.Fatalf("redis down: call %d took %v", i, took)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error repeats a secret: %v", err)
		}
	}
	s.Restart()
	waitFor(t, 3*time.Second, func() error { return p.Eval(ctx, incrScript, []string{"k"}).Err() })
	// Dials were refused. (The server's close of the idle connection is reported only when the
	// first call raced it onto the closing connection; TestPipeServerIdleTimeout covers an idle
	// close alone.)
	if !f.has("dial") {
		t.Errorf("OnFailure reasons %v, want dial among them", f.list())
	}
}

// Callers that give up early leave their replies to no one; everybody else still gets
// exactly their own.
func TestPipeAbandonedCallsKeepOrder(t *testing.T) {
	_, p := startPipe(t, 5*time.Second, PipeOptions{})
	const workers, each = 32, 100
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			key := fmt.Sprintf("w%d", w)
			want := int64(0)
			for i := 0; i < each; i++ {
				if i%3 == 0 {
					// Gives up at once or nearly: its INCR of another key may or may not run.
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i%5)*time.Microsecond)
					_ = p.Eval(ctx, incrScript, []string{"abandoned"}).Err()
					cancel()
					continue
				}
				want++
				n, err := p.Eval(context.Background(), incrScript, []string{key}).Int64()
				if err != nil || n != want {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Fatalf("%d calls got a wrong reply or failed", wrong.Load())
	}
}

// The embedded store speaks RESP over loopback TCP, so the Pipe works on it too.
func TestPipeEmbedded(t *testing.T) {
	c := newClient(t, Options{})
	p := newPipe(t, c, PipeOptions{})
	ctx := context.Background()
	for want := int64(1); want <= 3; want++ {
		n, err := p.Eval(ctx, incrScript, []string{"k"}).Int64()
		if err != nil || n != want {
			t.Fatalf("INCR = %d %v, want %d", n, err, want)
		}
	}
	if err := p.Get(ctx, "missing").Err(); err != redis.Nil {
		t.Fatalf("GET missing = %v", err)
	}
}

func TestPipeClose(t *testing.T) {
	var f failures
	_, p := startPipe(t, time.Second, PipeOptions{Conns: 2, OnFailure: f.record})
	ctx := context.Background()
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); !errors.Is(err, ErrPipeClosed) {
		t.Fatalf("after Close: %v, want ErrPipeClosed", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := f.count(); n != 0 {
		t.Errorf("Close reported %d failures (%v), want none", n, f.list())
	}
}

// A server that breaks the protocol: the calls on the connection fail with a clear error,
// and the next call dials again.
func TestPipeProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name, reply, want string
	}{
		{"unknown type", "!what\r\n", "unexpected reply type"},
		{"bad integer", ":12x\r\n", "bad integer"},
		{"huge bulk", "$999999999999\r\n", "bulk length"},
		{"missing CRLF", "$3\r\nabcXY", "not terminated by CRLF"},
		{"reply to no command", "+OK\r\n+EXTRA\r\n", "a reply to no command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			var dials atomic.Int64
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					dials.Add(1)
					go func() {
						defer conn.Close()
						buf := make([]byte, 4096)
						if _, err := conn.Read(buf); err != nil {
							return
						}
						_, _ = conn.Write([]byte(tc.reply))
						_, _ = conn.Read(buf) // until the client closes
					}()
				}
			}()
			c := newClient(t, Options{URL: "redis://" + l.Addr().String() + "/0", Timeout: time.Second})
			var f failures
			p := newPipe(t, c, PipeOptions{OnFailure: f.record})
			defer func() {
				if !f.has("protocol") {
					t.Errorf("OnFailure reasons %v, want protocol", f.list())
				}
			}()
			ctx := context.Background()
			err = p.Get(ctx, "k").Err()
			if tc.name == "reply to no command" {
				// The first reply is GET's own; the extra one breaks the connection, and the
				// next call, on a new connection, is answered "+OK" again.
				if err != nil {
					t.Fatalf("GET = %v, want its reply", err)
				}
				waitFor(t, 2*time.Second, func() error {
					if dials.Load() < 2 {
						_ = p.Get(ctx, "k").Err()
						return errors.New("no second dial yet")
					}
					return nil
				})
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errProtocol) {
				t.Fatalf("GET = %v, want a protocol error saying %q", err, tc.want)
			}
			_ = p.Get(ctx, "k").Err()
			if dials.Load() < 2 {
				t.Errorf("%d dials: the broken connection was reused", dials.Load())
			}
		})
	}
}

// BenchmarkPipeParallel compares go-redis's pooled client with the Pipe, 32 callers at once.
func BenchmarkPipeParallel(b *testing.B) {
	s := redistest.Start(b)
	c, err := New(Options{URL: s.URL(), Timeout: time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	p := c.NewPipe(PipeOptions{})
	b.Cleanup(func() { _ = p.Close() })
	for _, mode := range []string{"go-redis", "pipe"} {
		b.Run(mode, func(b *testing.B) {
			var sc interface {
				Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd
			} = c.Redis()
			if mode == "pipe" {
				sc = p
			}
			b.SetParallelism(32)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := sc.Eval(ctx, incrScript, []string{"bench"}).Err(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// Redis restarts under load: every call returns within its bound, calls succeed again
// afterwards, and Close leaves no goroutine of the Pipe behind.
func TestPipeRestartUnderLoad(t *testing.T) {
	const timeout = 100 * time.Millisecond
	s := redistest.Start(t)
	c := newClient(t, Options{URL: s.URL(), Timeout: timeout})
	before := runtime.NumGoroutine()
	var f failures
	p := c.NewPipe(PipeOptions{Conns: 2, OnFailure: f.record})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls, failed, late atomic.Int64
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				err := p.Eval(context.Background(), incrScript, []string{fmt.Sprintf("w%d", w)}).Err()
				if time.Since(start) > timeout+300*time.Millisecond {
					late.Add(1)
				}
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	s.Restart()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if late.Load() != 0 {
		t.Errorf("%d of %d calls took longer than the timeout plus 300ms", late.Load(), calls.Load())
	}
	t.Logf("%d of %d calls failed across the restart; OnFailure reasons %v", failed.Load(), calls.Load(), f.list())
	if !f.has("io") {
		t.Errorf("OnFailure reasons %v: the server closing connections with calls due was not reported", f.list())
	}
	if failed.Load() == calls.Load() {
		t.Errorf("every call failed, before the restart too")
	}
	waitFor(t, 3*time.Second, func() error { return p.Eval(context.Background(), incrScript, []string{"after"}).Err() })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// The workers are done and Close waited for the readers and dials.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Close, %d before the Pipe", n, before)
	}
}

// Commands whose callers gave up while they waited behind a slow batch are never sent: no
// load on a struggling Redis, and no hits counted for requests already answered.
func TestPipeSkipsCommandsOfCallersThatGaveUp(t *testing.T) {
	s, p := startPipe(t, 2*time.Second, PipeOptions{})
	ctx := context.Background()
	if err := p.Eval(ctx, incrScript, []string{"warm"}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Do(ctx, "CLIENT", "PAUSE", "300", "ALL"); err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- p.Eval(ctx, incrScript, []string{"first"}).Err() }()
	// Wait until the first call is the batch in flight, so that the short calls queue behind it.
	waitFor(t, 2*time.Second, func() error {
		if !p.conns[0].inFlight.Load() {
			return errors.New("the first call is not in flight yet")
		}
		return nil
	})
	var wg sync.WaitGroup
	var timedOut atomic.Int64
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
			defer cancel()
			if err := p.Eval(cctx, incrScript, []string{"gave-up"}).Err(); IsTimeout(err) {
				timedOut.Add(1)
			}
		})
	}
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatalf("the call in flight during the pause: %v", err)
	}
	if timedOut.Load() != 8 {
		t.Fatalf("%d of 8 short calls timed out", timedOut.Load())
	}
	// The next call goes out on the same, healthy connection; the abandoned INCRs never ran.
	if err := p.Eval(ctx, incrScript, []string{"after"}).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Do(ctx, "EXISTS", "gave-up"); err != nil || n != ":0" {
		t.Fatalf("EXISTS gave-up = %s %v: commands of callers that gave up were sent", n, err)
	}
}

// Redis's idle timeout closes the Pipe's connection between calls: the next call dials again
// and succeeds, and nothing is reported as a failure.
func TestPipeServerIdleTimeout(t *testing.T) {
	s := redistest.Start(t, "--timeout", "1")
	c := newClient(t, Options{URL: s.URL(), Timeout: time.Second})
	var f failures
	p := newPipe(t, c, PipeOptions{OnFailure: f.record})
	ctx := context.Background()
	connections := func() int {
		t.Helper()
		info, err := s.Do(ctx, "INFO", "stats")
		if err != nil {
			t.Fatal(err)
		}
		_, rest, _ := strings.Cut(info, "total_connections_received:")
		n, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
		if err != nil {
			t.Fatalf("INFO stats: %v", err)
		}
		return n
	}
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); err != nil {
		t.Fatal(err)
	}
	before := connections()
	// Past the server's idle timeout: 1 s, counted in whole seconds, checked every 100 ms.
	time.Sleep(3 * time.Second)
	if err := p.Eval(ctx, incrScript, []string{"k"}).Err(); err != nil {
		t.Fatalf("after the idle timeout: %v", err)
	}
	// One connection for the second INFO, one for the Pipe's new dial.
	if got := connections() - before; got != 2 {
		t.Errorf("%d connections since the first call, want 2: the Pipe did not dial again", got)
	}
	if n := f.count(); n != 0 {
		t.Errorf("OnFailure reasons %v, want none", f.list())
	}
}
