package adminapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisconn/redisconntest"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/internal/sessions"
)

// fixture is the API over a real Index on a fresh redis-server, with sessions for alice.
type fixture struct {
	t   *testing.T
	srv *redistest.Server
	ix  *sessions.Index
	h   http.Handler
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := redistest.Start(t)
	rc := redisconntest.Ready(t, redisconn.Options{URL: srv.URL()})
	ix, err := sessions.NewIndex(rc, sessions.IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, srv: srv, ix: ix, h: New(Options{Sessions: ix, Logger: zap.NewNop()})}
}

func (f *fixture) do(args ...string) any {
	f.t.Helper()
	v, err := redistest.Command(context.Background(), f.srv.Addr(), "", args...)
	if err != nil {
		f.t.Fatalf("%v: %v", args, err)
	}
	return v
}

// login stores and indexes sessions of user; it returns their sids.
func (f *fixture) login(user string, n int) []string {
	f.t.Helper()
	var sids []string
	for i := 0; i < n; i++ {
		sid := user + "-secret-sid-" + strconv.Itoa(i)
		f.do("SET", "sess:"+sid, `{"userId":"`+user+`"}`, "EX", "600")
		if err := f.ix.Record(context.Background(), sessions.Visit{SID: sid, Subject: user, IP: "192.0.2.1", UserAgent: "device " + strconv.Itoa(i)}); err != nil {
			f.t.Fatal(err)
		}
		sids = append(sids, sid)
	}
	return sids
}

func (f *fixture) exists(sid string) bool {
	return f.do("EXISTS", "sess:"+sid) == int64(1)
}

func serve(t *testing.T, h http.Handler, method, target, ctype, body string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, target, w.Header().Get("Content-Type"))
	}
	return w.Code, w.Body.String()
}

