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
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipe is the Redis client of the decision hot path (the limiters' scripts, session GET and
// EXPIRE, API key HGETALL). It keeps a few long-lived connections and pipelines the commands of concurrent
// decisions over them: each connection has at most one batch of commands in flight, and
// every command that arrives meanwhile waits in the connection's buffer and goes out, with
// all the others that arrived, in one write as soon as the batch in flight is answered.
//
// It adds no waiting at light load: a command that finds its connection idle is written at
// once, alone, by the caller's own goroutine. Under load the batches grow by themselves, and
// with them the savings: one write and one read system call per batch in the sidecar and in
// Redis, instead of one of each per command.
//
// Each connection has one goroutine that reads the replies, matches them to the commands in
// order and wakes their callers; when a batch is complete it writes the next one.
//
// Every call is bounded by Timeout from when it is made, so callers need no deadline of their
// own: the reply due next is awaited until its call's deadline (the connection's read
// deadline), and a reply later than that means the connection is broken. A broken connection
// (that, or a failed read or write) is closed, every command on it fails, and the next command
// dials a new one. A caller also stops waiting when its context ends. Its command may still
// run if it was sent already; one still waiting for the pipeline in flight when its deadline
// (or its context's) passes is dropped.
//
// The commands are RESP2 (resp.go) with go-redis result types, so callers see the same
// *redis.Cmd values and errors (redis.Nil, NOSCRIPT, WRONGTYPE) as from a go-redis client.
type Pipe struct {
	dialer      func(ctx context.Context) (net.Conn, error)
	hello       [][]string // sent on every new connection: AUTH, SELECT
	desc        string
	timeout     time.Duration
	dialTimeout time.Duration
	maxBatch    int
	observe     func(n int)
	onFailure   func(reason string, err error)

	conns  []*pipeConn
	next   atomic.Uint32
	closed atomic.Bool
	wg     sync.WaitGroup // dials and readers, waited for by Close
}

// PipeOptions tunes a Pipe; zero values take the defaults.
type PipeOptions struct {
	// Conns is the number of connections, each with at most one batch in flight (default 1).
	Conns int
	// MaxBatch caps the commands of one batch (default 128).
	MaxBatch int
	// Observe is called with the size of every batch written (for metrics and tests).
	Observe func(n int)
	// OnFailure is called when a dial fails or a connection is closed after a failure (not by
	// Close), with a reason of "dial", "timeout" (a reply past its call's deadline), "io" or
	// "protocol", and the error. The error names the server but carries no credentials. A
	// connection the server closes while nothing is due on it is not a failure.
	OnFailure func(reason string, err error)
}

// ErrPipeClosed is returned by calls on a closed Pipe.
var ErrPipeClosed = errors.New("redisconn: pipe closed")

// redialBackoff is how long after a failed dial the next one waits; calls in between fail at
// once with the dial's error. It keeps an outage from turning every request into a dial.
const redialBackoff = 100 * time.Millisecond

// NewPipe returns a Pipe to the server c talks to, with c's credentials, database, TLS
// settings and timeouts. It dials nothing until the first call. Close it before c.
func (c *Client) NewPipe(opts PipeOptions) *Pipe {
	if opts.Conns <= 0 {
		opts.Conns = 1
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	p := &Pipe{
		dialer:      c.dialer,
		desc:        c.desc,
		timeout:     c.timeout,
		dialTimeout: c.dialTimeout,
		maxBatch:    opts.MaxBatch,
		observe:     opts.Observe,
		onFailure:   opts.OnFailure,
		conns:       make([]*pipeConn, opts.Conns),
	}
	if c.ep.password != "" {
		if c.ep.username != "" {
			p.hello = append(p.hello, []string{"AUTH", c.ep.username, c.ep.password})
		} else {
			p.hello = append(p.hello, []string{"AUTH", c.ep.password})
		}
	}
	if c.ep.db != 0 {
		p.hello = append(p.hello, []string{"SELECT", fmt.Sprint(c.ep.db)})
	}
	for i := range p.conns {
		p.conns[i] = &pipeConn{p: p}
	}
	return p
}

// EvalSha runs EVALSHA; with Eval it makes the Pipe a ratelimit.Scripter.
func (p *Pipe) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	v, err := p.do(ctx, &command{name: "EVALSHA", first: sha1, script: true, keys: keys, args: args})
	return redis.NewCmdResult(v, err)
}

// Eval runs EVAL.
func (p *Pipe) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	v, err := p.do(ctx, &command{name: "EVAL", first: script, script: true, keys: keys, args: args})
	return redis.NewCmdResult(v, err)
}

