package ratelimit

import (
	"context"
	"testing"
	"time"
)

func TestBound(t *testing.T) {
	// No deadline: one of d.
	ctx, cancel := Bound(context.Background(), 50*time.Millisecond)
	dl, ok := ctx.Deadline()
	if !ok || time.Until(dl) > 50*time.Millisecond || time.Until(dl) < 40*time.Millisecond {
		t.Fatalf("deadline %v, %v; want about 50ms from now", dl, ok)
	}
	cancel()
	if ctx.Err() == nil {
		t.Fatal("cancel did not cancel the derived context")
	}

	// A later deadline: ours, sooner.
	parent, pcancel := context.WithTimeout(context.Background(), time.Hour)
	defer pcancel()
	ctx, cancel = Bound(parent, 50*time.Millisecond)
	if ctx == parent {
		t.Fatal("a later parent deadline must be tightened")
	}
	cancel()

	// A sooner deadline (Envoy's 20ms against a 25ms timeout): the parent itself, untouched
	// by cancel.
	parent2, pcancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer pcancel2()
	ctx, cancel = Bound(parent2, 25*time.Millisecond)
	if ctx != parent2 {
		t.Fatal("a sooner parent deadline should be used as is")
	}
	cancel()
	if parent2.Err() != nil {
		t.Fatal("cancel of an underived context canceled the caller's context")
	}
}