func TestListAndRevoke(t *testing.T) {
	f := newFixture(t)
	sids := f.login("alice", 3)
	bob := f.login("bob", 1)

	code, body := serve(t, f.h, "GET", "/v1/sessions?user=alice", "", "")
	if code != 200 {
		t.Fatalf("list = %d %s", code, body)
	}
	var got struct {
		User     string `json:"user"`
		Sessions []struct {
			ID        string  `json:"id"`
			UserAgent string  `json:"user_agent"`
			IP        string  `json:"ip"`
			LastSeen  *string `json:"last_seen"`
			Expires   *string `json:"expires"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.User != "alice" || len(got.Sessions) != 3 {
		t.Fatalf("list = %s", body)
	}
	for _, s := range got.Sessions {
		if !sessions.ValidPublicID(s.ID) || s.IP != "192.0.2.1" || !strings.HasPrefix(s.UserAgent, "device ") || s.LastSeen == nil || s.Expires == nil {
			t.Errorf("listed session %+v", s)
		}
	}
	if strings.Contains(body, "secret-sid") {
		t.Fatalf("list shows a sid: %s", body)
	}
	if code, body := serve(t, f.h, "GET", "/v1/sessions?user=nobody", "", ""); code != 200 || !strings.Contains(body, `"sessions":[]`) {
		t.Errorf("list of a user without sessions = %d %s, want an empty list", code, body)
	}

	// Revoke all but one, then one by id, then the rest.
	keep := sessions.PublicID(sids[0])
	code, body = serve(t, f.h, "POST", "/v1/sessions/revoke", "application/json", `{"user":"alice","except":"`+keep+`"}`)
	if code != 200 || body != "{\"revoked\":2}\n" {
		t.Fatalf("revoke except = %d %s", code, body)
	}
	if !f.exists(sids[0]) || f.exists(sids[1]) || f.exists(sids[2]) || !f.exists(bob[0]) {
		t.Fatal("revoke except deleted the wrong sessions")
	}
	code, body = serve(t, f.h, "POST", "/v1/sessions/revoke", "application/json; charset=utf-8", `{"id":"`+keep+`"}`)
	if code != 200 || body != "{\"revoked\":1}\n" || f.exists(sids[0]) {
		t.Fatalf("revoke id = %d %s", code, body)
	}
	if code, body := serve(t, f.h, "POST", "/v1/sessions/revoke", "application/json", `{"id":"`+keep+`"}`); code != 404 {
		t.Errorf("revoke of a revoked id = %d %s, want 404", code, body)
	}
	if code, body := serve(t, f.h, "POST", "/v1/sessions/revoke", "application/json", `{"user":"bob"}`); code != 200 || body != "{\"revoked\":1}\n" || f.exists(bob[0]) {
		t.Errorf("revoke user = %d %s", code, body)
	}
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t)
	sids := f.login("alice", 1)
	const js = "application/json"
	for _, tt := range []struct {
		name, method, target, ctype, body string
		code                              int
		text                              string
	}{
		{"list without user", "GET", "/v1/sessions", "", "", 400, `\"user\" is required`},
		{"list with a CR", "GET", "/v1/sessions?user=a%0Db", "", "", 400, "CR"},
		{"list of a huge user", "GET", "/v1/sessions?user=" + strings.Repeat("u", 2000), "", "", 400, "1024"},
		{"form body", "POST", "/v1/sessions/revoke", "application/x-www-form-urlencoded", "user=alice", 415, "application/json"},
		{"no content type", "POST", "/v1/sessions/revoke", "", `{"user":"alice"}`, 415, "application/json"},
		{"malformed", "POST", "/v1/sessions/revoke", js, `{"user":`, 400, "truncated"},
		{"not an object", "POST", "/v1/sessions/revoke", js, `["alice"]`, 400, "wrong type"},
		{"unknown field", "POST", "/v1/sessions/revoke", js, `{"usr":"alice"}`, 400, `unknown field \"usr\"`},
		{"two values", "POST", "/v1/sessions/revoke", js, `{"user":"alice"} {"user":"bob"}`, 400, "more than one"},
		{"empty object", "POST", "/v1/sessions/revoke", js, `{}`, 400, `\"user\" is required`},
		{"too big", "POST", "/v1/sessions/revoke", js, `{"user":"` + strings.Repeat("a", 20000) + `"}`, 413, "16 KiB"},
		{"id and except", "POST", "/v1/sessions/revoke", js, `{"id":"0123456789abcdef","except":"0123456789abcdef"}`, 400, "except"},
		{"a sid as id", "POST", "/v1/sessions/revoke", js, `{"id":"` + sids[0] + `"}`, 400, "16 hex digits"},
		{"bad except", "POST", "/v1/sessions/revoke", js, `{"user":"alice","except":"xyz"}`, 400, "16 hex digits"},
		{"unknown except", "POST", "/v1/sessions/revoke", js, `{"user":"alice","except":"0123456789abcdef"}`, 404, "nothing was revoked"},
		{"unknown id", "POST", "/v1/sessions/revoke", js, `{"id":"0123456789abcdef"}`, 404, "no indexed session"},
		{"other endpoint", "GET", "/v1/keys", "", "", 404, "no such admin API endpoint"},
		{"wrong method", "DELETE", "/v1/sessions", "", "", 405, "takes GET"},
		{"revoke by GET", "GET", "/v1/sessions/revoke", "", "", 405, "takes POST"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, body := serve(t, f.h, tt.method, tt.target, tt.ctype, tt.body)
			if code != tt.code || !strings.Contains(body, tt.text) {
				t.Fatalf("%d %s, want %d with %q", code, body, tt.code, tt.text)
			}
			if strings.Contains(body, sids[0]) {
				t.Fatalf("the answer repeats a sid: %s", body)
			}
		})
	}
	if !f.exists(sids[0]) {
		t.Fatal("a bad request revoked a session")
	}
}

func TestUnavailable(t *testing.T) {
	rc, err := redisconn.New(redisconn.Options{URL: "redis://127.0.0.1:1/0", Timeout: 200 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rc.Close() })
	ix, err := sessions.NewIndex(rc, sessions.IndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := New(Options{Sessions: ix})
	for _, r := range [][]string{{"GET", "/v1/sessions?user=a", "", ""}, {"POST", "/v1/sessions/revoke", "application/json", `{"user":"a"}`}} {
		code, body := serve(t, h, r[0], r[1], r[2], r[3])
		if code != 503 || !strings.Contains(body, "unavailable") || strings.Contains(body, "127.0.0.1") {
			t.Errorf("%s %s with Redis down = %d %s, want 503 with a fixed text", r[0], r[1], code, body)
		}
	}
	off := New(Options{})
	if code, body := serve(t, off, "GET", "/v1/sessions?user=a", "", ""); code != 404 || !strings.Contains(body, "sessions.index") {
		t.Errorf("without an index = %d %s, want 404 naming the setting", code, body)
	}
}
