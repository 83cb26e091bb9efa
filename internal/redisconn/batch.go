package redisconn

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batcher coalesces the Redis commands of concurrent decisions into pipelines: one socket
// write and one read for a whole batch instead of one of each per request, which is where a
// sidecar under load spends its CPU.
//
// It adds no waiting. A command that finds a pipeline slot free is sent at once by the caller's
// own goroutine (at light load every command goes out alone, with no extra goroutine wake-up).
// Commands that arrive while every slot is busy queue up, and the next slot to free up sends
// them all in one pipeline. At most Slots pipelines are in flight, so the queue grows while
// Redis answers and shrinks in one round trip.
type Batcher struct {
	pipe     func() redis.Pipeliner
	process  func(ctx context.Context, cmd redis.Cmder) error
	slots    chan struct{}
	maxBatch int

	mu    sync.Mutex
	queue []*batchCall

	// observe, when set, is told every pipeline's size (for metrics and tests).
	observe func(n int)
}

// BatchOptions tunes a Batcher; zero values take the defaults.
type BatchOptions struct {
	// Slots is how many pipelines may be in flight at once (default 4).
	Slots int
	// MaxBatch caps the commands of one pipeline (default 128).
	MaxBatch int
	// Observe is called with the size of every pipeline sent.
	Observe func(n int)
}

// batchCall is one queued command and the caller waiting for it.
type batchCall struct {
	ctx  context.Context
	cmd  redis.Cmder
	done chan struct{}
}

// NewBatcher returns a Batcher sending pipelines built by rdb.
func NewBatcher(rdb redis.UniversalClient, opts BatchOptions) *Batcher {
	if opts.Slots <= 0 {
		opts.Slots = 4
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 128
	}
	return &Batcher{
		pipe:     rdb.Pipeline,
		process:  rdb.Process,
		slots:    make(chan struct{}, opts.Slots),
		maxBatch: opts.MaxBatch,
		observe:  opts.Observe,
	}
}

var callPool = sync.Pool{New: func() any { return &batchCall{done: make(chan struct{}, 1)} }}

// do runs cmd, alone or in a pipeline with other callers' commands. It reports false when ctx
// ended first: the command may still be sent and written to later, so the caller must not
// read cmd then. A command whose caller gave up before it was sent is not sent.
func (b *Batcher) do(ctx context.Context, cmd redis.Cmder) bool {
	c := callPool.Get().(*batchCall)
	c.ctx, c.cmd = ctx, cmd
	select {
	case b.slots <- struct{}{}:
		b.lead(c)
		<-c.done // send signalled it, as it signals every call it finishes
		b.release(c)
		return true
	default:
	}
	b.mu.Lock()
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	// Every slot may have freed up between the first try and the enqueue, leaving nobody to
	// send the queue: try once more.
	select {
	case b.slots <- struct{}{}:
		go b.lead(nil)
	default:
	}
	select {
	case <-c.done:
		b.release(c)
		return true
	case <-ctx.Done():
		// The call stays queued or in flight; whoever finishes it signals c.done, which is
		// buffered, and the call is not reused (it is left to the garbage collector).
		return false
	}
}

func (b *Batcher) release(c *batchCall) {
	c.ctx, c.cmd = nil, nil
	callPool.Put(c)
}

// lead holds a slot: it sends own (if any) with whatever is queued, then, if more work has
// queued meanwhile, hands the slot to a new goroutine so that its own caller can answer now.
func (b *Batcher) lead(own *batchCall) {
	for {
		b.mu.Lock()
		n := len(b.queue)
		if own != nil {
			n++
		}
		if n == 0 {
			<-b.slots
			b.mu.Unlock()
			return
		}
		if n > b.maxBatch {
			n = b.maxBatch
		}
		batch := make([]*batchCall, 0, n)
		if own != nil {
			batch = append(batch, own)
		}
		take := n - len(batch)
		batch = append(batch, b.queue[:take]...)
		rest := copy(b.queue, b.queue[take:])
		for i := rest; i < len(b.queue); i++ {
			b.queue[i] = nil
		}
		b.queue = b.queue[:rest]
		b.mu.Unlock()

		b.send(batch)
		if own != nil {
			b.mu.Lock()
			if len(b.queue) == 0 {
				<-b.slots
				b.mu.Unlock()
				return
			}
			b.mu.Unlock()
			go b.lead(nil)
			return
		}
	}
}

