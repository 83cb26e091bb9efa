package e2e

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// The contract suite: one set of assertions about what the sidecar does with Redis, run by
// TestTopologyContract against a single server, Sentinel and Cluster, and by
// TestContainersContract against the official redis image. Everything goes through the real
// binary over real sockets (gRPC Check and ShouldRateLimit, the apikey CLI), and every count
// is read back from Redis afterwards with the suite's own RESP lines.

// contractSecret signs the suite's session cookies.
const contractSecret = "contract-secret"

// contractDay is the window of every limit of the suite: day windows are aligned to midnight
// UTC, so a run crosses a boundary only near midnight, which waitDayRoom avoids.
const contractDay = 86400

// contractDomain is the RLS domain: a descriptor set with several descriptors under and over
// their limits, an unlimited one, a shadow one and one with no rule.
const contractDomain = `domain: contract
descriptors:
  - key: user
    rate_limit: {unit: day, requests_per_unit: 2}
  - key: tenant
    rate_limit: {unit: day, requests_per_unit: 10}
  - key: ip
    rate_limit: {unit: day, requests_per_unit: 1}
  - key: path
    value: /healthz
    rate_limit: {unlimited: true}
  - key: plan
    shadow_mode: true
    rate_limit: {unit: day, requests_per_unit: 1}
`

// contractConfig is the sidecar's config: the session and API key routes have no limits, so
// that every Redis read they make is the identity's own (the cache assertions count them).
func contractConfig(url, rlsDir string) string {
	return fmt.Sprintf(`redis: {url: %q, timeout: 2s}
response_headers: draft-7
log: {level: warn}
ratelimit: {config_dir: %q}
sessions:
  secrets: [%s]
  subject: userId
  roles: role
  headers: {x-user-id: userId, x-user-role: role}
apikeys:
  identity_headers: {x-api-key-id: id, x-key-owner: owner}
cache: {enabled: true, ttl: 1m}
policies:
  - {name: me, match: {path_prefix: /me}, auth: session}
  - {name: keyed, match: {path_prefix: /keyed}, auth: apikey}
  - name: fixed
    match: {path_prefix: /fixed}
    limits: [{name: fx, by: principal, requests: 3, window: 24h, algorithm: fixed}]
  - name: sliding
    match: {path_prefix: /sliding}
    limits: [{name: sl, by: principal, requests: 3, window: 24h, algorithm: sliding}]
  - name: gcra
    match: {path_prefix: /gcra}
    limits: [{name: gc, by: principal, requests: 3, window: 24h, algorithm: gcra}]
  - name: all
    match: {path_prefix: /all}
    limits:
      - {name: fx, by: principal, requests: 2, window: 24h, algorithm: fixed}
      - {name: sl, by: principal, requests: 4, window: 24h, algorithm: sliding}
      - {name: gc, by: principal, requests: 5, window: 24h, algorithm: gcra}
`, url, rlsDir, contractSecret)
}

// runContract starts the sidecar on tp and runs every part of the contract as a subtest.
func runContract(t *testing.T, tp *topology) {
	tp.waitDayRoom(t, 2*time.Minute)
	dir := t.TempDir()
	writeFile(t, dir, "contract.yaml", contractDomain)
	cfg := writeFile(t, t.TempDir(), "extauthz.yaml", contractConfig(tp.url, dir))
	// config validate runs the checks serve runs before it listens, the URL included.
	if code, out, errOut := runCLIEnv(t, "config", "validate", "--config", cfg); code != 0 {
		t.Fatalf("config validate: exit %d\n%s%s", code, out, errOut)
	}
	began := time.Now()
	s := startSidecar(t, "--config", cfg)
	s.waitReady()
	t.Logf("%s: sidecar ready in %v", tp.name, time.Since(began).Round(time.Millisecond))
	rls := s.dial()
	authz := dialCheck(t, s)

	t.Run("ShouldRateLimit", func(t *testing.T) { contractRLS(t, tp, rls) })
	if v := metricValue(t, s, "extauthz_cache_active"); v != 1 {
		t.Errorf("%s: extauthz_cache_active = %v with the cache on, want 1", tp.name, v)
	}
	t.Run("session", func(t *testing.T) { contractSession(t, tp, s, authz) })
	t.Run("algorithms", func(t *testing.T) { contractAlgorithms(t, tp, authz) })
	t.Run("apikey", func(t *testing.T) { contractAPIKey(t, tp, authz) })
	logs := s.logs.String()
	for _, secret := range tp.secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("%s: a session id, cookie or API key is in the sidecar's log", tp.name)
			break
		}
	}
	if t.Failed() {
		t.Logf("%s: sidecar log:\n%s", tp.name, s.logs.String())
	}
}

