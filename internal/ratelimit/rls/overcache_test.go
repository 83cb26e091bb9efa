package rls

import (
	"strconv"
	"testing"
	"time"
)

// A cache full of live entries is swept at most once per sweepEvery, however many counters
// go over their limit meanwhile; once entries have expired, the next sweep makes room.
func TestOverCacheSweepsAFullCacheRarely(t *testing.T) {
	c := newOverCache(100)
	now := time.Unix(1_700_000_000, 0)
	for i := range 100 {
		c.add("live"+strconv.Itoa(i), now.Add(time.Hour), now)
	}
	c.add("short", now.Add(time.Hour), now) // full: one sweep, nothing expired
	for i := range 10000 {
		c.add("more"+strconv.Itoa(i), now.Add(time.Hour), now.Add(time.Duration(i)*time.Microsecond))
	}
	if c.sweeps != 1 || c.len() != 100 {
		t.Fatalf("%d sweeps, %d entries after 10001 adds to a full cache within a second; want 1 and 100", c.sweeps, c.len())
	}
	later := now.Add(2 * time.Hour)
	c.add("new", later.Add(time.Minute), later)
	if c.sweeps != 2 || c.len() != 1 {
		t.Fatalf("after the entries expired: %d sweeps, %d entries; want 2 and 1", c.sweeps, c.len())
	}
	if _, ok := c.over("new", later); !ok {
		t.Fatal("the new entry was not remembered")
	}
}
