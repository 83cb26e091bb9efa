package apikeys_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/apikeys"
)

// A key is issued once, resolved on every request, and revoked by its id.
func ExampleStore_Lookup() {
	mr := miniredis.NewMiniRedis() // a real deployment passes its go-redis client
	if err := mr.Start(); err != nil {
		fmt.Println(err)
		return
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	st, err := apikeys.New(rdb, apikeys.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	key, rec, err := st.Create(ctx, apikeys.CreateParams{Owner: "team-billing", Tier: "pro", Scopes: []string{"invoices:read"}})
	if err != nil {
		fmt.Println(err)
		return
	}

	// On a request: take the candidate from the headers, then resolve it.
	headers := map[string]string{"authorization": "Bearer " + key}
	candidate, header, _ := apikeys.FromHeaders(headers, []string{"x-api-key", "authorization"})
	got, err := st.Lookup(ctx, candidate)
	fmt.Println(header, got.Owner, got.Tier, got.Scopes, err)

	_ = st.Revoke(ctx, rec.ID)
	_, err = st.Lookup(ctx, candidate)
	fmt.Println(errors.Is(err, apikeys.ErrRevoked))

	// Garbage never reaches Redis.
	_, err = st.Lookup(ctx, "eak_not-a-key")
	fmt.Println(err)
	// Output:
	// authorization team-billing pro [invoices:read] <nil>
	// true
	// malformed api key: wrong length
}