func rlsDescriptor(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

// contractRLS sends one descriptor set four times: user goes over its limit of 2 on the
// third request and ip over its limit of 1 on the second, tenant stays under, path is
// unlimited, plan is shadow and unknown has no rule.
func contractRLS(t *testing.T, tp *topology, c rlsv3.RateLimitServiceClient) {
	req := &rlsv3.RateLimitRequest{Domain: "contract", Descriptors: []*ratelimitv3.RateLimitDescriptor{
		rlsDescriptor("user", "alice"), rlsDescriptor("tenant", "acme"), rlsDescriptor("ip", "10.0.0.1"),
		rlsDescriptor("path", "/healthz"), rlsDescriptor("plan", "free"), rlsDescriptor("unknown", "x"),
	}}
	const (
		ok   = rlsv3.RateLimitResponse_OK
		over = rlsv3.RateLimitResponse_OVER_LIMIT
		max  = math.MaxUint32
	)
	type codes = [6]rlsv3.RateLimitResponse_Code
	wants := []struct {
		overall   rlsv3.RateLimitResponse_Code
		codes     codes
		remaining [6]uint32
		// ratelimit is the RateLimit header: the quota with the fewest remaining, on a tie
		// the longest reset, then the first. user and ip both end with the day, but once ip
		// is answered by the over-limit cache its reset is measured on the local clock, so
		// which of them is longer by a fraction of a second is up to the clocks: either
		// may be described then.
		ratelimit []string
	}{
		{ok, codes{ok, ok, ok, ok, ok, ok}, [6]uint32{1, 9, 0, max, 0, 0}, []string{"limit=1, remaining=0"}},
		{over, codes{ok, ok, over, ok, ok, ok}, [6]uint32{0, 8, 0, max, 0, 0}, []string{"limit=2, remaining=0"}},
		{over, codes{over, ok, over, ok, ok, ok}, [6]uint32{0, 7, 0, max, 0, 0}, []string{"limit=2, remaining=0", "limit=1, remaining=0"}},
		// The fourth: user and ip are answered by the over-limit cache, the others counted.
		{over, codes{over, ok, over, ok, ok, ok}, [6]uint32{0, 6, 0, max, 0, 0}, []string{"limit=2, remaining=0", "limit=1, remaining=0"}},
	}
	for i, w := range wants {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := c.ShouldRateLimit(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		leftOfDay := contractDay - tp.nowMicros(t, "any")/1_000_000%contractDay
		if resp.GetOverallCode() != w.overall {
			t.Errorf("request %d: overall %v, want %v", i+1, resp.GetOverallCode(), w.overall)
		}
		if len(resp.GetStatuses()) != len(w.codes) {
			t.Fatalf("request %d: %d statuses, want %d: %v", i+1, len(resp.GetStatuses()), len(w.codes), resp)
		}
		for j, st := range resp.GetStatuses() {
			if st.GetCode() != w.codes[j] || st.GetLimitRemaining() != w.remaining[j] {
				t.Errorf("request %d, descriptor %d: %v with %d remaining, want %v with %d", i+1, j, st.GetCode(), st.GetLimitRemaining(), w.codes[j], w.remaining[j])
			}
		}
		st := resp.GetStatuses()
		if l := st[0].GetCurrentLimit(); l.GetRequestsPerUnit() != 2 || l.GetUnit() != rlsv3.RateLimitResponse_RateLimit_DAY {
			t.Errorf("request %d: user's current_limit %v, want 2 a day", i+1, l)
		}
		if st[3].GetCurrentLimit() != nil || st[5].GetCurrentLimit() != nil {
			t.Errorf("request %d: unlimited or unmatched descriptor with a current_limit: %v / %v", i+1, st[3], st[5])
		}
		if d := st[1].GetDurationUntilReset().AsDuration(); absDiffInt(int64(d/time.Second), leftOfDay) > 5 {
			t.Errorf("request %d: tenant resets in %v, want the rest of the UTC day (%ds)", i+1, d, leftOfDay)
		}
		// The headers list the policies of the enforced descriptors (not the shadow one),
		// describe the quota closest to its limit, and add Retry-After once over.
		hs := map[string]string{}
		for _, h := range resp.GetResponseHeadersToAdd() {
			hs[strings.ToLower(h.GetKey())] = h.GetValue()
		}
		if got, want := hs["ratelimit-policy"], "2;w=86400, 10;w=86400, 1;w=86400"; got != want {
			t.Errorf("request %d: RateLimit-Policy %q, want %q", i+1, got, want)
		}
		rl, reset, _ := strings.Cut(hs["ratelimit"], ", reset=")
		if !slices.Contains(w.ratelimit, rl) || absDiffInt(parseInt64(t, reset), leftOfDay) > 5 {
			t.Errorf("request %d: RateLimit %q, want one of %q with a reset of about %d", i+1, hs["ratelimit"], w.ratelimit, leftOfDay)
		}
		if ra, has := hs["retry-after"]; has != (w.overall == over) || has && absDiffInt(parseInt64(t, ra), leftOfDay) > 5 {
			t.Errorf("request %d: Retry-After %q (present %v), want present = %v, the rest of the day", i+1, ra, has, w.overall == over)
		}
	}

	// Exact counts in today's window: user 3 and ip 2 (once over, they no longer reached
	// Redis), tenant and the shadow plan 4 each; nothing for the unlimited and unmatched
	// descriptors.
	start := tp.nowMicros(t, "any") / 1_000_000
	start -= start % contractDay
	for name, want := range map[string]int64{"user_alice": 3, "tenant_acme": 4, "ip_10%2E0%2E0%2E1": 2, "plan_free": 4} {
		key := fmt.Sprintf("rls:{contract.%s}:%d:%d", name, contractDay, start)
		v, found := tp.get(t, key)
		if !found {
			t.Errorf("counter %s missing; rls keys: %v", key, tp.scan(t, "rls:*"))
			continue
		}
		if got := tp.intOf(t, key, v); got != want {
			t.Errorf("counter %s = %d, want %d", key, got, want)
		}
		if ttl, _ := tp.do(t, key, "TTL", key).(int64); ttl <= 0 || ttl > contractDay+1 {
			t.Errorf("counter %s TTL %d, want within the window plus a second", key, ttl)
		}
	}
	if keys := tp.scan(t, "rls:*"); len(keys) != 4 {
		t.Errorf("rls keys %v, want exactly the four counted descriptors", keys)
	}
	if tp.kind == "cluster" {
		// The counters hash to several slots: the request was split by slot and every slot's
		// script counted.
		slots := map[int64]bool{}
		for _, tag := range []string{"contract.user_alice", "contract.tenant_acme", "contract.ip_10%2E0%2E0%2E1", "contract.plan_free"} {
			slots[tp.slot(t, "{"+tag+"}")] = true
		}
		if len(slots) < 2 {
			t.Errorf("the descriptors share one slot: the cross-slot path was not exercised")
		}
	}
}

// contractSession checks Check with connect-redis sessions: identity headers, cache hits
// that never reach Redis, and that a logout (DEL), a login (a new key) and a change (SET) are
// seen by the next decisions.
func contractSession(t *testing.T, tp *topology, s *sidecar, c authv3.AuthorizationClient) {
	const hitSeries = `extauthz_cache_lookups_total{cache="session",result="hit"}`
	sid := randomHex(t)
	key := "sess:" + sid
	cookie := tp.storeSession(t, sid, contractSecret, map[string]any{"userId": "alice", "role": "admin"})
	h := cookieHeader(cookie)
	node := tp.nodeOf(t, key)

	before := tp.commandCalls(t, node, "get")
	hitsBefore := max(metricValue(t, s, hitSeries), 0)
	for range 6 {
		assertAllowedAs(t, check(t, c, checkRequest("GET", "/me/profile", h, "")), map[string]string{"x-user-id": "alice", "x-user-role": "admin"})
	}
	gets := tp.commandCalls(t, node, "get") - before
	t.Logf("%s: 6 decisions about one session: %d GETs on %s", tp.name, gets, node)
	if gets < 1 || gets > 2 {
		t.Errorf("6 decisions about one session made %d GETs on its node, want 1 (a miss, then cache hits; 2 tolerated)", gets)
	}
	if hits := metricValue(t, s, hitSeries) - hitsBefore; hits < 4 {
		t.Errorf("%s counted %v for 6 decisions about one session, want at least 4", hitSeries, hits)
	}
	invalidationsBefore, _ := metricSum(t, s, "extauthz_cache_invalidations_total")

	// A bad signature never reaches Redis.
	before = tp.commandCalls(t, node, "get")
	assertDenied(t, check(t, c, checkRequest("GET", "/me/profile", cookieHeader(signCookie(sid, "not-the-secret")), "")), 401)
	if n := tp.commandCalls(t, node, "get") - before; n != 0 {
		t.Errorf("a badly signed cookie made %d GETs", n)
	}

	// Logout: connect-redis's destroy is a DEL.
	if n, _ := tp.do(t, key, "DEL", key).(int64); n != 1 {
		t.Fatalf("DEL %s removed %d keys", "sess:<sid>", n)
	}
	took := pollCheck(t, c, checkRequest("GET", "/me/profile", h, ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
		return r.GetDeniedResponse().GetStatus().GetCode() == 401
	})
	t.Logf("%s: logout seen after %v", tp.name, took)
	if n, found := metricSum(t, s, "extauthz_cache_invalidations_total"); !found || n-invalidationsBefore < 1 {
		t.Errorf("the logout counted %v invalidations (metric found: %v), want at least 1", n-invalidationsBefore, found)
	}

	// A session unknown to Redis, asked about twice (the miss may be cached), then created:
	// the login is seen by the next decisions.
	sid2 := randomHex(t)
	h2 := cookieHeader(signCookie(sid2, contractSecret))
	for range 2 {
		assertDenied(t, check(t, c, checkRequest("GET", "/me/profile", h2, "")), 401)
	}
	tp.storeSession(t, sid2, contractSecret, map[string]any{"userId": "bob", "role": "admin"})
	took = pollCheck(t, c, checkRequest("GET", "/me/profile", h2, ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
		return r.GetOkResponse() != nil
	})
	t.Logf("%s: login seen after %v", tp.name, took)
	assertAllowedAs(t, check(t, c, checkRequest("GET", "/me/profile", h2, "")), map[string]string{"x-user-id": "bob", "x-user-role": "admin"})

	// The session saved again with another role.
	tp.storeSession(t, sid2, contractSecret, map[string]any{"userId": "bob", "role": "viewer"})
	took = pollCheck(t, c, checkRequest("GET", "/me/profile", h2, ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
		hv, ok := headerValue(r.GetOkResponse().GetHeaders(), "x-user-role")
		return ok && hv.GetHeader().GetValue() == "viewer"
	})
	t.Logf("%s: role change seen after %v", tp.name, took)
}

// contractAlgorithms runs each algorithm alone (3 a day per principal) five times: three
// allowed with the right RateLimit headers, two denied with Retry-After, and the counts read
// back from Redis.
func contractAlgorithms(t *testing.T, tp *topology, c authv3.AuthorizationClient) {
	sid := randomHex(t)
	h := cookieHeader(tp.storeSession(t, sid, contractSecret, map[string]any{"userId": "carol", "role": "user"}))
	for _, a := range []struct{ policy, limit string }{{"fixed", "fx"}, {"sliding", "sl"}, {"gcra", "gc"}} {
		t.Run(a.policy, func(t *testing.T) {
			key := "rl:{" + a.policy + ":" + a.limit + ":" + escapeKeyPart("session:carol") + "}"
			for i := 1; i <= 5; i++ {
				resp := check(t, c, checkRequest("GET", "/"+a.policy+"/x", h, ""))
				if i <= 3 {
					ok := assertAllowedAs(t, resp, map[string]string{"x-user-id": "carol"})
					hs := headerOptionMap(ok.GetResponseHeadersToAdd())
					if got := hs["ratelimit-policy"]; got != "3;w=86400" {
						t.Errorf("request %d: RateLimit-Policy %q, want 3;w=86400", i, got)
					}
					want := fmt.Sprintf("limit=3, remaining=%d, reset=", 3-i)
					rl := hs["ratelimit"]
					if !strings.HasPrefix(rl, want) {
						t.Errorf("request %d: RateLimit %q, want %q...", i, rl, want)
						continue
					}
					reset := parseInt64(t, strings.TrimPrefix(rl, want))
					var wantReset int64
					switch a.policy {
					case "fixed": // the window opened at the first hit
						wantReset = contractDay
					case "sliding": // aligned to the epoch
						wantReset = contractDay - tp.nowMicros(t, key)/1_000_000%contractDay
					case "gcra": // the theoretical arrival time: one interval (8h) per hit
						wantReset = int64(i) * contractDay / 3
					}
					if absDiffInt(reset, wantReset) > 5 {
						t.Errorf("request %d: reset %d, want about %d", i, reset, wantReset)
					}
					continue
				}
				d := assertDenied(t, resp, 429)
				ra, found := headerValue(d.GetHeaders(), "retry-after")
				if !found || parseInt64(t, ra.GetHeader().GetValue()) <= 0 {
					t.Errorf("request %d: denied without a positive Retry-After: %v", i, d.GetHeaders())
				}
			}
			switch a.policy {
			case "fixed":
				// rate-limit-redis counts a lone fixed window's denial too (the fourth); the
				// fifth is answered by the over-limit cache and never reaches Redis.
				v, _ := tp.get(t, key)
				if got := tp.intOf(t, key, v); got != 4 {
					t.Errorf("fixed counter %s = %d, want 4", key, got)
				}
				if pttl, _ := tp.do(t, key, "PTTL", key).(int64); pttl <= 0 || pttl > contractDay*1000 {
					t.Errorf("fixed counter PTTL %d, want within the window", pttl)
				}
			case "sliding":
				if got := slidingCount(t, tp, key); got != 3 {
					t.Errorf("sliding counters of %s = %d, want 3", key, got)
				}
			case "gcra":
				if got := gcraCount(t, tp, key, contractDay*1_000_000/3); got != 3 {
					t.Errorf("gcra %s holds %d intervals, want 3", key, got)
				}
			}
		})
	}
}

// contractAPIKey creates a key with the CLI, lists it, decides with it (cache included),
// checks a policy with all three algorithms at once (all or nothing, across slots on a
// Cluster), revokes it and sees the revoke on the next decisions.
func contractAPIKey(t *testing.T, tp *topology, c authv3.AuthorizationClient) {
	owner := "svc-" + tp.name
	code, out, errOut := runCLIEnv(t, "apikey", "create", "--owner", owner, "--name", "contract", "--scopes", "read,write", "--redis-url", tp.url)
	if code != 0 {
		t.Fatalf("apikey create: exit %d\n%s", code, errOut)
	}
	key := firstLine(out)
	if !strings.HasPrefix(key, "eak_") {
		t.Fatalf("apikey create printed %q first, want the key", firstLine(out))
	}
	tp.secrets = append(tp.secrets, key)
	entry := listedKey(t, tp, owner)
	if entry.State != "active" || entry.Name != "contract" || !slices.Equal(entry.Scopes, []string{"read", "write"}) {
		t.Errorf("apikey list: %+v, want an active key named contract with scopes read,write", entry)
	}
	id := entry.ID
	if !strings.Contains(out, id) {
		t.Errorf("apikey create did not print the id %s that list shows", id)
	}
	code, table, errOut := runCLIEnv(t, "apikey", "list", "--redis-url", tp.url)
	if code != 0 || !strings.Contains(table, id) || !strings.Contains(table, owner) {
		t.Errorf("apikey list: exit %d, the table lacks %s of %s:\n%s%s", code, id, owner, table, errOut)
	}
	if strings.Contains(table, key) || strings.Contains(table, sha256Hex(key)) {
		t.Error("apikey list printed the key or its hash")
	}
	record := "apikey:" + sha256Hex(key)
	if v := tp.do(t, record, "HGET", record, "id"); v != id {
		t.Fatalf("the record apikey:<sha256> holds id %v, want %s; apikey keys: %v", v, id, tp.scan(t, "apikey:*"))
	}

	h := map[string]string{"x-api-key": key}
	node := tp.nodeOf(t, record)
	before := tp.commandCalls(t, node, "hgetall")
	for range 6 {
		resp := check(t, c, checkRequest("GET", "/keyed/x", h, ""))
		assertAllowedAs(t, resp, map[string]string{"x-api-key-id": id, "x-key-owner": owner})
		if p := resp.GetDynamicMetadata().GetFields()["principal"].GetStringValue(); p != id {
			t.Errorf("dynamic metadata principal %q, want the key's id", p)
		}
	}
	reads := tp.commandCalls(t, node, "hgetall") - before
	t.Logf("%s: 6 decisions about one key: %d HGETALLs on %s", tp.name, reads, node)
	if reads < 1 || reads > 2 {
		t.Errorf("6 decisions about one key made %d HGETALLs on its node, want 1 (a miss, then cache hits; 2 tolerated)", reads)
	}

	// Three algorithms in one policy, decided all or nothing: fx (2) denies the third
	// request, and neither sl (4) nor gc (5) keeps a count for it, even when their keys are in
	// other Cluster slots (their counts are taken back). The fourth meets the over-limit
	// cache and reaches nothing.
	for i := 1; i <= 4; i++ {
		resp := check(t, c, checkRequest("GET", "/all/x", h, ""))
		if i <= 2 {
			ok := assertAllowedAs(t, resp, nil)
			hs := headerOptionMap(ok.GetResponseHeadersToAdd())
			if got := hs["ratelimit-policy"]; got != "2;w=86400, 4;w=86400, 5;w=86400" {
				t.Errorf("all, request %d: RateLimit-Policy %q", i, got)
			}
			if want := fmt.Sprintf("limit=2, remaining=%d, reset=", 2-i); !strings.HasPrefix(hs["ratelimit"], want) {
				t.Errorf("all, request %d: RateLimit %q, want %q...", i, hs["ratelimit"], want)
			}
			continue
		}
		assertDenied(t, resp, 429)
	}
	subject := escapeKeyPart("apikey:" + id)
	fx, sl, gc := "rl:{all:fx:"+subject+"}", "rl:{all:sl:"+subject+"}", "rl:{all:gc:"+subject+"}"
	if v, _ := tp.get(t, fx); tp.intOf(t, fx, v) != 2 {
		t.Errorf("all: fixed counter = %s, want 2", v)
	}
	if got := slidingCount(t, tp, sl); got != 2 {
		t.Errorf("all: sliding count = %d, want 2", got)
	}
	if got := gcraCount(t, tp, gc, contractDay*1_000_000/5); got != 2 {
		t.Errorf("all: gcra intervals = %d, want 2", got)
	}
	if tp.kind == "cluster" {
		// The key id is random, so the slots are too; three limits share one slot about once
		// in 2^28 runs. In several slots, the third request was counted by the slots that
		// allowed it and taken back: the counts above prove the undo.
		slots := map[int64]bool{tp.slot(t, fx): true, tp.slot(t, sl): true, tp.slot(t, gc): true}
		t.Logf("%s: the three limits of one decision lie in %d slots", tp.name, len(slots))
		if len(slots) < 2 {
			t.Errorf("the three limits share one slot: the cross-slot undo was not exercised (rerun)")
		}
	}

	// Revoke: the next decisions deny.
	code, out, errOut = runCLIEnv(t, "apikey", "revoke", id, "--redis-url", tp.url)
	if code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("apikey revoke: exit %d %s %s", code, out, errOut)
	}
	took := pollCheck(t, c, checkRequest("GET", "/keyed/x", h, ""), 250*time.Millisecond, func(r *authv3.CheckResponse) bool {
		return r.GetDeniedResponse().GetStatus().GetCode() == 401
	})
	t.Logf("%s: revoke seen after %v", tp.name, took)
	if v := tp.do(t, record, "HGET", record, "disabled"); v != "1" {
		t.Errorf("record disabled = %v after revoke, want 1", v)
	}
	if e := listedKey(t, tp, owner); e.State != "revoked" {
		t.Errorf("apikey list after revoke: state %q, want revoked", e.State)
	}
	if strings.Contains(out+errOut, key) {
		t.Error("apikey revoke printed the key")
	}
}

// apikeyEntry is one line of `apikey list --json`.
type apikeyEntry struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Owner  string   `json:"owner"`
	Scopes []string `json:"scopes"`
	State  string   `json:"state"`
}