// Get runs GET; with Expire it makes the Pipe a sessions.Redis.
func (p *Pipe) Get(ctx context.Context, key string) *redis.StringCmd {
	v, err := p.do(ctx, &command{name: "GET", first: key})
	if err != nil {
		return redis.NewStringResult("", err)
	}
	s, ok := v.(string)
	if !ok {
		return redis.NewStringResult("", fmt.Errorf("redisconn: GET replied %T, want a string", v))
	}
	return redis.NewStringResult(s, nil)
}

// Expire runs EXPIRE in whole seconds; like go-redis, it rounds a TTL under a second up to
// one, since EXPIRE 0 would delete the key.
func (p *Pipe) Expire(ctx context.Context, key string, ttl time.Duration) *redis.BoolCmd {
	sec := int64(ttl / time.Second)
	if ttl > 0 && sec == 0 {
		sec = 1
	}
	v, err := p.do(ctx, &command{name: "EXPIRE", first: key, args: []interface{}{sec}})
	if err != nil {
		return redis.NewBoolResult(false, err)
	}
	n, ok := v.(int64)
	if !ok {
		return redis.NewBoolResult(false, fmt.Errorf("redisconn: EXPIRE replied %T, want an integer", v))
	}
	return redis.NewBoolResult(n == 1, nil)
}

// HGetAll runs HGETALL; it makes the Pipe an apikeys.HashReader. A missing key is an empty
// map, as in go-redis.
func (p *Pipe) HGetAll(ctx context.Context, key string) *redis.MapStringStringCmd {
	v, err := p.do(ctx, &command{name: "HGETALL", first: key})
	if err != nil {
		return redis.NewMapStringStringResult(nil, err)
	}
	arr, ok := v.([]interface{})
	if !ok || len(arr)%2 != 0 {
		return redis.NewMapStringStringResult(nil, fmt.Errorf("redisconn: HGETALL replied %T of %d, want field-value pairs", v, len(arr)))
	}
	m := make(map[string]string, len(arr)/2)
	for i := 0; i < len(arr); i += 2 {
		f, ok1 := arr[i].(string)
		val, ok2 := arr[i+1].(string)
		if !ok1 || !ok2 {
			return redis.NewMapStringStringResult(nil, fmt.Errorf("redisconn: HGETALL replied %T and %T, want strings", arr[i], arr[i+1]))
		}
		m[f] = val
	}
	return redis.NewMapStringStringResult(m, nil)
}

// command is one command to encode: name, first, [len(keys) when script], keys..., args...
type command struct {
	name, first string
	script      bool
	keys        []string
	args        []interface{}
}

func (c *command) appendTo(b []byte) ([]byte, error) {
	n := 2 + len(c.keys) + len(c.args)
	if c.script {
		n++
	}
	b = appendHeader(b, '*', n)
	b = appendBulk(b, c.name)
	b = appendBulk(b, c.first)
	if c.script {
		var tmp [20]byte
		b = appendBulkBytes(b, strconv.AppendInt(tmp[:0], int64(len(c.keys)), 10))
	}
	for _, k := range c.keys {
		b = appendBulk(b, k)
	}
	var err error
	for _, a := range c.args {
		if b, err = appendArg(b, a); err != nil {
			return b, err
		}
	}
	return b, nil
}

// pipeCall is one command's caller, waiting for its reply.
type pipeCall struct {
	end      int       // where the command ends in the connection's write buffer, while it waits there
	deadline time.Time // the reply is due by then, or the connection is broken
	giveUp   time.Time // the caller stops waiting then (deadline, or ctx's if sooner): not sent after
	val      interface{}
	err      error
	done     chan struct{} // buffered: the reader never blocks on a caller that gave up
}

var pipeCallPool = sync.Pool{New: func() any { return &pipeCall{done: make(chan struct{}, 1)} }}

