package redisconn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// The least-privilege ACL user that k8s/overlays/shared-redis/README.md recommends can do
// everything the sidecar does: connect (HELLO 3), run the counting scripts, read and touch
// sessions, read key records, and cache them with client tracking (CLIENT TRACKING and
// CLIENT CACHING are in @connection; a tracked read is CLIENT CACHING YES plus MULTI, PTTL,
// the read and EXEC, hence @transaction). A user without @transaction cannot cache but still
// reads.
func TestLeastPrivilegeACLUser(t *testing.T) {
	const aclRule = "on >pw ~rls:* ~rl:* ~apikey:* ~sess:* +@read +@write +@scripting +@transaction +@connection"
	srv := redistest.Start(t)
	ctx := context.Background()
	if reply, err := srv.Do(ctx, append([]string{"ACL", "SETUSER", "extauthz"}, strings.Fields(aclRule)...)...); err != nil || reply != "+OK" {
		t.Fatalf("ACL SETUSER: %q %v", reply, err)
	}
	if reply, err := srv.Do(ctx, "ACL", "SETUSER", "nocache", "on", ">pw", "~*", "+@read", "+@write", "+@scripting", "+@connection"); err != nil || reply != "+OK" {
		t.Fatalf("ACL SETUSER nocache: %q %v", reply, err)
	}
	if _, err := srv.Do(ctx, "SET", "sess:abc", `{"userId":"u1"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Do(ctx, "HSET", "apikey:h1", "id", "k1"); err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr()

	c := readyClient(t, Options{URL: "redis://extauthz:pw@" + addr + "/0", Timeout: 5 * time.Second})
	const src = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
	if v, err := c.Eval(ctx, sha1Hex(src), src, []string{"rl:{p:u1}"}, 2); err != nil || v != int64(2) {
		t.Fatalf("script as the ACL user: %v %v", v, err)
	}
	if err := c.Expire(ctx, "sess:abc", time.Hour); err != nil {
		t.Fatalf("touch: %v", err)
	}
	for i := 0; i < 2; i++ {
		v, hit, err := c.GetCached(ctx, "sess:abc", time.Minute)
		if err != nil || v != `{"userId":"u1"}` || hit != (i == 1) {
			t.Fatalf("cached session read %d: %q hit=%v %v", i, v, hit, err)
		}
		m, _, err := c.HGetAllCached(ctx, "apikey:h1", time.Minute)
		if err != nil || m["id"] != "k1" {
			t.Fatalf("cached key read %d: %v %v", i, m, err)
		}
	}
	if _, err := c.Get(ctx, "other:x"); err == nil || !HasErrorPrefix(err, "NOPERM") {
		t.Errorf("a key outside the prefixes: %v, want NOPERM", err)
	}

	// Without @transaction the tracked read is refused: the README's rule is what makes the
	// cache work.
	nc := readyClient(t, Options{URL: "redis://nocache:pw@" + addr + "/0", Timeout: 5 * time.Second})
	if _, _, err := nc.GetCached(ctx, "sess:abc", time.Minute); err == nil {
		t.Error("a user without @transaction could cache: the README's rule asks for more than needed")
	}
	if v, err := nc.Get(ctx, "sess:abc"); err != nil || v == "" {
		t.Errorf("plain read without @transaction: %q %v", v, err)
	}
}
