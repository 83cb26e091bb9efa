package redisconn

import (
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"go.uber.org/zap/zaptest"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// TestClientOption checks the mapping from a URL to rueidis's options, which decides the
// topology, where credentials go and the options REPORT.md measured.
func TestClientOption(t *testing.T) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	tests := []struct {
		name     string
		url      string
		tls      *tls.Config
		check    func(t *testing.T, o rueidis.ClientOption)
		describe string
		cluster  bool
	}{
		{
			name: "single",
			url:  "redis://app:s3cret@127.0.0.1:6380/3",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if !o.ForceSingleClient || o.Sentinel.MasterSet != "" || o.Username != "app" || o.Password != "s3cret" || o.SelectDB != 3 {
					t.Errorf("options %+v", o)
				}
			},
			describe: "redis://127.0.0.1:6380/3",
		},
		{
			name: "unix",
			url:  "unix://:s3cret@/run/redis/redis.sock?db=4",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if !o.ForceSingleClient || !slices.Equal(o.InitAddress, []string{"/run/redis/redis.sock"}) || o.SelectDB != 4 {
					t.Errorf("options %+v", o)
				}
			},
			describe: "unix:///run/redis/redis.sock?db=4",
		},
		{
			name: "sentinel",
			url:  "rediss-sentinel://:s3cret@s1:26379,s2/mymaster/2?sentinel_username=sen&sentinel_password=s3cret2",
			tls:  conf,
			check: func(t *testing.T, o rueidis.ClientOption) {
				s := o.Sentinel
				if o.ForceSingleClient || s.MasterSet != "mymaster" || s.Username != "sen" || s.Password != "s3cret2" ||
					s.TLSConfig != conf || o.TLSConfig != conf || o.Password != "s3cret" || o.SelectDB != 2 ||
					s.Dialer.Timeout != time.Second || s.TopologyRefreshInterval != sentinelRefresh ||
					!slices.Equal(o.InitAddress, []string{"s1:26379", "s2:26379"}) {
					t.Errorf("options %+v", o)
				}
			},
			describe: "rediss-sentinel://s1:26379,s2:26379/mymaster/2",
		},
		{
			name: "cluster",
			url:  "redis-cluster://:s3cret@n1:7000,n2:7001",
			check: func(t *testing.T, o rueidis.ClientOption) {
				if o.ForceSingleClient || o.Sentinel.MasterSet != "" || !slices.Equal(o.InitAddress, []string{"n1:7000", "n2:7001"}) {
					t.Errorf("options %+v", o)
				}
			},
			describe: "redis-cluster://n1:7000,n2:7001",
			cluster:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := redisurl.Parse(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			opts, err := withDefaults(Options{})
			if err != nil {
				t.Fatal(err)
			}
			o := clientOption(u, opts, tt.tls, true)
			tt.check(t, o)
			// What REPORT.md settled on, for every topology.
			if !o.AlwaysPipelining || o.PipelineMultiplex != -1 || o.MaxFlushDelay != maxFlushDelay || o.DisableRetry ||
				o.DisableCache || o.CacheSizeEachConn != DefaultCacheBytes || o.Dialer.Timeout != redisurl.DefaultDialTimeout ||
				o.AlwaysRESP2 || o.ClientSetInfo == nil || len(o.ClientSetInfo) != 0 {
				t.Errorf("options %+v", o)
			}
			for n, want := range map[int]int{0: -1, 1: -1, 2: 1, 3: 2, 4: 2, 5: 3, 64: 6} {
				if got := clientOption(u, Options{ConnsPerNode: n}, nil, true).PipelineMultiplex; got != want {
					t.Errorf("ConnsPerNode %d: PipelineMultiplex %d, want %d (2^%d connections)", n, got, want, want)
				}
			}
			if o := clientOption(u, Options{CacheBytes: -1}, nil, false); !o.DisableCache || o.CacheSizeEachConn != 0 {
				t.Errorf("with caching off: DisableCache %v, CacheSizeEachConn %d", o.DisableCache, o.CacheSizeEachConn)
			}

			c := newClient(t, Options{URL: tt.url, TLS: TLSOptions{InsecureSkipVerify: u.TLS}})
			if d := c.Describe(); d != tt.describe || strings.Contains(d, "s3cret") {
				t.Errorf("Describe() = %q, want %q", d, tt.describe)
			}
			if c.Cluster() != tt.cluster || c.Embedded() {
				t.Errorf("Cluster() = %v, Embedded() = %v", c.Cluster(), c.Embedded())
			}
			if c.cache != true || c.ropt.DialCtxFn == nil {
				t.Errorf("cache %v, dialer set %v", c.cache, c.ropt.DialCtxFn != nil)
			}
		})
	}
}

// TestParseErrorsHideThePassword: New reports a bad URL through redisurl, without secrets.
func TestParseErrorsHideThePassword(t *testing.T) {
	for _, raw := range []string{
		"app:s3cret@127.0.0.1:6379",
		"redis://:s3cret@127.0.0.1:notaport/0",
		"redis://app:s3/cret@127.0.0.1:6379/0",
		"redis-sentinel://:s3cret@h/m?sentinel_password=s3cret&bogus=s3cret",
	} {
		_, err := New(Options{URL: raw}, zaptest.NewLogger(t))
		if err == nil || strings.Contains(err.Error(), "cret") {
			t.Errorf("New(%q) error = %v, want one without the password", raw, err)
		}
	}
}