// do sends cmd and waits for its reply or the end of ctx. A nil reply is redis.Nil and an
// error reply is the error, as in go-redis.
func (p *Pipe) do(ctx context.Context, cmd *command) (interface{}, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.closed.Load() {
		return nil, ErrPipeClosed
	}
	c := p.pick()
	call := pipeCallPool.Get().(*pipeCall)
	call.deadline = time.Now().Add(p.timeout)
	call.giveUp = call.deadline
	if d, ok := ctx.Deadline(); ok && d.Before(call.giveUp) {
		call.giveUp = d
	}
	if err := c.enqueue(ctx, call, cmd); err != nil {
		pipeCallPool.Put(call)
		return nil, err
	}
	select {
	case <-call.done:
		v, err := call.val, call.err
		call.val, call.err = nil, nil
		pipeCallPool.Put(call)
		if err != nil {
			return nil, err
		}
		switch v := v.(type) {
		case nil:
			return nil, redis.Nil
		case replyError:
			return nil, v
		case rangeError:
			return nil, v
		}
		return v, nil
	case <-ctx.Done():
		// The call stays queued or in flight and is completed into its buffered channel
		// later; it is not reused.
		return nil, ctx.Err()
	}
}

// pick returns the connection for the next command: the first idle one, starting from a
// rotating position, so that at light load commands go out at once on whichever connection
// is free, or the rotating one when all are busy.
func (p *Pipe) pick() *pipeConn {
	if len(p.conns) == 1 {
		return p.conns[0]
	}
	n := uint32(len(p.conns))
	start := p.next.Add(1)
	for i := uint32(0); i < n; i++ {
		if c := p.conns[(start+i)%n]; !c.inFlight.Load() {
			return c
		}
	}
	return p.conns[start%n]
}

// Close fails every waiting call, closes the connections and waits for their goroutines.
func (p *Pipe) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	for _, c := range p.conns {
		c.mu.Lock()
		gen := c.gen
		c.mu.Unlock()
		c.fail(gen, ErrPipeClosed)
	}
	p.wg.Wait()
	return nil
}

// pipeConn is one connection and its queues. mu guards everything but br, which belongs to
// the connection's reader goroutine.
type pipeConn struct {
	p  *Pipe
	mu sync.Mutex

	nc      net.Conn      // nil while there is no usable connection
	gen     uint64        // bumped by every dial and failure; stale readers and writers see it
	dialing chan struct{} // non-nil while a dial runs; closed when it ends
	dialErr error         // the last dial's error, returned until retryAt
	retryAt time.Time

	acc     []byte      // encoded commands of waiting, not yet written
	free    []byte      // a spare buffer for the next batch's bytes
	waiting []*pipeCall // calls whose commands are in acc, in order
	sent    []*pipeCall // the batch in flight: written, replies due in this order
	head    int         // sent[head] is the next reply's call
	busy    bool        // a batch is in flight; new commands wait in acc

	inFlight atomic.Bool // busy, for pick to read without the lock
}

// enqueue adds cmd to the connection. When no batch is in flight the caller writes it at
// once (with anything else waiting); otherwise the reader sends it with the next batch.
func (c *pipeConn) enqueue(ctx context.Context, call *pipeCall, cmd *command) error {
	c.mu.Lock()
	if c.nc == nil {
		if err := c.connectLocked(ctx, call.deadline); err != nil {
			c.mu.Unlock()
			return err
		}
	}
	n0 := len(c.acc)
	var err error
	if c.acc, err = cmd.appendTo(c.acc); err != nil {
		c.acc = c.acc[:n0]
		c.mu.Unlock()
		return err
	}
	call.end = len(c.acc)
	c.waiting = append(c.waiting, call)
	if c.busy {
		c.mu.Unlock()
		return nil
	}
	nc, gen, out, n := c.takeBatchLocked()
	c.mu.Unlock()
	if n > 0 {
		c.write(nc, gen, out, n)
	}
	return nil
}