// listedKey runs `apikey list --json` and returns the one key of owner.
func listedKey(t *testing.T, tp *topology, owner string) apikeyEntry {
	t.Helper()
	code, out, errOut := runCLIEnv(t, "apikey", "list", "--json", "--redis-url", tp.url)
	if code != 0 {
		t.Fatalf("apikey list: exit %d\n%s", code, errOut)
	}
	var found []apikeyEntry
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e apikeyEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("apikey list --json line %q: %v", line, err)
		}
		if e.Owner == owner {
			found = append(found, e)
		}
	}
	if len(found) != 1 {
		t.Fatalf("apikey list shows %d keys of %s, want 1:\n%s", len(found), owner, out)
	}
	return found[0]
}

// runCLIEnv runs the binary with EXTAUTHZ_REDIS_URL cleared, so that only the flags count.
func runCLIEnv(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = append(os.Environ(), "EXTAUTHZ_REDIS_URL=")
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %s: %v", args[0], err)
	}
	return code, out.String(), errb.String()
}

// pollCheck repeats req until done accepts the answer, failing after within; it returns how
// long that took.
func pollCheck(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest, within time.Duration, done func(*authv3.CheckResponse) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		resp := check(t, c, req)
		if done(resp) {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: the change was not seen within %v: %v", req.GetAttributes().GetRequest().GetHttp().GetPath(), within, resp)
		}
		time.Sleep(time.Millisecond)
	}
}

