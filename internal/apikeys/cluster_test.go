package apikeys

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/redistest"
)

// startCluster starts a one-node Redis Cluster that owns every slot. One node is enough to
// prove the layout: the server still refuses a MULTI or script whose keys span slots
// (CROSSSLOT), which is what would break on a real cluster.
func startCluster(t *testing.T) (*redistest.Server, *redis.ClusterClient) {
	t.Helper()
	srv := redistest.Start(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-announce-ip", "127.0.0.1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := srv.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383"); err != nil || r != "+OK" {
		t.Fatalf("CLUSTER ADDSLOTSRANGE = %q, %v", r, err)
	}
	for {
		info, err := srv.Do(ctx, "CLUSTER", "INFO")
		if err == nil && strings.Contains(info, "cluster_state:ok") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("cluster did not become ok: %q, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{srv.Addr()}, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	return srv, rdb
}

func TestStoreCluster(t *testing.T) {
	t.Parallel()
	// One cluster for every case: a cluster takes about two seconds to report ok, and the
	// prefixes keep the cases' keys apart.
	srv, rdb := startCluster(t)
	ctx := context.Background()

	// Guards the rest: if this one-node cluster accepted a cross-slot MULTI, the contract
	// passing on it would prove nothing about the in-order writes.
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	defer c.Close()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, "probe:index", "k_AAAAAAAAAAAA")
		p.Set(ctx, "probe:id:k_AAAAAAAAAAAA", "x", 0)
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot MULTI = %v, want CROSSSLOT", err)
	}

	for _, prefix := range []string{"", "{apikey}:"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			runContract(t, rdb, Options{Prefix: prefix})

			// The layout claim itself: with a tag every key shares the record's slot, without
			// one they are spread (so a MULTI over them would fail with CROSSSLOT).
			s, _ := newRedisStore(t, rdb, Options{Prefix: prefix})
			h := Hash("eak_example")
			slot := func(key string) string {
				r, err := srv.Do(ctx, "CLUSTER", "KEYSLOT", key)
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT: %v", err)
				}
				return r
			}
			same := slot(s.recordKey(h)) == slot(s.indexKey()) && slot(s.indexKey()) == slot(s.idKey("k_AAAAAAAAAAAA"))
			if same != s.sharedSlot {
				t.Errorf("keys share a slot: %v, but sharedSlot = %v", same, s.sharedSlot)
			}
		})
	}
}