// takeBatchLocked moves up to maxBatch waiting calls into the batch in flight and returns
// their bytes to write (n is 0 when there is nothing to write). The caller writes them after
// unlocking. A waiting call whose caller has already given up is not sent: it fails at once,
// so that a backlog behind a slow Redis does not become load on it, or hits counted for
// requests that were already answered without them.
func (c *pipeConn) takeBatchLocked() (nc net.Conn, gen uint64, out []byte, n int) {
	now := time.Now()
	out = c.free[:0]
	c.free = nil
	c.sent, c.head = c.sent[:0], 0
	prev, i := 0, 0
	for ; i < len(c.waiting) && len(c.sent) < c.p.maxBatch; i++ {
		w := c.waiting[i]
		cmd := c.acc[prev:w.end]
		prev = w.end
		if !now.Before(w.giveUp) {
			w.err = fmt.Errorf("redisconn: not sent to %s: %w while it waited for the pipeline", c.p.desc, context.DeadlineExceeded)
			w.done <- struct{}{} // buffered, and completed only here
			continue
		}
		out = append(out, cmd...)
		c.sent = append(c.sent, w)
	}
	// Drop what was taken from the buffer and the queue; the rest moves to the front.
	rest := copy(c.acc, c.acc[prev:])
	c.acc = c.acc[:rest]
	m := copy(c.waiting, c.waiting[i:])
	clear(c.waiting[m:])
	c.waiting = c.waiting[:m]
	for _, w := range c.waiting {
		w.end -= prev
	}
	n = len(c.sent)
	if n == 0 {
		c.free = out
		return c.nc, c.gen, nil, 0
	}
	c.busy = true
	c.inFlight.Store(true)
	// Replies are now due. The first is due by its call's deadline, and the rest by theirs
	// (readLoop moves the deadline on): a reply later than that means a broken connection.
	_ = c.nc.SetReadDeadline(c.sent[0].deadline)
	return c.nc, c.gen, out, n
}

// write writes one batch and hands its buffer back for reuse.
func (c *pipeConn) write(nc net.Conn, gen uint64, out []byte, n int) {
	if c.p.observe != nil {
		c.p.observe(n)
	}
	_, err := nc.Write(out)
	if err != nil {
		c.fail(gen, fmt.Errorf("redisconn: write to %s: %w", c.p.desc, err))
		return
	}
	c.mu.Lock()
	if c.free == nil && cap(out) <= 1<<20 {
		c.free = out[:0]
	}
	c.mu.Unlock()
}

// connectLocked waits, with mu held on entry and on return, until the connection is up, a
// dial fails, or ctx or the deadline ends. It starts a dial when none is running.
func (c *pipeConn) connectLocked(ctx context.Context, deadline time.Time) error {
	for c.nc == nil {
		if c.p.closed.Load() {
			return ErrPipeClosed
		}
		if c.dialing == nil {
			if c.dialErr != nil && time.Now().Before(c.retryAt) {
				return c.dialErr
			}
			c.dialing = make(chan struct{})
			c.p.wg.Add(1)
			go c.dial(c.dialing)
		}
		ch := c.dialing
		c.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ch:
			t.Stop()
			c.mu.Lock()
			if c.nc == nil && c.dialErr != nil {
				return c.dialErr
			}
		case <-ctx.Done():
			t.Stop()
			c.mu.Lock()
			return ctx.Err()
		case <-t.C:
			c.mu.Lock()
			return fmt.Errorf("redisconn: connect to %s: %w", c.p.desc, context.DeadlineExceeded)
		}
	}
	return nil
}

// dial connects, authenticates and selects the database, bounded by the dial timeout and
// detached from the caller that asked (the next callers wait for the same dial).
func (c *pipeConn) dial(done chan struct{}) {
	defer c.p.wg.Done()
	defer close(done)
	ctx, cancel := context.WithTimeout(context.Background(), c.p.dialTimeout)
	defer cancel()
	nc, br, err := c.p.connect(ctx)

	c.mu.Lock()
	defer c.mu.Unlock()
	c.dialing = nil
	if err == nil && c.p.closed.Load() {
		nc.Close()
		err = ErrPipeClosed
	}
	if err != nil {
		c.dialErr = err
		c.retryAt = time.Now().Add(redialBackoff)
		if c.p.onFailure != nil && !errors.Is(err, ErrPipeClosed) {
			c.p.onFailure("dial", err)
		}
		return
	}
	c.dialErr = nil
	c.nc = nc
	c.gen++
	c.p.wg.Add(1)
	go c.readLoop(nc, br, c.gen)
}

