package redisconn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Cmd is one command of a Tx: its name, then its keys (which pick the Cluster node), then
// its other arguments.
type Cmd struct {
	Name string
	Keys []string
	Args []string
}

// Doer runs one arbitrary command. ForEachMaster hands one to its callback per master.
type Doer interface {
	Do(ctx context.Context, name string, keys []string, args ...string) (any, error)
}

// acquire admits one call under Options.MaxInFlight. An atomic counter is all it costs, so
// every call pays it; past the cap the call fails at once instead of queueing behind a Redis
// that has stopped answering.
func (c *Client) acquire() error {
	if c.inFlight.Add(1) > c.maxInFlight {
		c.inFlight.Add(-1)
		if c.onBusy != nil {
			c.onBusy()
		}
		return ErrBusy
	}
	return nil
}

func (c *Client) release() { c.inFlight.Add(-1) }

// begin returns the rueidis client and a ctx bounded by the per-call deadline when the
// caller's has none, or why the call cannot be made. The caller must call end.
func (c *Client) begin(ctx context.Context) (rueidis.Client, context.Context, context.CancelFunc, error) {
	rc, err := c.client()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.acquire(); err != nil {
		return nil, nil, nil, err
	}
	if _, ok := ctx.Deadline(); ok {
		return rc, ctx, c.release, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	return rc, ctx, func() { cancel(); c.release() }, nil
}

// observe keeps Ready's view of the connection current from call results: a reply, even an
// error reply, means Redis is there; a refused connection means it is not; anything else (a
// timeout, say) says nothing either way.
func (c *Client) observe(err error) {
	_, reply := rueidis.IsRedisErr(err)
	switch {
	case err == nil || reply:
		if c.refused.Load() {
			c.refused.Store(false)
		}
	case isRefused(err):
		c.refused.Store(true)
	}
}

// Eval runs a Lua script: EVALSHA sha, and EVAL src only on a NOSCRIPT reply (after a
// restart, a failover or SCRIPT FLUSH), so that the script's text crosses the network once
// per server, not once per call. On a Cluster all keys must hash to one slot; otherwise
// the error wraps ErrCrossSlot and nothing is sent. args may be string, []byte, int, int32,
// int64, uint, uint32, uint64, float64 (the shortest decimal that reads back the same, never
// an exponent) or bool (1/0); anything else is an error, before anything is sent. The reply is
// converted as Do's.
func (c *Client) Eval(ctx context.Context, sha, src string, keys []string, args ...any) (any, error) {
	argv, err := formatArgs(args)
	if err != nil {
		return nil, err
	}
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	cmd, err := c.build(func() rueidis.Completed {
		return rc.B().Evalsha().Sha1(sha).Numkeys(int64(len(keys))).Key(keys...).Arg(argv...).Build()
	})
	if err != nil {
		return nil, err
	}
	res := rc.Do(ctx, cmd)
	if re, ok := rueidis.IsRedisErr(res.Error()); ok && re.IsNoScript() {
		// The keys were checked above: this build cannot panic.
		res = rc.Do(ctx, rc.B().Eval().Script(src).Numkeys(int64(len(keys))).Key(keys...).Arg(argv...).Build())
	}
	return c.reply(res)
}

// Get returns the value of key, or ErrNil when it is missing.
func (c *Client) Get(ctx context.Context, key string) (string, error) {
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return "", err
	}
	defer end()
	return c.str(rc.Do(ctx, rc.B().Get().Key(key).Build()))
}

// HGetAll returns the fields of the hash at key: an empty map when it is missing.
func (c *Client) HGetAll(ctx context.Context, key string) (map[string]string, error) {
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return c.strMap(rc.Do(ctx, rc.B().Hgetall().Key(key).Build()))
}

