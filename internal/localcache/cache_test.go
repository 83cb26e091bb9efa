package localcache

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

// clock is a settable monotonic clock for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Duration
}

func (c *clock) now() time.Duration  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t += d; c.mu.Unlock() }

func newTest(t *testing.T, o Options) (*Cache[string], *clock) {
	t.Helper()
	c := New[string](o)
	clk := &clock{}
	c.now = clk.now
	c.SetActive(true)
	return c, clk
}

func TestInactiveServesAndStoresNothing(t *testing.T) {
	c := New[string](Options{TTL: time.Minute, NegativeTTL: time.Minute, MaxEntries: 100})
	c.Put("a", c.Ticket("a"), "A", 0)
	c.PutMissing("b", c.Ticket("b"))
	if _, r := c.Get("a"); r != Miss {
		t.Fatalf("inactive cache: Get(a) = %v, want Miss", r)
	}
	if n := c.Len(); n != 0 {
		t.Fatalf("inactive cache stored %d entries", n)
	}
	c.SetActive(true)
	c.Put("a", c.Ticket("a"), "A", 0)
	if v, r := c.Get("a"); r != Hit || v != "A" {
		t.Fatalf("Get(a) = %q, %v; want A, Hit", v, r)
	}
	c.SetActive(false)
	if _, r := c.Get("a"); r != Miss {
		t.Fatalf("after deactivation Get(a) = %v, want Miss", r)
	}
	c.SetActive(true)
	if _, r := c.Get("a"); r != Miss {
		t.Fatalf("reactivation must start empty, Get(a) = %v", r)
	}
}

func TestTTLAndMaxLife(t *testing.T) {
	c, clk := newTest(t, Options{TTL: 10 * time.Second, NegativeTTL: 2 * time.Second, MaxEntries: 100})
	c.Put("a", c.Ticket("a"), "A", 0)
	c.Put("b", c.Ticket("b"), "B", 3*time.Second) // a session expiring sooner than TTL
	c.PutMissing("n", c.Ticket("n"))
	if _, r := c.Get("n"); r != NegativeHit {
		t.Fatalf("Get(n) = %v, want NegativeHit", r)
	}
	clk.add(2 * time.Second)
	if _, r := c.Get("n"); r != Miss {
		t.Fatalf("negative entry outlived NegativeTTL: %v", r)
	}
	clk.add(time.Second)
	if _, r := c.Get("b"); r != Miss {
		t.Fatalf("entry outlived its maxLife: %v", r)
	}
	if _, r := c.Get("a"); r != Hit {
		t.Fatalf("Get(a) at 3s = %v, want Hit", r)
	}
	clk.add(7 * time.Second)
	if _, r := c.Get("a"); r != Miss {
		t.Fatalf("entry outlived TTL: %v", r)
	}
}

func TestNegativeTTLZeroStoresNoNegatives(t *testing.T) {
	c, _ := newTest(t, Options{TTL: time.Minute, MaxEntries: 100})
	c.PutMissing("n", c.Ticket("n"))
	if _, r := c.Get("n"); r != Miss {
		t.Fatalf("Get(n) = %v, want Miss", r)
	}
}

// A value read before an invalidation must not be stored after it: the ticket voids the Put.
func TestInvalidationVoidsOutstandingTicket(t *testing.T) {
	c, _ := newTest(t, Options{TTL: time.Minute, NegativeTTL: time.Minute, MaxEntries: 100})
	tk := c.Ticket("s")      // before the GET
	c.Invalidate("s")        // the logout's notification arrives while the GET is out
	c.Put("s", tk, "old", 0) // the GET's (stale) answer
	if _, r := c.Get("s"); r != Miss {
		t.Fatalf("stale value stored after invalidation: %v", r)
	}
	tk = c.Ticket("s")
	c.Flush()
	c.PutMissing("s", tk)
	if _, r := c.Get("s"); r != Miss {
		t.Fatalf("stale negative stored after flush: %v", r)
	}
	tk = c.Ticket("s")
	c.Put("s", tk, "new", 0)
	if v, r := c.Get("s"); r != Hit || v != "new" {
		t.Fatalf("Get(s) = %q, %v; want new, Hit", v, r)
	}
	c.Invalidate("s")
	if _, r := c.Get("s"); r != Miss {
		t.Fatalf("Invalidate left the entry: %v", r)
	}
}

func TestBounded(t *testing.T) {
	evicted := 0
	c, _ := newTest(t, Options{TTL: time.Minute, MaxEntries: 320, Observe: func(r string) {
		if r == "evicted" {
			evicted++
		}
	}})
	for i := range 10000 {
		k := strconv.Itoa(i)
		c.Put(k, c.Ticket(k), k, 0)
	}
	if n := c.Len(); n > 320 {
		t.Fatalf("cache holds %d entries, bound 320", n)
	}
	if evicted < 10000-320 {
		t.Fatalf("evicted %d, want at least %d", evicted, 10000-320)
	}
}

func TestConcurrent(t *testing.T) {
	c, _ := newTest(t, Options{TTL: time.Minute, NegativeTTL: time.Second, MaxEntries: 1000})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				k := strconv.Itoa((i * (g + 1)) % 500)
				if _, r := c.Get(k); r == Miss {
					c.Put(k, c.Ticket(k), k, 0)
				}
				if i%7 == 0 {
					c.Invalidate(k)
				}
				if i%500 == 0 {
					c.Flush()
				}
			}
		}()
	}
	wg.Wait()
	for i := range 500 {
		k := strconv.Itoa(i)
		if v, r := c.Get(k); r == Hit && v != k {
			t.Fatalf("Get(%s) = %q", k, v)
		}
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New[string](Options{TTL: time.Hour, MaxEntries: 1 << 16})
	c.SetActive(true)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "s" + strconv.Itoa(i)
		c.Put(keys[i], c.Ticket(keys[i]), keys[i], 0)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, r := c.Get(keys[i&1023]); r != Hit {
				b.Fatal("miss")
			}
			i++
		}
	})
}
