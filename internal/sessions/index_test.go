package sessions

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

// observer runs commands around the client under test, on connections of its own, and
// fails the test on an error. On a Cluster it sends each command to the key's master.
type observer struct {
	t    *testing.T
	addr func(key string) string
}

func (o observer) do(args ...string) any {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addr := o.addr("")
	if len(args) > 1 {
		addr = o.addr(args[1])
	}
	v, err := redistest.Command(ctx, addr, "", args...)
	if err != nil {
		o.t.Fatalf("%s %s: %v", args[0], args[1:], err)
	}
	return v
}

func (o observer) int(args ...string) int64 {
	o.t.Helper()
	n, ok := o.do(args...).(int64)
	if !ok {
		o.t.Fatalf("%v: not an integer", args)
	}
	return n
}

func (o observer) str(args ...string) string {
	o.t.Helper()
	s, _ := o.do(args...).(string)
	return s
}

// indexFixture is an Index on a fresh redis-server with its observer.
func indexFixture(t *testing.T, opts IndexOptions) (*Index, *redisconn.Client, observer) {
	t.Helper()
	srv := redistest.Start(t)
	rc := newClient(t, srv.URL())
	ix, err := NewIndex(rc, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ix, rc, observer{t: t, addr: func(string) string { return srv.Addr() }}
}

// meta returns the decoded meta JSON of sid.
func (o observer) meta(ix *Index, subject, sid string) map[string]any {
	o.t.Helper()
	raw := o.str("HGET", ix.MetaKey(subject), sid)
	if raw == "" {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		o.t.Fatalf("meta %q: %v", raw, err)
	}
	return m
}

func record(t *testing.T, ix *Index, v Visit) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ix.Record(ctx, v); err != nil {
		t.Fatalf("Record: %v", err)
	}
}

func TestIndexRecord(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{})
	o.do("SET", "sess:sid-1", `{"cookie":{},"userId":"alice"}`, "PX", "600000")
	ua := "Mozilla/5.0 \x1b[31mred\x07 " + strings.Repeat("é", 200) // control characters, 400+ bytes
	before := time.Now()
	record(t, ix, Visit{SID: "sid-1", Subject: "alice", IP: "198.51.100.7", UserAgent: ua})

	score, err := strconv.ParseFloat(o.str("ZSCORE", "extauthz:sessions:{alice}", "sid-1"), 64)
	if err != nil {
		t.Fatalf("no score for sid-1: %v", err)
	}
	if want := before.Add(10 * time.Minute).UnixMilli(); int64(score) < want-2000 || int64(score) > want+2000 {
		t.Errorf("score = %v, want the key's expiry, about %d", score, want)
	}
	m := o.meta(ix, "alice", "sid-1")
	if m["ip"] != "198.51.100.7" || m["first_seen"] == nil || m["first_seen"] != m["last_seen"] {
		t.Errorf("meta = %v", m)
	}
	got, _ := m["ua"].(string)
	if len(got) > MaxUserAgent || strings.ContainsAny(got, "\x1b\x07") || !strings.HasPrefix(got, "Mozilla/5.0  [31mred  é") || !strings.HasSuffix(got, "é") {
		t.Errorf("stored ua %q (%d bytes): want control characters blanked, at most %d bytes, cut between characters", got, len(got), MaxUserAgent)
	}
	// Both keys expire with the session; the reverse entry names the subject.
	for _, k := range []string{ix.Key("alice"), ix.MetaKey("alice"), ix.IDKey(PublicID("sid-1"))} {
		if ttl := o.int("PTTL", k); ttl < 590000 || ttl > 600000 {
			t.Errorf("PTTL %s = %d, want about 600000", k, ttl)
		}
	}
	if s := o.str("GET", ix.IDKey(PublicID("sid-1"))); s != "alice" {
		t.Errorf("id entry = %q, want alice", s)
	}

	// A second write keeps first_seen and moves last_seen.
	time.Sleep(5 * time.Millisecond)
	record(t, ix, Visit{SID: "sid-1", Subject: "alice", IP: "198.51.100.8", UserAgent: "b"})
	m2 := o.meta(ix, "alice", "sid-1")
	if m2["first_seen"] != m["first_seen"] || m2["last_seen"] == m["last_seen"] || m2["ip"] != "198.51.100.8" {
		t.Errorf("after a second visit meta = %v, first %v", m2, m)
	}

	// A session gone from Redis (logged out since it was resolved) is not recorded.
	record(t, ix, Visit{SID: "sid-gone", Subject: "alice"})
	if n := o.int("ZCARD", ix.Key("alice")); n != 1 {
		t.Errorf("ZCARD = %d after recording a session whose key is gone, want 1", n)
	}
}

