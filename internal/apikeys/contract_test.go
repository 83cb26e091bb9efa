package apikeys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// contractOptions are the Options of one contract run: the prefix, and whether Lookup reads
// through the client-side cache. With the cache, the Lookup right after this Store's own
// Revoke proves that the revoke reached the cached record before Revoke returned: Redis
// sends the invalidation on the connection that wrote, ahead of the script's reply.
func contractOptions(prefix string, cached bool) Options {
	o := Options{Prefix: prefix}
	if cached {
		o.Cache = &CacheOptions{TTL: time.Minute}
	}
	return o
}

// runContract is the behaviour every topology must show. rdb must hold no other keys under
// opts.Prefix.
func runContract(t *testing.T, rdb *redisconn.Client, opts Options) {
	ctx := context.Background()
	s, clk := newRedisStore(t, rdb, opts)

	var issued []string
	create := func(t *testing.T, p CreateParams) (string, Record) {
		t.Helper()
		key, rec, err := s.Create(ctx, p)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		issued = append(issued, key)
		return key, rec
	}

	t.Run("create then lookup", func(t *testing.T) {
		key, rec, err := s.Create(ctx, CreateParams{
			Name: "billing service", Owner: "team-billing", Tier: "pro",
			Scopes: []string{"invoices:read", "invoices:write"}, TTL: 90 * 24 * time.Hour,
		})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		issued = append(issued, key)
		if !s.Valid(key) {
			t.Fatalf("created key is not Valid: %v", s.Check(key))
		}
		want := Record{
			ID: rec.ID, Name: "billing service", Owner: "team-billing", Tier: "pro",
			Scopes:  []string{"invoices:read", "invoices:write"},
			Created: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC),
			Expires: time.Date(2030, 4, 2, 3, 4, 6, 0, time.UTC),
		}
		if !validID(rec.ID) {
			t.Errorf("id %q is not k_ plus 12 base62 characters", rec.ID)
		}
		if !reflect.DeepEqual(rec, want) {
			t.Errorf("Create record = %+v, want %+v", rec, want)
		}
		got, err := s.Lookup(ctx, key)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Lookup = %+v, want %+v", got, want)
		}
		if st := got.State(clk.now()); st != StateActive {
			t.Errorf("State = %q, want active", st)
		}
	})

	t.Run("minimal record", func(t *testing.T) {
		key, rec := create(t, CreateParams{Owner: "alice"})
		got, err := s.Lookup(ctx, key)
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		if got.Scopes != nil || !got.Expires.IsZero() || got.Disabled || !reflect.DeepEqual(got, rec) {
			t.Errorf("Lookup = %+v, want %+v with no scopes and no expiry", got, rec)
		}
	})

	t.Run("unknown key", func(t *testing.T) {
		key, err := s.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lookup(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(never issued) = %v, want ErrNotFound", err)
		}
		if _, err := s.Lookup(ctx, "eak_nope"); !errors.Is(err, ErrMalformed) {
			t.Errorf("Lookup(malformed) = %v, want ErrMalformed", err)
		}
	})

	t.Run("revoke", func(t *testing.T) {
		key, rec := create(t, CreateParams{Owner: "bob"})
		// Looked up first, so that with the cache on the revoke has a cached record to void.
		if _, err := s.Lookup(ctx, key); err != nil {
			t.Fatalf("Lookup before revoke: %v", err)
		}
		if err := s.Revoke(ctx, rec.ID); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		got, err := s.Lookup(ctx, key)
		if !errors.Is(err, ErrRevoked) {
			t.Fatalf("Lookup(revoked) = %v, want ErrRevoked", err)
		}
		if got.ID != rec.ID || !got.Disabled || got.State(clk.now()) != StateRevoked {
			t.Errorf("Lookup(revoked) record = %+v, want %s disabled", got, rec.ID)
		}
		if err := s.Revoke(ctx, rec.ID); err != nil {
			t.Errorf("second Revoke = %v, want nil (idempotent)", err)
		}
		if err := s.Revoke(ctx, "k_000000000000"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Revoke(unknown id) = %v, want ErrNotFound", err)
		}
	})

	t.Run("expiry", func(t *testing.T) {
		key, rec := create(t, CreateParams{Owner: "carol", TTL: time.Hour})
		if _, err := s.Lookup(ctx, key); err != nil {
			t.Fatalf("Lookup before expiry: %v", err)
		}
		defer clk.set(t0)
		clk.set(rec.Expires.Add(-time.Second))
		if _, err := s.Lookup(ctx, key); err != nil {
			t.Errorf("Lookup a second before expiry = %v, want nil", err)
		}
		clk.set(rec.Expires)
		got, err := s.Lookup(ctx, key)
		if !errors.Is(err, ErrExpired) {
			t.Fatalf("Lookup at expiry = %v, want ErrExpired", err)
		}
		if got.ID != rec.ID {
			t.Errorf("Lookup(expired) record id = %q, want %q", got.ID, rec.ID)
		}
	})

	t.Run("revoked wins over expired", func(t *testing.T) {
		key, rec := create(t, CreateParams{Owner: "dave", TTL: time.Second})
		if err := s.Revoke(ctx, rec.ID); err != nil {
			t.Fatal(err)
		}
		defer clk.set(t0)
		clk.set(t0.Add(time.Hour))
		if _, err := s.Lookup(ctx, key); !errors.Is(err, ErrRevoked) {
			t.Errorf("Lookup(revoked and expired) = %v, want ErrRevoked", err)
		}
	})

	t.Run("list", func(t *testing.T) {
		// Two more keys in a later second, so that the order by Created shows.
		clk.set(t0.Add(10 * time.Second))
		defer clk.set(t0)
		create(t, CreateParams{Owner: "erin"})
		create(t, CreateParams{Owner: "frank"})
		recs, err := s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if got, want := len(recs), len(issued); got != want {
			t.Fatalf("List returned %d records, want %d", got, want)
		}
		for i := 1; i < len(recs); i++ {
			a, b := recs[i-1], recs[i]
			if a.Created.After(b.Created) || (a.Created.Equal(b.Created) && a.ID >= b.ID) {
				t.Errorf("List not sorted by Created then ID at %d: %s %s, %s %s", i, a.Created, a.ID, b.Created, b.ID)
			}
		}
		if last := recs[len(recs)-1]; !last.Created.Equal(t0.Add(10 * time.Second).Truncate(time.Second)) {
			t.Errorf("last record created %s, want the later second", last.Created)
		}
		states := map[string]int{}
		for _, r := range recs {
			states[r.State(t0.Add(2*time.Hour))]++
		}
		// At t0+2h: bob and dave revoked, carol expired, the 90-day key and the rest active.
		if want := map[string]int{StateRevoked: 2, StateExpired: 1, StateActive: 4}; !reflect.DeepEqual(states, want) {
			t.Errorf("states = %v, want %v", states, want)
		}
		for _, key := range issued {
			rec, err := s.Lookup(ctx, key)
			if err != nil && !errors.Is(err, ErrRevoked) {
				t.Fatalf("Lookup: %v", err)
			}
			found := false
			for _, r := range recs {
				found = found || reflect.DeepEqual(r, rec)
			}
			if !found {
				t.Errorf("List lacks %+v", rec)
			}
		}
	})

	t.Run("credits", func(t *testing.T) {
		key, rec := create(t, CreateParams{Owner: "metered", Credits: &CreditParams{Initial: 500, Refill: 100, Every: "1d"}})
		want := Credits{Enabled: true, Initial: 500, Refill: 100, Every: "1d", Key: s.prefix + "credits:" + rec.ID}
		if rec.Credits != want {
			t.Errorf("Create credits = %+v, want %+v", rec.Credits, want)
		}
		got, err := s.Lookup(ctx, key)
		if err != nil || got.Credits != want {
			t.Fatalf("Lookup credits = %+v, %v; want %+v", got.Credits, err, want)
		}
		if l := got.Credits.Limit(); l.Requests != 100 || l.Refill != ratelimit.RefillDaily || l.Algorithm != ratelimit.AlgorithmCredits {
			t.Errorf("Limit() = %+v, want 100 refilled daily", l)
		}
		b, err := s.Balance(ctx, got)
		if err != nil || b.Remaining != 500 || b.NextRefill <= 0 || b.NextRefill > 24*time.Hour {
			t.Fatalf("Balance = %+v, %v; want 500, refill within a day", b, err)
		}
		if _, b, err = s.AddCredits(ctx, rec.ID, 7); err != nil || b.Remaining != 507 {
			t.Fatalf("AddCredits = %+v, %v; want 507", b, err)
		}
		if _, b, err = s.SetCredits(ctx, rec.ID, 3); err != nil || b.Remaining != 3 {
			t.Fatalf("SetCredits = %+v, %v; want 3", b, err)
		}
		// A key without credits has none of the fields and no balance.
		_, plain := create(t, CreateParams{Owner: "unmetered"})
		if plain.Credits != (Credits{}) {
			t.Errorf("a key without credits: %+v", plain.Credits)
		}
		if _, _, err := s.SetCredits(ctx, plain.ID, 1); !errors.Is(err, ErrNoCredits) {
			t.Errorf("SetCredits on a key without credits: %v, want ErrNoCredits", err)
		}
		if _, _, err := s.AddCredits(ctx, "k_AAAAAAAAAAAA", 1); !errors.Is(err, ErrNotFound) {
			t.Errorf("AddCredits on an unknown id: %v, want ErrNotFound", err)
		}
		if dump := dumpRedis(t, rdb); strings.Contains(dump, "credits:"+plain.ID) {
			t.Errorf("a key without credits has a balance")
		}
		// Revoke leaves the balance, so that List still shows what was left.
		if err := s.Revoke(ctx, rec.ID); err != nil {
			t.Fatal(err)
		}
		listed, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range listed {
			if r.ID == rec.ID && (r.Credits != want || !r.Disabled) {
				t.Errorf("List shows %+v, want revoked with credits %+v", r, want)
			}
		}
		bals, err := s.Balances(ctx, listed)
		if err != nil {
			t.Fatal(err)
		}
		if b, ok := bals[rec.ID]; !ok || b.Remaining != 3 {
			t.Errorf("Balances[%s] = %+v, %v; want 3", rec.ID, b, ok)
		}
		if _, ok := bals[plain.ID]; ok {
			t.Errorf("Balances has a key without credits")
		}
	})

	t.Run("bad credits", func(t *testing.T) {
		for _, p := range []CreditParams{{Initial: -1}, {Initial: 1, Refill: 5}, {Initial: 1, Every: "1d"},
			{Initial: 1, Refill: 5, Every: "1w"}, {Initial: 1 << 52}} {
			if _, _, err := s.Create(ctx, CreateParams{Owner: "o", Credits: &p}); err == nil {
				t.Errorf("Create with credits %+v succeeded", p)
			}
		}
	})

	t.Run("raw key never stored", func(t *testing.T) {
		dump := dumpRedis(t, rdb)
		for _, key := range issued {
			body := key[len(s.tokenPrefix) : len(s.tokenPrefix)+BodyLen]
			if strings.Contains(dump, body) {
				t.Errorf("the body of an issued key appears in Redis")
			}
			if !strings.Contains(dump, Hash(key)) {
				t.Errorf("the hash of an issued key is missing from Redis")
			}
		}
	})
}

