package apikeys

import (
	"fmt"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// On Redis Cluster (three masters) the contract holds with the default prefix, whose keys
// spread over slots and are written one by one, and with a {hash tag}, whose keys share a slot
// and are written in one MULTI; with and without the client-side cache.
func TestStoreCluster(t *testing.T) {
	t.Parallel()
	// One cluster for every case: a cluster takes seconds to start, and the prefixes keep the
	// cases' keys apart.
	c := redistest.StartCluster(t)
	rdb := newClient(t, c.URL())
	anyNode := c.Node(c.Masters()[0])

	for i, prefix := range []string{"", "{apikey}:", "plain:", "{t}:"} {
		cached := i >= 2
		t.Run(fmt.Sprintf("prefix=%s/cached=%v", prefix, cached), func(t *testing.T) {
			runContract(t, rdb, contractOptions(prefix, cached))

			// The layout claim itself: with a tag every key shares the record's slot, without
			// one they are spread (so a MULTI over them would fail with CROSSSLOT, which is why
			// Create writes them one by one).
			s, _ := newRedisStore(t, rdb, Options{Prefix: prefix})
			h := Hash("eak_example")
			slot := func(key string) string { return serverDo(t, anyNode, "CLUSTER", "KEYSLOT", key) }
			same := slot(s.recordKey(h)) == slot(s.indexKey()) && slot(s.indexKey()) == slot(s.idKey("k_AAAAAAAAAAAA"))
			if same != s.sharedSlot {
				t.Errorf("keys share a slot: %v, but sharedSlot = %v", same, s.sharedSlot)
			}
		})
	}

	// A revoke by another process (its own client) reaches a cached Lookup here too.
	t.Run("revoke through the cache", func(t *testing.T) {
		s, _ := newRedisStore(t, rdb, Options{Prefix: "rc:", Cache: &CacheOptions{TTL: time.Minute}})
		other, _ := newRedisStore(t, newClient(t, c.URL()), Options{Prefix: "rc:"})
		key, rec, err := other.Create(t.Context(), CreateParams{Owner: "o"})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if _, err := s.Lookup(t.Context(), key); err != nil {
				t.Fatal(err)
			}
		}
		if err := other.Revoke(t.Context(), rec.ID); err != nil {
			t.Fatal(err)
		}
		waitForLookup(t, s, key, ErrRevoked)
	})
}

// On Sentinel the client follows the master the sentinels name; the contract holds there too.
func TestStoreSentinel(t *testing.T) {
	t.Parallel()
	st := redistest.StartSentinel(t)
	rdb := newClient(t, st.URL(0))
	for _, cached := range []bool{false, true} {
		t.Run(fmt.Sprintf("cached=%v", cached), func(t *testing.T) {
			runContract(t, rdb, contractOptions(fmt.Sprintf("s%v:", cached), cached))
		})
	}
}