// connect dials and sends the hello commands, reading their replies.
func (p *Pipe) connect(ctx context.Context) (net.Conn, *bufio.Reader, error) {
	nc, err := p.dialer(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("redisconn: dial %s: %w", p.desc, err)
	}
	br := bufio.NewReaderSize(nc, 16<<10)
	if len(p.hello) == 0 {
		return nc, br, nil
	}
	if d, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(d)
	}
	var b []byte
	for _, h := range p.hello {
		b = appendCommand(b, h...)
	}
	err = func() error {
		if _, err := nc.Write(b); err != nil {
			return err
		}
		for _, h := range p.hello {
			v, err := readReply(br)
			if err != nil {
				return err
			}
			if re, ok := v.(replyError); ok {
				// The reply names the problem (WRONGPASS, NOAUTH, ERR DB index); the command
				// is named without its arguments, which hold the password.
				return fmt.Errorf("%s: %w", h[0], re)
			}
		}
		return nc.SetDeadline(time.Time{})
	}()
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("redisconn: connect to %s: %w", p.desc, err)
	}
	return nc, br, nil
}

// readLoop reads replies until the connection fails, completes their calls in order, and
// writes the next batch when one is complete.
func (c *pipeConn) readLoop(nc net.Conn, br *bufio.Reader, gen uint64) {
	defer c.p.wg.Done()
	for {
		v, err := readReply(br)
		if err != nil {
			c.fail(gen, fmt.Errorf("redisconn: read from %s: %w", c.p.desc, err))
			return
		}
		c.mu.Lock()
		if c.gen != gen {
			c.mu.Unlock()
			return
		}
		if c.head >= len(c.sent) {
			c.mu.Unlock()
			c.fail(gen, fmt.Errorf("redisconn: read from %s: %w: a reply to no command", c.p.desc, errProtocol))
			return
		}
		call := c.sent[c.head]
		c.sent[c.head] = nil
		c.head++
		var out []byte
		var n int
		if c.head < len(c.sent) {
			if br.Buffered() == 0 {
				// The next read may block: it waits for the next call's reply, until that
				// call's deadline.
				_ = nc.SetReadDeadline(c.sent[c.head].deadline)
			}
		} else {
			c.sent, c.head = c.sent[:0], 0
			if len(c.waiting) > 0 {
				_, _, out, n = c.takeBatchLocked()
			}
			if n == 0 {
				c.busy = false
				c.inFlight.Store(false)
				_ = nc.SetReadDeadline(time.Time{})
			}
		}
		c.mu.Unlock()
		call.val = v
		call.done <- struct{}{}
		if n > 0 {
			c.write(nc, gen, out, n)
		}
	}
}

// fail closes the connection of generation gen, if it is still the current one, and fails
// every call on it with err.
func (c *pipeConn) fail(gen uint64, err error) {
	c.mu.Lock()
	if c.gen != gen || c.nc == nil {
		c.mu.Unlock()
		return
	}
	nc := c.nc
	c.nc = nil
	c.gen++
	calls := make([]*pipeCall, 0, len(c.sent)-c.head+len(c.waiting))
	calls = append(calls, c.sent[c.head:]...)
	calls = append(calls, c.waiting...)
	clear(c.sent)
	clear(c.waiting)
	c.sent, c.waiting, c.head = c.sent[:0], c.waiting[:0], 0
	c.acc = c.acc[:0]
	c.busy = false
	c.inFlight.Store(false)
	c.mu.Unlock()
	nc.Close()
	for _, call := range calls {
		call.err = err
		call.done <- struct{}{}
	}
	// A server closing a connection that had nothing due (Redis's idle timeout, a restart
	// while idle) failed no call: the next call dials again, and a failed dial is reported.
	reason := failureReason(err)
	if c.p.onFailure != nil && !errors.Is(err, ErrPipeClosed) && (len(calls) > 0 || reason != "io") {
		c.p.onFailure(reason, err)
	}
}

// failureReason names why a connection failed, for OnFailure.
func failureReason(err error) string {
	switch {
	case errors.Is(err, errProtocol):
		return "protocol"
	case IsTimeout(err):
		return "timeout"
	default:
		return "io"
	}
}