func TestIndexExpiryFromCookie(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{})
	// A key without TTL (connect-redis disableTTL): the cookie's expires scores it.
	o.do("SET", "sess:no-ttl", "{}")
	exp := time.Now().Add(3 * time.Hour).Truncate(time.Millisecond)
	record(t, ix, Visit{SID: "no-ttl", Subject: "bob", CookieExpires: exp})
	if s := o.str("ZSCORE", ix.Key("bob"), "no-ttl"); s != strconv.FormatInt(exp.UnixMilli(), 10) {
		t.Errorf("score = %s, want cookie.expires %d", s, exp.UnixMilli())
	}
	// A cookie.expires earlier than the key's TTL (a touch extended the key) loses.
	o.do("SET", "sess:touched", "{}", "EX", "36000")
	record(t, ix, Visit{SID: "touched", Subject: "bob", CookieExpires: time.Now().Add(time.Hour)})
	s, _ := strconv.ParseFloat(o.str("ZSCORE", ix.Key("bob"), "touched"), 64)
	if want := time.Now().Add(10 * time.Hour).UnixMilli(); int64(s) < want-5000 {
		t.Errorf("score = %v, want the key's TTL, about %d", s, want)
	}
}

func TestIndexPrunesExpired(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{})
	past := strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10)
	o.do("ZADD", ix.Key("carol"), past, "old")
	o.do("HSET", ix.MetaKey("carol"), "old", `{"first_seen":1,"last_seen":1,"ip":"","ua":""}`)
	o.do("SET", "sess:new", "{}", "EX", "60")
	record(t, ix, Visit{SID: "new", Subject: "carol"})
	if v := o.do("ZSCORE", ix.Key("carol"), "old"); v != nil {
		t.Errorf("expired entry still scored %v", v)
	}
	if v := o.do("HGET", ix.MetaKey("carol"), "old"); v != nil {
		t.Errorf("expired entry's meta still there: %v", v)
	}
	// Reading prunes too.
	o.do("ZADD", ix.Key("carol"), past, "old2")
	entries, err := ix.List(context.Background(), "carol")
	if err != nil || len(entries) != 1 || entries[0].ID != PublicID("new") {
		t.Fatalf("List = %+v, %v; want only the live session", entries, err)
	}
	if v := o.do("ZSCORE", ix.Key("carol"), "old2"); v != nil {
		t.Errorf("List left the expired entry: %v", v)
	}
}

func TestIndexCap(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{MaxPerUser: 3})
	for i := 1; i <= 5; i++ {
		sid := "s" + strconv.Itoa(i)
		// Later sessions expire later, except s1, which outlives them all.
		ttl := strconv.Itoa(100 * i)
		if i == 1 {
			ttl = "10000"
		}
		o.do("SET", "sess:"+sid, "{}", "EX", ttl)
		record(t, ix, Visit{SID: sid, Subject: "dave"})
	}
	got := o.do("ZRANGE", ix.Key("dave"), "0", "-1")
	want := []any{"s4", "s5", "s1"} // s2 and s3 expire soonest
	if !equalAny(got, want) {
		t.Errorf("index = %v, want %v", got, want)
	}
	if n := o.int("HLEN", ix.MetaKey("dave")); n != 3 {
		t.Errorf("HLEN meta = %d, want 3", n)
	}
	// The keys live as long as the longest session, s1.
	if ttl := o.int("PTTL", ix.Key("dave")); ttl < 9_000_000 {
		t.Errorf("PTTL = %d, want about 10000 s", ttl)
	}
}

func equalAny(got any, want []any) bool {
	g, ok := got.([]any)
	if !ok || len(g) != len(want) {
		return false
	}
	for i := range g {
		if g[i] != want[i] {
			return false
		}
	}
	return true
}