// slidingCount sums the sub-window counters of a sliding limit (key:<start ms>), which the
// key's hash tag keeps on one node.
func slidingCount(t *testing.T, tp *topology, key string) int64 {
	t.Helper()
	var sum int64
	node := tp.nodeOf(t, key)
	keys := tp.scan(t, key+":*")
	if len(keys) == 0 {
		t.Errorf("no sliding sub-window keys of %s", key)
	}
	for _, k := range keys {
		if n := tp.nodeOf(t, k); n != node {
			t.Errorf("sub-window %s on %s, its limit's key on %s", k, n, node)
		}
		v, _ := tp.get(t, k)
		sum += tp.intOf(t, k, v)
	}
	return sum
}

// gcraCount is how many intervals (µs) a GCRA key's theoretical arrival time lies ahead of
// Redis's clock: the hits counted in a quick burst, when the interval is hours.
func gcraCount(t *testing.T, tp *topology, key string, interval int64) int64 {
	t.Helper()
	v, found := tp.get(t, key)
	if !found {
		t.Errorf("gcra key %s missing", key)
		return 0
	}
	tat := tp.intOf(t, key, v)
	return int64(math.Round(float64(tat-tp.nowMicros(t, key)) / float64(interval)))
}

// escapeKeyPart escapes a part of a limit key as docs/ratelimit.md says: % { } : _ . space,
// control and non-ASCII bytes as %XX.
func escapeKeyPart(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if strings.IndexByte("%{}:_.", c) >= 0 || c <= ' ' || c >= 0x7F {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func headerOptionMap(hs []*corev3.HeaderValueOption) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[strings.ToLower(h.GetHeader().GetKey())] = h.GetHeader().GetValue()
	}
	return m
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func parseInt64(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Errorf("not an integer: %q", s)
	}
	return n
}

func absDiffInt(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}