// Expire sets key's time to live: EXPIRE for whole seconds, PEXPIRE otherwise, so that a
// sub-second TTL is neither rounded down to nothing nor up. A missing key is no error.
func (c *Client) Expire(ctx context.Context, key string, ttl time.Duration) error {
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return err
	}
	defer end()
	var cmd rueidis.Completed
	if ttl%time.Second == 0 {
		cmd = rc.B().Expire().Key(key).Seconds(int64(ttl / time.Second)).Build()
	} else {
		cmd = rc.B().Pexpire().Key(key).Milliseconds(ttl.Milliseconds()).Build()
	}
	err = rc.Do(ctx, cmd).Error()
	c.observe(err)
	return err
}

// GetCached is Get through the client-side cache: Redis tracks the key for this connection
// (CLIENT TRACKING, OPTIN) and pushes an invalidation when anyone changes it, so a cached
// value is at most as stale as that push is late (well under a millisecond on a LAN). ttl
// bounds how long an entry lives locally; rueidis bounds it by the key's PTTL as well. A
// missing key is cached too. hit reports whether the answer came from the local cache. With
// caching off, or a ttl that is not positive, this is Get with hit false.
func (c *Client) GetCached(ctx context.Context, key string, ttl time.Duration) (val string, hit bool, err error) {
	if !c.cache || ttl <= 0 {
		val, err = c.Get(ctx, key)
		return val, false, err
	}
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return "", false, err
	}
	defer end()
	res := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), ttl)
	val, err = c.str(res)
	return val, res.IsCacheHit(), err
}

// HGetAllCached is HGetAll through the client-side cache, as GetCached is Get.
func (c *Client) HGetAllCached(ctx context.Context, key string, ttl time.Duration) (map[string]string, bool, error) {
	if !c.cache || ttl <= 0 {
		m, err := c.HGetAll(ctx, key)
		return m, false, err
	}
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return nil, false, err
	}
	defer end()
	res := rc.DoCache(ctx, rc.B().Hgetall().Key(key).Cache(), ttl)
	m, err := c.strMap(res)
	return m, res.IsCacheHit(), err
}

// Do runs one arbitrary command, for admin paths (the CLI, tests, key listings): name (which
// may hold several words, as "CLIENT LIST"), then keys, which pick the Cluster node (a
// keyless command goes to any node), then args. It is never retried. The reply is converted
// as go-redis did with RESP2: integer -> int64, simple, bulk and verbatim strings and doubles
// -> string, RESP3 booleans -> int64 1/0, arrays and sets -> []any, a RESP3 map -> []any of
// alternating key and value (keys sorted), a nil inside an array -> nil, an error inside an
// array -> that error; a nil reply -> ErrNil.
func (c *Client) Do(ctx context.Context, name string, keys []string, args ...string) (any, error) {
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	return c.do(ctx, rc, name, keys, args)
}

func (c *Client) do(ctx context.Context, rc rueidis.Client, name string, keys, args []string) (any, error) {
	cmd, err := c.arbitrary(rc, Cmd{Name: name, Keys: keys, Args: args})
	if err != nil {
		return nil, err
	}
	return c.reply(rc.Do(ctx, cmd))
}

// arbitrary builds one command of Do or Tx.
func (c *Client) arbitrary(rc rueidis.Client, cmd Cmd) (rueidis.Completed, error) {
	words := strings.Fields(cmd.Name)
	if len(words) == 0 {
		return rueidis.Completed{}, errors.New("redisconn: a command needs a name")
	}
	return build(func() rueidis.Completed {
		return rc.B().Arbitrary(words...).Keys(cmd.Keys...).Args(cmd.Args...).Build()
	})
}

