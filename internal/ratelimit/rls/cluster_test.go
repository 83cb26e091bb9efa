package rls_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/ratelimit/rls"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// clusterConfig has three limits in long windows, so that a run does not straddle a
// boundary but in the rare run that spans the top of an hour (retried).
const clusterConfig = `
domain: edge
descriptors:
  - {key: tight, rate_limit: {unit: hour, requests_per_unit: 3}}
  - {key: loose, rate_limit: {unit: day, requests_per_unit: 5}}
  - {key: wide, rate_limit: {unit: day, requests_per_unit: 100}}
`

// TestClusterCountsAsOneServer sends the same requests, three descriptors each, to a service
// on one redis-server and to one on a Redis Cluster, where each descriptor is its own hash
// tag and the three lie on three masters, so that the counter runs one script per slot
// (FixedWindowClusterSlots, as serve.go sets it on a Cluster). Once the tight limit denies,
// its slot denies while the others allow: every descriptor is still counted, the denied one
// included, as envoyproxy/ratelimit counts every descriptor of a request. The verdicts,
// remaining quotas and the counters left in Redis must be the same on both, and exactly
// these.
func TestClusterCountsAsOneServer(t *testing.T) {
	single := redistest.Start(t)
	cluster := redistest.StartCluster(t)
	// spread picks a value for each descriptor whose counter lies on a master of its own.
	spread := func(round string) []*ratelimitv3.RateLimitDescriptor {
		var ds []*ratelimitv3.RateLimitDescriptor
		masters := map[string]bool{}
		for _, name := range []string{"tight", "loose", "wide"} {
			for i := 0; ; i++ {
				v := fmt.Sprintf("%s%s%d", name, round, i)
				if m := cluster.MasterFor("rls:{edge." + name + "_" + v + "}"); !masters[m] {
					masters[m] = true
					ds = append(ds, desc(name, v))
					break
				}
			}
		}
		return ds
	}
	reqs := spread("")
	// want is, per request, each descriptor's code and remaining quota.
	want := []string{
		"OK | OK 2, OK 4, OK 99",
		"OK | OK 1, OK 3, OK 98",
		"OK | OK 0, OK 2, OK 97",
		"OVER_LIMIT | OVER_LIMIT 0, OK 1, OK 96",
		"OVER_LIMIT | OVER_LIMIT 0, OK 0, OK 95",
		"OVER_LIMIT | OVER_LIMIT 0, OVER_LIMIT 0, OK 94",
	}
	wantCounts := map[string]string{"tight": "6", "loose": "6", "wide": "6"}

	run := func(t *testing.T, url string, opts ...ratelimit.FixedWindowOption) (trace []string, counts map[string]string, ok bool) {
		rc := newClient(t, url)
		cfg, err := rls.Parse([]rls.File{{Name: "edge.yaml", Data: []byte(clusterConfig)}})
		if err != nil {
			t.Fatal(err)
		}
		svc := rls.NewService(ratelimit.NewFixedWindow(rc, opts...), cfg, rls.Options{Timeout: 5 * time.Second})
		hour := time.Now().Unix() / 3600
		for range want {
			resp, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "edge", Descriptors: reqs})
			if err != nil {
				t.Fatalf("ShouldRateLimit: %v", err)
			}
			var parts []string
			for _, st := range resp.Statuses {
				parts = append(parts, fmt.Sprintf("%v %d", st.Code, st.LimitRemaining))
			}
			trace = append(trace, resp.OverallCode.String()+" | "+strings.Join(parts, ", "))
		}
		counts = map[string]string{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = rc.ForEachMaster(ctx, func(ctx context.Context, d redisconn.Doer) error {
			for _, k := range scan(t, d, "rls:*") {
				name := strings.TrimPrefix(k[:strings.IndexByte(k, '_')], "rls:{edge.")
				if _, dup := counts[name]; dup {
					t.Errorf("descriptor %s has two counters", name)
				}
				counts[name] = get(t, d, k)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("ForEachMaster: %v", err)
		}
		return trace, counts, time.Now().Unix()/3600 == hour
	}
	check := func(t *testing.T, name, url string, opts ...ratelimit.FixedWindowOption) {
		for attempt := 0; ; attempt++ {
			trace, counts, sameHour := run(t, url, opts...)
			if !sameHour && attempt == 0 {
				t.Logf("%s: the run spanned the top of an hour; again", name)
				reqs = spread("again") // fresh counters
				continue
			}
			if strings.Join(trace, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s: verdicts\n%s\nwant\n%s", name, strings.Join(trace, "\n"), strings.Join(want, "\n"))
			}
			if fmt.Sprint(sorted(counts)) != fmt.Sprint(sorted(wantCounts)) {
				t.Errorf("%s: counters %v, want %v: every descriptor counted on every request", name, sorted(counts), sorted(wantCounts))
			}
			return
		}
	}
	check(t, "one server", single.URL())
	rc := newClient(t, cluster.URL())
	if !rc.Cluster() {
		t.Fatal("the Cluster client does not report a Cluster: serve.go would not split")
	}
	check(t, "cluster", cluster.URL(), ratelimit.FixedWindowClusterSlots())
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
