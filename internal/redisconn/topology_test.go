package redisconn

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// topology is one running deployment under test and how to stall its master for a key.
type topology struct {
	url     string
	masters int
	// pause stops (SIGSTOP) the master that serves key; resume undoes it.
	pause  func(key string)
	resume func()
}

var topologies = []struct {
	name  string
	start func(t *testing.T) topology
}{
	{"single", func(t *testing.T) topology {
		s := redistest.Start(t)
		return topology{url: s.URL(), masters: 1, pause: func(string) { s.Pause() }, resume: s.Resume}
	}},
	{"sentinel", func(t *testing.T) topology {
		// With passwords on both the data nodes and the sentinels: the URL carries both.
		s := redistest.StartSentinel(t, redistest.WithPassword("data pw"), redistest.WithSentinelPassword("sentinel pw"))
		return topology{url: s.URL(0), masters: 1, pause: func(string) { s.PauseMaster() }, resume: s.ResumeMaster}
	}},
	{"cluster", func(t *testing.T) topology {
		c := redistest.StartCluster(t, redistest.WithPassword("cluster pw"))
		var paused string
		return topology{
			url: c.URL(), masters: 3,
			pause:  func(key string) { paused = c.MasterFor(key); c.PauseNode(paused) },
			resume: func() { c.ResumeNode(paused) },
		}
	}},
}

// TestTopologies runs every method on one node, Sentinel and Cluster, with the same
// expectations: the point of one API is that callers cannot tell them apart, except through
// Cluster() and cross-slot keys.
func TestTopologies(t *testing.T) {
	for _, tc := range topologies {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			top := tc.start(t)
			var invalidated atomic.Int64
			c := readyClient(t, Options{URL: top.url, Timeout: time.Second,
				OnInvalidation: func(keys int) { invalidated.Add(int64(keys)) }})
			// other writes from another connection, as another sidecar would.
			other := readyClient(t, Options{URL: top.url, Timeout: time.Second, CacheBytes: -1})
			if got := c.Cluster(); got != (tc.name == "cluster") {
				t.Errorf("Cluster() = %v", got)
			}
			if d := c.Describe(); strings.Contains(d, "pw") {
				t.Errorf("Describe() = %q shows a password", d)
			}
			t.Run("Eval", func(t *testing.T) { checkEval(t, c, top.masters) })
			t.Run("Get HGetAll Expire", func(t *testing.T) { checkReads(t, c) })
			t.Run("cached reads", func(t *testing.T) { checkCache(t, c, other, &invalidated) })
			t.Run("Do", func(t *testing.T) { checkDo(t, c) })
			t.Run("Tx", func(t *testing.T) { checkTx(t, c) })
			t.Run("ForEachMaster", func(t *testing.T) { checkForEachMaster(t, c, top.masters) })
			// Last: a stalled master can start a failover if it lasts.
			t.Run("deadline", func(t *testing.T) { checkDeadline(t, top, c) })
		})
	}
}

// commandCalls sums the calls of each command over every master, from INFO commandstats.
func commandCalls(t *testing.T, c *Client) map[string]int {
	t.Helper()
	calls := map[string]int{}
	err := c.ForEachMaster(ctxFor(t), func(ctx context.Context, d Doer) error {
		v, err := d.Do(ctx, "INFO", nil, "commandstats")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(v.(string), "\n") {
			name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":calls=")
			if !ok {
				continue
			}
			n, _ := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
			calls[name] += n
		}
		return nil
	})
	if err != nil {
		t.Fatalf("INFO commandstats on every master: %v", err)
	}
	return calls
}