// Tx runs cmds atomically, in MULTI/EXEC, and returns EXEC's replies converted as Do's. The
// whole block goes out as one batch on one connection, so no other caller's command can land
// inside it. On a Cluster every key of every command must hash to one slot; otherwise the
// error wraps ErrCrossSlot and nothing is sent. A command Redis refuses while queueing (a
// wrong number of arguments, say) aborts the whole transaction, and that refusal is the
// error. It is never retried.
func (c *Client) Tx(ctx context.Context, cmds []Cmd) ([]any, error) {
	if len(cmds) == 0 {
		return []any{}, nil
	}
	rc, ctx, end, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer end()
	multi := make([]rueidis.Completed, 0, len(cmds)+2)
	multi = append(multi, rc.B().Multi().Build())
	for _, cmd := range cmds {
		built, err := c.arbitrary(rc, cmd)
		if err != nil {
			return nil, err
		}
		multi = append(multi, built)
	}
	multi = append(multi, rc.B().Exec().Build())
	var results []rueidis.RedisResult
	// rueidis's Cluster client panics, before any I/O, when the block spans several slots.
	if err := protect(func() { results = rc.DoMulti(ctx, multi...) }); err != nil {
		return nil, err
	}
	for _, r := range results[:len(results)-1] {
		if err := r.Error(); err != nil {
			c.observe(err)
			return nil, err
		}
	}
	v, err := c.reply(results[len(results)-1])
	if err != nil {
		return nil, err
	}
	replies, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redisconn: EXEC replied %T, want an array", v)
	}
	return replies, nil
}

// ForEachMaster calls fn with a Doer for each master: every master of a Cluster (SCAN sees
// only the node it runs on), otherwise c itself. It stops at the first error.
func (c *Client) ForEachMaster(ctx context.Context, fn func(ctx context.Context, d Doer) error) error {
	if !c.Cluster() {
		return fn(ctx, c)
	}
	slots, err := c.Do(ctx, "CLUSTER SLOTS", nil)
	if err != nil {
		return fmt.Errorf("redisconn: list cluster masters: %w", err)
	}
	masters, err := clusterMasters(slots)
	if err != nil {
		return err
	}
	rc, err := c.client()
	if err != nil {
		return err
	}
	nodes := rc.Nodes()
	for _, addr := range masters {
		n, ok := nodes[addr]
		if !ok {
			return fmt.Errorf("redisconn: cluster master %s is not among the client's nodes yet", addr)
		}
		if err := fn(ctx, nodeDoer{c: c, rc: n}); err != nil {
			return err
		}
	}
	return nil
}

// clusterMasters reads the master addresses out of a converted CLUSTER SLOTS reply, sorted.
func clusterMasters(v any) ([]string, error) {
	ranges, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("redisconn: CLUSTER SLOTS replied %T, want an array", v)
	}
	var masters []string
	for _, r := range ranges {
		fields, ok := r.([]any)
		if !ok || len(fields) < 3 {
			return nil, errors.New("redisconn: CLUSTER SLOTS replied a malformed slot range")
		}
		node, ok := fields[2].([]any)
		if !ok || len(node) < 2 {
			return nil, errors.New("redisconn: CLUSTER SLOTS replied a malformed node")
		}
		host, _ := node[0].(string)
		port, _ := node[1].(int64)
		addr := net.JoinHostPort(host, strconv.FormatInt(port, 10))
		if !slices.Contains(masters, addr) {
			masters = append(masters, addr)
		}
	}
	slices.Sort(masters)
	return masters, nil
}

// nodeDoer runs commands on one Cluster node, under the Client's cap and deadline.
type nodeDoer struct {
	c  *Client
	rc rueidis.Client
}

func (d nodeDoer) Do(ctx context.Context, name string, keys []string, args ...string) (any, error) {
	if err := d.c.acquire(); err != nil {
		return nil, err
	}
	defer d.c.release()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.c.timeout)
		defer cancel()
	}
	return d.c.do(ctx, d.rc, name, keys, args)
}

// protect runs f, which builds or sends commands, turning a panic of rueidis into an error:
// its Cluster client panics on keys in several slots, which wraps ErrCrossSlot here, and its
// builders panic on a command they cannot send (SUBSCRIBE through Do). The panic messages are
// rueidis's constants and name no key.
func protect(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if strings.Contains(msg, "slot") {
				err = fmt.Errorf("%w: %s", ErrCrossSlot, msg)
			} else {
				err = fmt.Errorf("redisconn: invalid command: %s", msg)
			}
		}
	}()
	f()
	return nil
}

// build returns the command f builds, or protect's error.
func build(f func() rueidis.Completed) (cmd rueidis.Completed, err error) {
	err = protect(func() { cmd = f() })
	return cmd, err
}

