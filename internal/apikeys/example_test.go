package apikeys_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// A key is issued once, resolved on every request, and revoked by its id.
func ExampleStore_Lookup() {
	// No URL: the embedded in-memory store. A deployment passes its redis.url.
	rc, err := redisconn.New(redisconn.Options{}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rc.Close()
	ctx := context.Background()
	// The client connects in the background; calls fail fast until it has.
	for rc.Ping(ctx) != nil {
		time.Sleep(time.Millisecond)
	}

	st, err := apikeys.New(rc, apikeys.Options{Cache: &apikeys.CacheOptions{TTL: 10 * time.Second}})
	if err != nil {
		fmt.Println(err)
		return
	}
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