func checkEval(t *testing.T, c *Client, masters int) {
	ctx := ctxFor(t)
	visited := 0
	err := c.ForEachMaster(ctx, func(ctx context.Context, d Doer) error {
		visited++
		if _, err := d.Do(ctx, "SCRIPT FLUSH", nil); err != nil {
			return err
		}
		_, err := d.Do(ctx, "CONFIG RESETSTAT", nil)
		return err
	})
	if err != nil || visited != masters {
		t.Fatalf("SCRIPT FLUSH on every master: %v after %d of %d", err, visited, masters)
	}
	const counter = `local n = redis.call('INCR', KEYS[1]) redis.call('SET', KEYS[2], n) return {n, ARGV[1]}`
	keys := []string{"ev:{e}:n", "ev:{e}:copy"}
	for i := 1; i <= 3; i++ {
		v, err := c.Eval(ctx, sha1Hex(counter), counter, keys, "x")
		if err != nil {
			t.Fatalf("Eval %d: %v", i, err)
		}
		if a, ok := v.([]any); !ok || len(a) != 2 || a[0] != int64(i) || a[1] != "x" {
			t.Errorf("Eval %d = %#v, want [%d x]", i, v, i)
		}
	}
	// EVALSHA every time, EVAL once: after the NOSCRIPT of the flushed cache.
	calls := commandCalls(t, c)
	if calls["evalsha"] != 3 || calls["eval"] != 1 {
		t.Errorf("the masters ran EVALSHA %d times and EVAL %d times, want 3 and 1", calls["evalsha"], calls["eval"])
	}
	if v, err := c.Eval(ctx, sha1Hex("return nil"), "return nil", keys[:1]); !errors.Is(err, ErrNil) {
		t.Errorf("a script returning nil = %#v, %v, want ErrNil", v, err)
	}
	fail := `return redis.error_reply('MYERR no good')`
	if _, err := c.Eval(ctx, sha1Hex(fail), fail, keys[:1]); !HasErrorPrefix(err, "MYERR") {
		t.Errorf("a script's error reply = %v, want HasErrorPrefix MYERR", err)
	}
	// "a" and "b" hash to slots 15495 and 3300.
	v, err := c.Eval(ctx, sha1Hex(counter), counter, []string{"a", "b"}, "x")
	if c.Cluster() {
		if !errors.Is(err, ErrCrossSlot) {
			t.Errorf("cross-slot Eval on a Cluster = %#v, %v, want ErrCrossSlot", v, err)
		}
		t.Logf("cross-slot Eval: %v", err)
	} else if err != nil {
		t.Errorf("Eval on keys in two slots, not on a Cluster: %v", err)
	}
}