// build is the package-level build on a Cluster, where rueidis checks key slots, and a plain
// call elsewhere, where its builders do not panic on keys.
func (c *Client) build(f func() rueidis.Completed) (rueidis.Completed, error) {
	if c.Cluster() {
		return build(f)
	}
	return f(), nil
}

// reply converts a result as Do documents.
func (c *Client) reply(res rueidis.RedisResult) (any, error) {
	msg, err := res.ToMessage()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			c.observe(nil)
			return nil, ErrNil
		}
		c.observe(err)
		return nil, err
	}
	c.observe(nil)
	return convert(&msg), nil
}

// str reads a string reply, ErrNil for a nil.
func (c *Client) str(res rueidis.RedisResult) (string, error) {
	s, err := res.ToString()
	if err != nil {
		if rueidis.IsRedisNil(err) {
			c.observe(nil)
			return "", ErrNil
		}
		c.observe(err)
		return "", err
	}
	c.observe(nil)
	return s, nil
}

// strMap reads a hash reply (a RESP3 map, or a RESP2 flat array).
func (c *Client) strMap(res rueidis.RedisResult) (map[string]string, error) {
	m, err := res.AsStrMap()
	c.observe(err)
	return m, err
}

// convert turns one reply into the types go-redis gave with RESP2, which is what the
// scripts' callers were written against.
func convert(m *rueidis.RedisMessage) any {
	switch {
	case m.IsNil():
		return nil
	case m.IsInt64():
		v, _ := m.AsInt64()
		return v
	case m.IsString():
		s, _ := m.ToString()
		return s
	case m.IsArray():
		elems, _ := m.ToArray()
		out := make([]any, len(elems))
		for i := range elems {
			out[i] = convert(&elems[i])
		}
		return out
	case m.IsMap():
		fields, _ := m.AsMap()
		keys := make([]string, 0, len(fields))
		for k := range fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make([]any, 0, 2*len(keys))
		for _, k := range keys {
			v := fields[k]
			out = append(out, k, convert(&v))
		}
		return out
	case m.IsBool():
		if b, _ := m.AsBool(); b {
			return int64(1)
		}
		return int64(0)
	}
	if err := m.Error(); err != nil {
		return err
	}
	// Doubles, big numbers and verbatim strings: their text, as RESP2 sends it. rueidis keeps
	// a verbatim string's "txt:" format prefix (CLIENT INFO, INFO); RESP2 has none.
	s, _ := m.ToString()
	if !m.IsFloat64() && len(s) >= 4 && s[3] == ':' {
		s = s[4:]
	}
	return s
}

// formatArgs renders script arguments as go-redis did.
func formatArgs(args []any) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			out[i] = v
		case []byte:
			out[i] = string(v)
		case int:
			out[i] = strconv.Itoa(v)
		case int64:
			out[i] = strconv.FormatInt(v, 10)
		case int32:
			out[i] = strconv.FormatInt(int64(v), 10)
		case uint64:
			out[i] = strconv.FormatUint(v, 10)
		case uint32:
			out[i] = strconv.FormatUint(uint64(v), 10)
		case uint:
			out[i] = strconv.FormatUint(uint64(v), 10)
		case float64:
			out[i] = strconv.FormatFloat(v, 'f', -1, 64)
		case bool:
			out[i] = "0"
			if v {
				out[i] = "1"
			}
		default:
			return nil, fmt.Errorf("redisconn: script argument %d has unsupported type %T", i, a)
		}
	}
	return out, nil
}

// HasErrorPrefix reports whether err is an error reply from Redis that starts with prefix
// ("WRONGTYPE", "NOSCRIPT"). rueidis drops the generic "ERR " prefix from replies, so match
// the text after it for those.
func HasErrorPrefix(err error, prefix string) bool {
	var re *rueidis.RedisError
	if !errors.As(err, &re) || re.IsNil() {
		return false
	}
	return strings.HasPrefix(re.Error(), prefix)
}