func TestIndexListAndRevoke(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{})
	ctx := context.Background()
	sids := []string{"phone", "laptop", "tablet"}
	for i, sid := range sids {
		o.do("SET", "sess:"+sid, `{"userId":"erin"}`, "EX", "600")
		record(t, ix, Visit{SID: sid, Subject: "erin", IP: "192.0.2." + strconv.Itoa(i+1), UserAgent: sid + "-agent"})
		time.Sleep(2 * time.Millisecond) // distinct last_seen, for the order
	}
	o.do("SET", "sess:other", `{"userId":"frank"}`, "EX", "600")
	record(t, ix, Visit{SID: "other", Subject: "frank"})

	entries, err := ix.List(ctx, "erin")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("List = %d entries, want 3", len(entries))
	}
	for i, e := range entries {
		sid := sids[2-i] // most recently seen first
		if e.ID != PublicID(sid) || e.UserAgent != sid+"-agent" || e.IP != "192.0.2."+strconv.Itoa(3-i) || e.FirstSeen.IsZero() || e.Expires.Before(time.Now()) {
			t.Errorf("entry %d = %+v, want %s's", i, e, sid)
		}
		b, _ := json.Marshal(e)
		if strings.Contains(string(b), `"`+sid+`"`) || strings.Contains(string(b), `"sid"`) {
			t.Errorf("entry JSON %s shows the sid", b)
		}
	}

	// A session the app destroyed itself drops out of the list, and out of the index.
	o.do("DEL", "sess:tablet")
	entries, err = ix.List(ctx, "erin")
	if err != nil || len(entries) != 2 {
		t.Fatalf("List after the app's logout = %+v, %v; want 2", entries, err)
	}
	if v := o.do("ZSCORE", ix.Key("erin"), "tablet"); v != nil {
		t.Errorf("the destroyed session is still indexed")
	}

	// An except that names no session revokes nothing.
	if n, err := ix.Revoke(ctx, "erin", "0123456789abcdef"); !errors.Is(err, ErrUnknownID) || n != 0 {
		t.Fatalf("Revoke with an unknown except = %d, %v; want ErrUnknownID", n, err)
	}
	if o.int("EXISTS", "sess:phone") != 1 {
		t.Fatal("an unknown except revoked sessions")
	}

	// Revoke all but the phone: the laptop's key is gone, the phone and frank's stay.
	n, err := ix.Revoke(ctx, "erin", PublicID("phone"))
	if err != nil || n != 1 {
		t.Fatalf("Revoke except phone = %d, %v; want 1", n, err)
	}
	for key, want := range map[string]int64{"sess:phone": 1, "sess:laptop": 0, "sess:other": 1, ix.IDKey(PublicID("laptop")): 0, ix.IDKey(PublicID("phone")): 1} {
		if got := o.int("EXISTS", key); got != want {
			t.Errorf("EXISTS %s = %d, want %d", key, got, want)
		}
	}
	if got := o.do("ZRANGE", ix.Key("erin"), "0", "-1"); !equalAny(got, []any{"phone"}) {
		t.Errorf("index after revoke = %v, want [phone]", got)
	}

	// By id alone: the reverse entry finds the subject.
	subject, err := ix.RevokeID(ctx, PublicID("phone"), "")
	if err != nil || subject != "erin" {
		t.Fatalf("RevokeID = %q, %v", subject, err)
	}
	if o.int("EXISTS", "sess:phone") != 0 || o.int("EXISTS", ix.Key("erin")) != 0 || o.int("EXISTS", ix.MetaKey("erin")) != 0 {
		t.Error("RevokeID left the session or an empty index behind")
	}
	for _, id := range []string{PublicID("phone"), "zz", "s:phone.sig", PublicID("nobody")} {
		if _, err := ix.RevokeID(ctx, id, ""); !errors.Is(err, ErrUnknownID) {
			t.Errorf("RevokeID(%q) = %v, want ErrUnknownID", id, err)
		}
	}
	// With the subject given, no reverse entry is needed.
	o.do("DEL", ix.IDKey(PublicID("other")))
	if _, err := ix.RevokeID(ctx, PublicID("other"), "frank"); err != nil || o.int("EXISTS", "sess:other") != 0 {
		t.Errorf("RevokeID with the subject = %v", err)
	}
}