// send runs a batch: one command directly, several as a pipeline, under the latest of their
// deadlines (each caller still stops waiting at its own).
func (b *Batcher) send(batch []*batchCall) {
	live := batch[:0:0]
	var ctx context.Context
	var deadline time.Time
	for _, c := range batch {
		if err := c.ctx.Err(); err != nil {
			c.cmd.SetErr(err)
			c.done <- struct{}{}
			continue
		}
		live = append(live, c)
		if d, ok := c.ctx.Deadline(); ok && d.After(deadline) {
			deadline, ctx = d, c.ctx
		} else if ctx == nil {
			ctx = c.ctx
		}
	}
	if len(live) == 0 {
		return
	}
	if b.observe != nil {
		b.observe(len(live))
	}
	if len(live) == 1 {
		c := live[0]
		_ = b.process(c.ctx, c.cmd)
		c.done <- struct{}{}
		return
	}
	// The pipeline outlives no caller: its deadline is the latest caller's, and cancelling one
	// caller must not fail the others' commands.
	pctx := context.WithoutCancel(ctx)
	var cancel context.CancelFunc
	if !deadline.IsZero() {
		pctx, cancel = context.WithDeadline(pctx, deadline)
	}
	p := b.pipe()
	for _, c := range live {
		_ = p.Process(pctx, c.cmd)
	}
	_, _ = p.Exec(pctx)
	if cancel != nil {
		cancel()
	}
	for _, c := range live {
		c.done <- struct{}{}
	}
}

// EvalSha runs EVALSHA through the batcher; with Eval it makes the Batcher a
// ratelimit.Scripter.
func (b *Batcher) EvalSha(ctx context.Context, sha1 string, keys []string, args ...interface{}) *redis.Cmd {
	cmd := redis.NewCmd(ctx, evalArgs("evalsha", sha1, keys, args)...)
	if !b.do(ctx, cmd) {
		return redis.NewCmdResult(nil, ctx.Err())
	}
	return cmd
}

// Eval runs EVAL through the batcher.
func (b *Batcher) Eval(ctx context.Context, script string, keys []string, args ...interface{}) *redis.Cmd {
	cmd := redis.NewCmd(ctx, evalArgs("eval", script, keys, args)...)
	if !b.do(ctx, cmd) {
		return redis.NewCmdResult(nil, ctx.Err())
	}
	return cmd
}

// Get runs GET through the batcher; with Expire it makes the Batcher a sessions.Redis.
func (b *Batcher) Get(ctx context.Context, key string) *redis.StringCmd {
	cmd := redis.NewStringCmd(ctx, "get", key)
	if !b.do(ctx, cmd) {
		return redis.NewStringResult("", ctx.Err())
	}
	return cmd
}

// Expire runs EXPIRE (whole seconds) through the batcher.
func (b *Batcher) Expire(ctx context.Context, key string, ttl time.Duration) *redis.BoolCmd {
	cmd := redis.NewBoolCmd(ctx, "expire", key, int64(ttl/time.Second))
	if !b.do(ctx, cmd) {
		return redis.NewBoolResult(false, ctx.Err())
	}
	return cmd
}

func evalArgs(name, scriptOrSHA string, keys []string, args []interface{}) []interface{} {
	out := make([]interface{}, 0, 3+len(keys)+len(args))
	out = append(out, name, scriptOrSHA, len(keys))
	for _, k := range keys {
		out = append(out, k)
	}
	return append(out, args...)
}
