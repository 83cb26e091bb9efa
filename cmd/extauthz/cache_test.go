package main

import (
	"testing"

	"github.com/extauthz/extauthz/internal/config"
)

type flips struct {
	active  bool
	calls   []bool
	invalid []string
}

func (f *flips) Invalidate(k string) { f.invalid = append(f.invalid, k) }
func (f *flips) SetActive(on bool)   { f.active = on; f.calls = append(f.calls, on) }

// With require_notifications (the default) the watcher decides; without, the cache is on from
// the start and a lost subscription only flushes it.
func TestCacheTarget(t *testing.T) {
	c := config.Default().Cache
	f := &flips{}
	tg := cacheTarget(c, f)
	if f.active || len(f.calls) != 0 {
		t.Fatalf("required notifications: the target was switched before the watcher said so: %+v", f)
	}
	tg.SetActive(false)
	if f.active {
		t.Fatal("required notifications: SetActive(false) left the cache on")
	}

	c.RequireNotifications = false
	f = &flips{}
	tg = cacheTarget(c, f)
	if !f.active {
		t.Fatal("notifications not required: the cache is not on from the start")
	}
	tg.SetActive(false) // the subscription broke: flush, stay on
	if !f.active || len(f.calls) != 2 {
		t.Fatalf("notifications not required: after a loss active=%v calls=%v; want on, flushed once more", f.active, f.calls)
	}
	tg.Invalidate("sid")
	if len(f.invalid) != 1 || f.invalid[0] != "sid" {
		t.Fatalf("invalidations not passed on: %v", f.invalid)
	}
}
