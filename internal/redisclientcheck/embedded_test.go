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
// embedded store of make run (miniredis), and which options it needs there.
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
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			res, err := ratelimit.NewFixedWindow(rueidisScripter{c}).Add(ctx, []ratelimit.Hit{{Key: "{" + o.name + "}", Window: 60, Hits: 1}})
			t.Logf("rueidis on miniredis with %s: fixed window %v, %v", o.name, res.Counts, err)
			if err != nil || len(res.Counts) != 1 || res.Counts[0] != 1 {
				t.Errorf("fixed window on miniredis = %v, %v; want [1]", res.Counts, err)
			}
		})
	}
}
