package redisclientcheck

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"

	"github.com/extauthz/extauthz/internal/ratelimit"
)

// TestRueidisOnEmbeddedStore checks that rueidis runs the limiter's script against the
// embedded store of make run (miniredis), and which options it needs there: miniredis
// rejects CLIENT TRACKING, so DisableCache.
func TestRueidisOnEmbeddedStore(t *testing.T) {
	m := miniredis.RunT(t)
	opts := []struct {
		name string
		opt  rueidis.ClientOption
	}{
		{name: "defaults"},
		{name: "DisableCache", opt: rueidis.ClientOption{DisableCache: true}},
		{name: "DisableCache ForceSingleClient", opt: rueidis.ClientOption{DisableCache: true, ForceSingleClient: true}},
	}
	for _, o := range opts {
		t.Run(o.name, func(t *testing.T) {
			opt := o.opt
			opt.InitAddress = []string{m.Addr()}
			c, err := rueidis.NewClient(opt)
			if err != nil {
				t.Logf("rueidis on miniredis with %s: NewClient: %v", o.name, err)
				if o.opt.DisableCache {
					t.Errorf("NewClient with %s: %v", o.name, err)
				}
				return
			}
			defer c.Close()
			if !o.opt.DisableCache {
				t.Errorf("rueidis with its cache on connected to miniredis: it now accepts CLIENT TRACKING; revisit DisableCache for the embedded store")
			}
			fixedWindowOnce(t, "rueidis with "+o.name, rueidisScripter{c: c}, "{"+o.name+"}")
		})
	}
}

// TestClientOnEmbeddedStore checks the sidecar's client on the embedded store (URL ""): the
// limiter's script runs, and cached reads are plain reads (no hit).
func TestClientOnEmbeddedStore(t *testing.T) {
	c := newClient(t, "")
	if !c.Embedded() {
		t.Fatalf("redisconn.Client with URL \"\": Embedded() false")
	}
	fixedWindowOnce(t, "redisconn.Client embedded", c, "{embedded}")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := c.Do(ctx, "SET", []string{"{embedded}:k"}, "v"); err != nil {
		t.Fatalf("SET: %v", err)
	}
	for i := range 3 {
		v, hit, err := c.GetCached(ctx, "{embedded}:k", time.Minute)
		if err != nil || v != "v" || hit {
			t.Errorf("GetCached %d on the embedded store = %q, hit %v, %v; want v, no hit", i, v, hit, err)
		}
	}
}

// fixedWindowOnce adds one hit through ratelimit.FixedWindow, as the limiter does.
func fixedWindowOnce(t *testing.T, name string, s ratelimit.Scripter, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res, err := ratelimit.NewFixedWindow(s).Add(ctx, []ratelimit.Hit{{Key: key, Window: 60, Hits: 1}})
	t.Logf("%s: fixed window %v, %v", name, res.Counts, err)
	if err != nil || len(res.Counts) != 1 || res.Counts[0] != 1 {
		t.Errorf("%s: fixed window = %v, %v; want [1]", name, res.Counts, err)
	}
}