// dumpRedis returns every key and value in rdb as one string, for searching. On a cluster it
// visits every master.
func dumpRedis(t *testing.T, rdb *redisconn.Client) string {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var b strings.Builder
	dumpNode := func(ctx context.Context, d redisconn.Doer) error {
		reply, err := d.Do(ctx, "KEYS", nil, "*")
		if err != nil {
			return err
		}
		keys, err := stringList(reply)
		if err != nil {
			return err
		}
		for _, k := range keys {
			typ, err := d.Do(ctx, "TYPE", []string{k})
			if err != nil {
				return err
			}
			var v any
			switch typ {
			case "hash":
				v, err = d.Do(ctx, "HGETALL", []string{k})
			case "string":
				v, err = d.Do(ctx, "GET", []string{k})
			case "set":
				v, err = d.Do(ctx, "SMEMBERS", []string{k})
			default:
				t.Errorf("unexpected %v key %q", typ, k)
			}
			if err != nil {
				return err
			}
			mu.Lock()
			b.WriteString(k + " => ")
			b.WriteString(strings.TrimSpace(strings.ReplaceAll(fmtValue(v), "\n", " ")))
			b.WriteString("\n")
			mu.Unlock()
		}
		return nil
	}
	if err := rdb.ForEachMaster(ctx, dumpNode); err != nil {
		t.Fatalf("dump redis: %v", err)
	}
	return b.String()
}

// fmtValue renders a reply: a string as is, an array (HGETALL's pairs, SMEMBERS) as its
// elements separated by spaces.
func fmtValue(v any) string {
	var b bytes.Buffer
	switch v := v.(type) {
	case string:
		b.WriteString(v)
	case []any:
		for _, e := range v {
			fmt.Fprintf(&b, "%v ", e)
		}
	case map[string]any:
		for k, e := range v {
			fmt.Fprintf(&b, "%s %v ", k, e)
		}
	}
	return b.String()
}
