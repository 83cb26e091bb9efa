package sessions_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

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
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		panic(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()

	// What connect-redis stores for a user logged in with Passport.
	_ = m.Set("sess:abc", `{"cookie":{"originalMaxAge":86400000,"expires":"2001-01-01T00:00:00.000Z"},"passport":{"user":42},"roles":["admin"],"tenant":"acme"}`)

	store, err := sessions.New(rdb, sessions.Options{
		Secrets: []string{"keyboard cat"},
		Subject: "passport.user",
		Roles:   "roles",
		Headers: map[string]string{"X-Tenant": "tenant"},
	})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()

	sess, err := store.Resolve(ctx, "connect.sid="+url.QueryEscape(sessions.Sign("abc", "keyboard cat")))
	if err != nil {
		panic(err)
	}
	fmt.Println(sess)

	_, err = store.Resolve(ctx, "connect.sid="+url.QueryEscape(sessions.Sign("abc", "forged")))
	fmt.Println(errors.Is(err, sessions.ErrNoSession))
	// Output:
	// sessions.Session{ID:[redacted] Subject:"42" Roles:["admin"] Headers:[{x-tenant acme}]}
	// true
}