func checkReads(t *testing.T, c *Client) {
	ctx := ctxFor(t)
	if _, err := c.Do(ctx, "SET", []string{"rd:s"}, "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "rd:s"); err != nil || v != "v" {
		t.Errorf("Get = %q, %v", v, err)
	}
	if v, err := c.Get(ctx, "rd:missing"); !errors.Is(err, ErrNil) {
		t.Errorf("Get of a missing key = %q, %v, want ErrNil", v, err)
	}
	if _, err := c.Do(ctx, "HSET", []string{"rd:h"}, "f1", "v1", "f2", "v2"); err != nil {
		t.Fatal(err)
	}
	if m, err := c.HGetAll(ctx, "rd:h"); err != nil || len(m) != 2 || m["f1"] != "v1" || m["f2"] != "v2" {
		t.Errorf("HGetAll = %v, %v", m, err)
	}
	if m, err := c.HGetAll(ctx, "rd:missing"); err != nil || m == nil || len(m) != 0 {
		t.Errorf("HGetAll of a missing key = %#v, %v, want an empty map", m, err)
	}
	if _, err := c.Get(ctx, "rd:h"); !HasErrorPrefix(err, "WRONGTYPE") {
		t.Errorf("Get of a hash = %v, want WRONGTYPE", err)
	}
	if err := c.Expire(ctx, "rd:s", 1500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Do(ctx, "PTTL", []string{"rd:s"}); err != nil || v.(int64) <= 0 || v.(int64) > 1500 {
		t.Errorf("PTTL after Expire 1.5s = %v, %v", v, err)
	}
	if err := c.Expire(ctx, "rd:h", time.Minute); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Do(ctx, "TTL", []string{"rd:h"}); err != nil || v != int64(60) {
		t.Errorf("TTL after Expire 1m = %v, %v", v, err)
	}
	if err := c.Expire(ctx, "rd:missing", time.Minute); err != nil {
		t.Errorf("Expire of a missing key: %v", err)
	}
}

// waitFor polls read for up to 50 ms until it returns want, and returns how long that took.
func waitFor(t *testing.T, what string, want string, read func() (string, error)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, err := read()
		if err == nil && got == want {
			return time.Since(start)
		}
		if time.Since(start) > 50*time.Millisecond {
			t.Errorf("%s = %q, %v 50ms after another connection wrote %q", what, got, err, want)
			return time.Since(start)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func checkCache(t *testing.T, c, other *Client, invalidated *atomic.Int64) {
	ctx := ctxFor(t)
	if _, err := other.Do(ctx, "SET", []string{"ch:s"}, "v1"); err != nil {
		t.Fatal(err)
	}
	for i, wantHit := range []bool{false, true, true} {
		v, hit, err := c.GetCached(ctx, "ch:s", time.Minute)
		if err != nil || v != "v1" || hit != wantHit {
			t.Errorf("GetCached %d = %q, hit %v, %v, want v1, hit %v", i, v, hit, err, wantHit)
		}
	}
	before := invalidated.Load()
	if _, err := other.Do(ctx, "SET", []string{"ch:s"}, "v2"); err != nil {
		t.Fatal(err)
	}
	d := waitFor(t, "GetCached", "v2", func() (string, error) { v, _, err := c.GetCached(ctx, "ch:s", time.Minute); return v, err })
	t.Logf("a write from another connection reached the cache after %v", d.Round(10*time.Microsecond))
	if invalidated.Load() <= before {
		t.Error("OnInvalidation was not called for the write")
	}

	// A missing key is cached too, and a write to it is seen.
	for i, wantHit := range []bool{false, true} {
		if v, hit, err := c.GetCached(ctx, "ch:missing", time.Minute); !errors.Is(err, ErrNil) || hit != wantHit {
			t.Errorf("GetCached %d of a missing key = %q, hit %v, %v, want ErrNil, hit %v", i, v, hit, err, wantHit)
		}
	}
	if _, err := other.Do(ctx, "SET", []string{"ch:missing"}, "now"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "GetCached of a key just written", "now", func() (string, error) {
		v, _, err := c.GetCached(ctx, "ch:missing", time.Minute)
		return v, err
	})

	if _, err := other.Do(ctx, "HSET", []string{"ch:h"}, "f", "1"); err != nil {
		t.Fatal(err)
	}
	for i, wantHit := range []bool{false, true} {
		if m, hit, err := c.HGetAllCached(ctx, "ch:h", time.Minute); err != nil || m["f"] != "1" || hit != wantHit {
			t.Errorf("HGetAllCached %d = %v, hit %v, %v, want f=1, hit %v", i, m, hit, err, wantHit)
		}
	}
	if _, err := other.Do(ctx, "HSET", []string{"ch:h"}, "f", "2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "HGetAllCached", "2", func() (string, error) {
		m, _, err := c.HGetAllCached(ctx, "ch:h", time.Minute)
		return m["f"], err
	})

	// The local TTL, given when an entry is made, bounds it even without a write.
	if _, err := other.Do(ctx, "SET", []string{"ch:ttl"}, "v"); err != nil {
		t.Fatal(err)
	}
	for i, wantHit := range []bool{false, true} {
		if _, hit, err := c.GetCached(ctx, "ch:ttl", 200*time.Millisecond); err != nil || hit != wantHit {
			t.Errorf("GetCached %d with a 200ms TTL: hit %v, %v, want hit %v", i, hit, err, wantHit)
		}
	}
	time.Sleep(250 * time.Millisecond)
	if _, hit, err := c.GetCached(ctx, "ch:ttl", 200*time.Millisecond); err != nil || hit {
		t.Errorf("GetCached after its 200ms TTL: hit %v, %v, want a read from Redis", hit, err)
	}
	// other has caching off: never a hit.
	for range 2 {
		if _, hit, err := other.GetCached(ctx, "ch:s", time.Minute); err != nil || hit {
			t.Errorf("GetCached with CacheBytes < 0: hit %v, %v, want no cache", hit, err)
		}
	}
}

func checkDo(t *testing.T, c *Client) {
	ctx := ctxFor(t)
	if _, err := c.Do(ctx, "HSET", []string{"do:h"}, "b", "2", "a", "1"); err != nil {
		t.Fatal(err)
	}
	// A RESP3 map comes back as RESP2's flat array (keys sorted).
	if v, err := c.Do(ctx, "HGETALL", []string{"do:h"}); err != nil || fmt.Sprint(v) != "[a 1 b 2]" {
		t.Errorf("Do HGETALL = %#v, %v, want [a 1 b 2]", v, err)
	}
	if _, err := c.Do(ctx, "ZADD", []string{"do:z"}, "1.5", "m"); err != nil {
		t.Fatal(err)
	}
	// A RESP3 double comes back as RESP2's string.
	if v, err := c.Do(ctx, "ZSCORE", []string{"do:z"}, "m"); err != nil || v != "1.5" {
		t.Errorf("Do ZSCORE = %#v, %v, want \"1.5\"", v, err)
	}
	if v, err := c.Do(ctx, "GET", []string{"do:missing"}); !errors.Is(err, ErrNil) {
		t.Errorf("Do GET of a missing key = %#v, %v, want ErrNil", v, err)
	}
	if v, err := c.Do(ctx, "EXISTS", []string{"do:h"}); err != nil || v != int64(1) {
		t.Errorf("Do EXISTS = %#v, %v, want 1", v, err)
	}
	// Nil elements stay nil; the hash tag keeps MGET on one slot.
	if _, err := c.Do(ctx, "SET", []string{"{do}x"}, "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Do(ctx, "MGET", []string{"{do}x", "{do}y"}); err != nil || !slices.Equal(v.([]any), []any{"1", nil}) {
		t.Errorf("Do MGET = %#v, %v, want [1 nil]", v, err)
	}
	if _, err := c.Do(ctx, "NOSUCHCOMMAND", nil); err == nil {
		t.Error("an unknown command succeeded")
	}
	if _, err := c.Do(ctx, " ", nil); err == nil {
		t.Error("a command without a name succeeded")
	}
	if _, err := c.Do(ctx, "SUBSCRIBE", nil, "ch"); err == nil {
		t.Error("SUBSCRIBE through Do succeeded")
	}
	_, err := c.Do(ctx, "MGET", []string{"a", "b"})
	if c.Cluster() && !errors.Is(err, ErrCrossSlot) {
		t.Errorf("cross-slot MGET on a Cluster = %v, want ErrCrossSlot", err)
	} else if !c.Cluster() && err != nil {
		t.Errorf("MGET: %v", err)
	}
}

func checkTx(t *testing.T, c *Client) {
	ctx := ctxFor(t)
	v, err := c.Tx(ctx, []Cmd{
		{Name: "SET", Keys: []string{"tx:{t}:a"}, Args: []string{"1"}},
		{Name: "INCR", Keys: []string{"tx:{t}:a"}},
		{Name: "GET", Keys: []string{"tx:{t}:a"}},
	})
	if err != nil || !slices.Equal(v, []any{"OK", int64(2), "2"}) {
		t.Errorf("Tx = %#v, %v, want [OK 2 \"2\"]", v, err)
	}
	// Atomic: a command refused while queueing aborts the whole block, so the SET before it
	// never happens. Without MULTI it would have.
	_, err = c.Tx(ctx, []Cmd{
		{Name: "SET", Keys: []string{"tx:{t}:b"}, Args: []string{"1"}},
		{Name: "SET", Keys: []string{"tx:{t}:b"}}, // no value: wrong number of arguments
	})
	if err == nil {
		t.Error("Tx with a malformed command succeeded")
	}
	if v, err := c.Get(ctx, "tx:{t}:b"); !errors.Is(err, ErrNil) {
		t.Errorf("after an aborted Tx the key holds %q (%v), want nothing", v, err)
	}
	// A command that fails while running fails alone, as in Redis.
	v, err = c.Tx(ctx, []Cmd{
		{Name: "SET", Keys: []string{"tx:{t}:c"}, Args: []string{"x"}},
		{Name: "INCR", Keys: []string{"tx:{t}:c"}},
		{Name: "SET", Keys: []string{"tx:{t}:d"}, Args: []string{"y"}},
	})
	if err != nil || len(v) != 3 || v[0] != "OK" || v[2] != "OK" {
		t.Errorf("Tx with a failing INCR = %#v, %v", v, err)
	} else if e, ok := v[1].(error); !ok || !strings.Contains(e.Error(), "not an integer") {
		t.Errorf("Tx's INCR of a string = %#v, want its error", v[1])
	}

	// One batch on one connection: a concurrent plain command never lands inside a MULTI
	// (it would be answered QUEUED), and every increment counts once.
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers*each)
	for range workers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for range each {
				v, err := c.Tx(ctx, []Cmd{{Name: "INCR", Keys: []string{"tx:{t}:x"}}, {Name: "INCR", Keys: []string{"tx:{t}:y"}}})
				if err != nil || len(v) != 2 {
					errs <- fmt.Errorf("Tx = %#v, %v", v, err)
				} else if _, ok := v[0].(int64); !ok {
					errs <- fmt.Errorf("Tx = %#v, want integers", v)
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range each {
				if v, err := c.Do(ctx, "INCR", []string{"tx:{t}:x"}); err != nil {
					errs <- err
				} else if _, ok := v.(int64); !ok {
					errs <- fmt.Errorf("INCR next to Tx = %#v, want an integer", v)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if x, err := c.Get(ctx, "tx:{t}:x"); err != nil || x != strconv.Itoa(2*workers*each) {
		t.Errorf("x = %s (%v), want %d", x, err, 2*workers*each)
	}
	if y, err := c.Get(ctx, "tx:{t}:y"); err != nil || y != strconv.Itoa(workers*each) {
		t.Errorf("y = %s (%v), want %d", y, err, workers*each)
	}

	_, err = c.Tx(ctx, []Cmd{{Name: "SET", Keys: []string{"a"}, Args: []string{"1"}}, {Name: "SET", Keys: []string{"b"}, Args: []string{"1"}}})
	switch {
	case c.Cluster() && !errors.Is(err, ErrCrossSlot):
		t.Errorf("cross-slot Tx on a Cluster = %v, want ErrCrossSlot", err)
	case !c.Cluster() && err != nil:
		t.Errorf("Tx on two slots, not on a Cluster: %v", err)
	}
	if c.Cluster() {
		if v, err := c.Get(ctx, "a"); !errors.Is(err, ErrNil) {
			t.Errorf("a cross-slot Tx wrote %q (%v), want nothing sent", v, err)
		}
	}
}

func checkForEachMaster(t *testing.T, c *Client, masters int) {
	ctx := ctxFor(t)
	const n = 60
	for i := range n {
		if _, err := c.Do(ctx, "SET", []string{"fe:" + strconv.Itoa(i)}, "1"); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	visited := 0
	err := c.ForEachMaster(ctx, func(ctx context.Context, d Doer) error {
		visited++
		cursor := "0"
		for {
			v, err := d.Do(ctx, "SCAN", nil, cursor, "MATCH", "fe:*", "COUNT", "1000")
			if err != nil {
				return err
			}
			page := v.([]any)
			for _, k := range page[1].([]any) {
				seen[k.(string)] = true
			}
			if cursor = page[0].(string); cursor == "0" {
				return nil
			}
		}
	})
	if err != nil || visited != masters || len(seen) != n {
		t.Errorf("ForEachMaster SCAN: %v, %d masters of %d, %d keys of %d", err, visited, masters, len(seen), n)
	}
	stop := errors.New("stop")
	visited = 0
	if err := c.ForEachMaster(ctx, func(context.Context, Doer) error { visited++; return stop }); !errors.Is(err, stop) || visited != 1 {
		t.Errorf("ForEachMaster = %v after %d calls, want the callback's error after 1", err, visited)
	}
}

// checkDeadline: with the master of a key stopped, calls on it keep their 25 ms deadline.
func checkDeadline(t *testing.T, top topology, c *Client) {
	const deadline = 25 * time.Millisecond
	key := "dl:{d}:n"
	if _, err := c.Do(ctxFor(t), "SET", []string{key}, "0"); err != nil {
		t.Fatal(err)
	}
	const script = `return redis.call('INCR', KEYS[1])`
	measureDeadline(t, deadline, 4, 3, func() { top.pause(key) }, top.resume, func(w, i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		var err error
		if (w+i)%2 == 0 {
			_, err = c.Eval(ctx, sha1Hex(script), script, []string{key})
		} else {
			_, err = c.Get(ctx, key)
		}
		if !IsTimeout(err) {
			t.Errorf("call on a stopped master = %v, want a timeout", err)
		}
		return err
	})
	// Back to normal on the same Client.
	if _, err := c.Get(ctxFor(t), key); err != nil {
		t.Errorf("Get after resuming: %v", err)
	}
}

// TestMaxInFlight: past the cap a call fails at once with ErrBusy, calls OnBusy, and the cap
// frees up as calls finish.
func TestMaxInFlight(t *testing.T) {
	s := redistest.Start(t)
	var busy atomic.Int64
	c := readyClient(t, Options{URL: s.URL(), Timeout: time.Second, MaxInFlight: 4, OnBusy: func() { busy.Add(1) }})
	s.Pause()
	defer s.Resume()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, _ = c.Get(ctx, "k")
		}()
	}
	// Until all four are in flight.
	for deadline := time.Now().Add(2 * time.Second); c.inFlight.Load() < 4; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d calls in flight", c.inFlight.Load())
		}
	}
	var slowest time.Duration
	for range 20 {
		start := time.Now()
		_, err := c.Eval(context.Background(), "0", "return 1", nil)
		slowest = max(slowest, time.Since(start))
		if !errors.Is(err, ErrBusy) || IsTimeout(err) {
			t.Fatalf("call past the cap = %v, want ErrBusy", err)
		}
	}
	t.Logf("slowest of 20 calls refused past the cap: %v", slowest)
	// At once means far under the 1 s deadline the call would otherwise have; the margin is
	// for a loaded box.
	if slowest > 100*time.Millisecond {
		t.Errorf("a refused call took %v, want at once", slowest)
	}
	if busy.Load() != 20 {
		t.Errorf("OnBusy called %d times, want 20", busy.Load())
	}
	wg.Wait()
	s.Resume()
	if err := c.Ping(ctxFor(t)); err != nil {
		t.Errorf("Ping once the calls finished: %v", err)
	}
	if n := c.inFlight.Load(); n != 0 {
		t.Errorf("%d calls in flight at rest, want 0", n)
	}
}

// TestSentinelFailover: the same Client follows the sentinels to the new master, with the
// data, once the old one dies.
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinel(t)
	c := readyClient(t, Options{URL: s.URL(0), Timeout: 500 * time.Millisecond})
	ctx := ctxFor(t)
	if _, err := c.Do(ctx, "SET", []string{"k"}, "before"); err != nil {
		t.Fatal(err)
	}
	// WAIT counts the writes of its own connection: the Client has one to the master.
	if n, err := c.Do(ctx, "WAIT", nil, "1", "2000"); err != nil || n != int64(1) {
		t.Fatalf("WAIT 1 = %v, %v, want 1 replica", n, err)
	}
	old := s.KillMaster()
	killed := time.Now()
	var last error
	for {
		_, last = c.Do(context.Background(), "SET", []string{"k2"}, "after")
		if last == nil {
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("SET 10s after the master died: %v", last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the same Client wrote again %v after %s died", time.Since(killed).Round(time.Millisecond), old)
	if v, err := c.Get(ctxFor(t), "k"); err != nil || v != "before" {
		t.Errorf("GET k after the failover = %q, %v, want %q", v, err, "before")
	}
	if got := s.MasterAddr(); got == old {
		t.Errorf("the master is still %s", old)
	}
}