// TestIndexKeptByTheApp lists and revokes an index written by hand in the documented layout,
// as an app that keeps it itself would: only the sorted set, or with meta too.
func TestIndexKeptByTheApp(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{Prefix: "myapp:idx:", SessionPrefix: "myapp:sess:"})
	exp := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	o.do("SET", "myapp:sess:a", "{}", "EX", "3600")
	o.do("SET", "myapp:sess:b", "{}", "EX", "3600")
	o.do("ZADD", "myapp:idx:{u%7B1%7D}", exp, "a", exp, "b")
	o.do("HSET", "myapp:idx:{u%7B1%7D}:meta", "a", `{"first_seen":1700000000000,"last_seen":1700000001000,"ip":"203.0.113.9","ua":"app"}`)
	entries, err := ix.List(context.Background(), "u{1}")
	if err != nil || len(entries) != 2 {
		t.Fatalf("List = %+v, %v", entries, err)
	}
	if e := entries[0]; e.ID != PublicID("a") || e.IP != "203.0.113.9" || e.LastSeen != time.UnixMilli(1700000001000) {
		t.Errorf("entry with meta = %+v", e)
	}
	if e := entries[1]; e.ID != PublicID("b") || !e.FirstSeen.IsZero() || e.Expires.IsZero() {
		t.Errorf("entry without meta = %+v", e)
	}
	if n, err := ix.Revoke(context.Background(), "u{1}", ""); err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if o.int("EXISTS", "myapp:sess:a", "myapp:sess:b") != 0 {
		t.Error("Revoke left sessions")
	}
}

func TestEscapeSubject(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice", "alice"},
		{"a{b}c", "a%7Bb%7Dc"},
		{"}{", "%7D%7B"},
		{"100%", "100%25"},
		{"%7B", "%257B"}, // not the same as "{"
		{"user:42_x", "user:42_x"},
	} {
		if got := EscapeSubject(tt.in); got != tt.want {
			t.Errorf("EscapeSubject(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	ix, err := NewIndex(&redisconn.Client{}, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k := ix.Key("x}{y"); k != "extauthz:sessions:{x%7D%7By}" || ix.MetaKey("x}{y") != k+":meta" {
		t.Errorf("Key = %q", k)
	}
	if PublicID("abc") != "ba7816bf8f01cfea" || !ValidPublicID(PublicID("anything")) || ValidPublicID("BA7816BF8F01CFEA") {
		t.Errorf("PublicID/ValidPublicID disagree with SHA-256's first 16 hex digits")
	}
	for _, bad := range []IndexOptions{{Prefix: "a{"}, {MaxPerUser: -1}, {MaxPerUser: MaxIndexPerUser + 1}} {
		if _, err := NewIndex(&redisconn.Client{}, bad); err == nil {
			t.Errorf("NewIndex(%+v) accepted", bad)
		}
	}
}

// TestIndexCluster keeps, lists and revokes an index on a real Cluster, for a subject whose
// braces would move a naive key's slot: the script's two keys must share one slot, and the
// session keys, in other slots, are deleted one call each.
func TestIndexCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a six-node cluster")
	}
	c := redistest.StartCluster(t)
	rc := newClient(t, c.URL())
	ix, err := NewIndex(rc, IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := observer{t: t, addr: func(key string) string {
		if key == "" {
			return c.Addrs()[0]
		}
		return c.MasterFor(key)
	}}
	subject := "ev}il{user"
	if a, b := o.int("CLUSTER", "KEYSLOT", ix.Key(subject)), o.int("CLUSTER", "KEYSLOT", ix.MetaKey(subject)); a != b {
		t.Fatalf("index keys in slots %d and %d", a, b)
	}
	slots := map[int64]bool{}
	for i := 0; i < 6; i++ {
		sid := "cluster-sid-" + strconv.Itoa(i)
		o.do("SET", "sess:"+sid, "{}", "EX", "600")
		slots[o.int("CLUSTER", "KEYSLOT", "sess:"+sid)] = true
		record(t, ix, Visit{SID: sid, Subject: subject, UserAgent: "ua"})
	}
	if len(slots) < 2 {
		t.Fatalf("the sessions share one slot; the test needs several")
	}
	ctx := context.Background()
	entries, err := ix.List(ctx, subject)
	if err != nil || len(entries) != 6 {
		t.Fatalf("List = %d entries, %v; want 6", len(entries), err)
	}
	n, err := ix.Revoke(ctx, subject, entries[0].ID)
	if err != nil || n != 5 {
		t.Fatalf("Revoke = %d, %v; want 5", n, err)
	}
	left := 0
	for i := 0; i < 6; i++ {
		left += int(o.int("EXISTS", "sess:cluster-sid-"+strconv.Itoa(i)))
	}
	if left != 1 {
		t.Errorf("%d sessions left, want 1", left)
	}
	if _, err := ix.RevokeID(ctx, entries[0].ID, ""); err != nil {
		t.Errorf("RevokeID: %v", err)
	}
	if o.int("EXISTS", ix.Key(subject)) != 0 {
		t.Error("index left after every session was revoked")
	}
}

