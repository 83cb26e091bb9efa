package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

// A cookie as express-session sets it: signed, then URL-encoded.
func ExampleUnsign() {
	header := "theme=dark; connect.sid=" + url.QueryEscape(sessions.Sign("Q2lt+hQ/ZmFr", "new-secret"))

	raw, _ := sessions.CookieValue(header, "connect.sid")
	sid, ok := sessions.Unsign(raw, []string{"new-secret", "old-secret"})
	fmt.Println(sid, ok)

	_, ok = sessions.Unsign(raw, []string{"another-secret"})
	fmt.Println(ok)
	// Output:
	// Q2lt+hQ/ZmFr true
	// false
}

func ExampleStore_Resolve() {
	// No URL: the embedded in-memory store. A deployment passes its redis.url.
	rc, err := redisconn.New(redisconn.Options{}, nil)
	if err != nil {
		panic(err)
	}
	defer rc.Close()
	ctx := context.Background()
	// The client connects in the background; calls fail fast until it has.
	for rc.Ping(ctx) != nil {
		time.Sleep(time.Millisecond)
	}

	// What connect-redis stores for a user logged in with Passport.
	_, _ = rc.Do(ctx, "SET", []string{"sess:abc"}, `{"cookie":{"originalMaxAge":86400000,"expires":"2001-01-01T00:00:00.000Z"},"passport":{"user":42},"roles":["admin"],"tenant":"acme"}`)

	store, err := sessions.New(rc, sessions.Options{
		Secrets: []string{"keyboard cat"},
		Subject: "passport.user",
		Roles:   "roles",
		Headers: map[string]string{"X-Tenant": "tenant"},
		Cache:   &sessions.CacheOptions{TTL: 10 * time.Second},
	})
	if err != nil {
		panic(err)
	}

	sess, err := store.Resolve(ctx, "connect.sid="+url.QueryEscape(sessions.Sign("abc", "keyboard cat")))
	if err != nil {
		panic(err)
	}
	fmt.Println(sess)

	_, err = store.Resolve(ctx, "connect.sid="+url.QueryEscape(sessions.Sign("abc", "forged")))
	fmt.Println(errors.Is(err, sessions.ErrNoSession))
	// Output:
	// sessions.Session{ID:[redacted] Subject:"42" Roles:["admin"] Scopes:[] Headers:[{x-tenant acme}]}
	// true
}