// TestIndexEmbedded runs the index on the embedded store (`make run` without a Redis), whose
// Lua (cjson, TIME, PEXPIREAT) must take the same scripts.
func TestIndexEmbedded(t *testing.T) {
	rc := newClient(t, "")
	ix, err := NewIndex(rc, IndexOptions{MaxPerUser: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, sid := range []string{"e1", "e2", "e3"} {
		if _, err := rc.Do(ctx, "SET", []string{"sess:" + sid}, "{}", "EX", strconv.Itoa(100*(i+1))); err != nil {
			t.Fatal(err)
		}
		if err := ix.Record(ctx, Visit{SID: sid, Subject: "em{b}", IP: "192.0.2.9", UserAgent: "ua"}); err != nil {
			t.Fatalf("Record: %v", err)
		}
	}
	entries, err := ix.List(ctx, "em{b}")
	if err != nil || len(entries) != 2 || entries[0].UserAgent != "ua" || entries[0].FirstSeen.IsZero() {
		t.Fatalf("List = %+v, %v; want e2 and e3 (capped at 2)", entries, err)
	}
	if n, err := ix.Revoke(ctx, "em{b}", ""); err != nil || n != 2 {
		t.Fatalf("Revoke = %d, %v", n, err)
	}
	if _, err := rc.Get(ctx, "sess:e3"); !errors.Is(err, redisconn.ErrNil) {
		t.Errorf("GET of a revoked session = %v, want nil", err)
	}
}

// TestIndexChecksOwner: with IndexOptions.Subject, a session id the app handed to another user
// without regenerating it is not the old user's to list or revoke.
func TestIndexChecksOwner(t *testing.T) {
	ix, _, o := indexFixture(t, IndexOptions{Subject: "passport.user"})
	ctx := context.Background()
	o.do("SET", "sess:reused", `{"passport":{"user":"alice"}}`, "EX", "600")
	o.do("SET", "sess:mine", `{"passport":{"user":42}}`, "EX", "600")
	record(t, ix, Visit{SID: "reused", Subject: "alice"})
	record(t, ix, Visit{SID: "reused2", Subject: "alice"}) // no key: not recorded
	record(t, ix, Visit{SID: "mine", Subject: "42"})
	// The app puts bob in alice's session.
	o.do("SET", "sess:reused", `{"passport":{"user":"bob"}}`, "EX", "600")

	if n, err := ix.Revoke(ctx, "alice", ""); err != nil || n != 0 {
		t.Fatalf("Revoke(alice) = %d, %v; want 0: the session is bob's now", n, err)
	}
	if o.int("EXISTS", "sess:reused") != 1 {
		t.Fatal("revoking alice deleted bob's session")
	}
	if o.int("EXISTS", ix.Key("alice")) != 0 {
		t.Error("the entry stayed in alice's index")
	}
	record(t, ix, Visit{SID: "reused", Subject: "alice"}) // a stale write
	if entries, err := ix.List(ctx, "alice"); err != nil || len(entries) != 0 {
		t.Errorf("List(alice) = %+v, %v; want none", entries, err)
	}
	record(t, ix, Visit{SID: "reused", Subject: "alice"})
	if _, err := ix.RevokeID(ctx, PublicID("reused"), "alice"); !errors.Is(err, ErrUnknownID) || o.int("EXISTS", "sess:reused") != 1 {
		t.Errorf("RevokeID of bob's session under alice = %v", err)
	}
	// A number subject is matched as the Express app renders it.
	if entries, err := ix.List(ctx, "42"); err != nil || len(entries) != 1 {
		t.Fatalf("List(42) = %+v, %v", entries, err)
	}
	if n, err := ix.Revoke(ctx, "42", ""); err != nil || n != 1 || o.int("EXISTS", "sess:mine") != 0 {
		t.Errorf("Revoke(42) = %d, %v", n, err)
	}

	// A path the sessions do not have (a config mistake) proves nothing: the session is still
	// the index's to revoke, not quietly skipped.
	wrong, err := NewIndex(ix.rdb, IndexOptions{Subject: "userId"})
	if err != nil {
		t.Fatal(err)
	}
	o.do("SET", "sess:carol", `{"passport":{"user":"carol"}}`, "EX", "600")
	record(t, wrong, Visit{SID: "carol", Subject: "carol"})
	if n, err := wrong.Revoke(ctx, "carol", ""); err != nil || n != 1 || o.int("EXISTS", "sess:carol") != 0 {
		t.Errorf("Revoke with a path the session lacks = %d, %v; want the session revoked", n, err)
	}
}
