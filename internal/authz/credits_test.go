package authz

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redistest"
)

const creditsConfig = `
apikeys: {credits_status: %STATUS%}
policies:
  - name: api
    match: {path_prefix: /api/}
    auth: apikey
    limits: [{name: per-key, by: apikey, requests: 3, window: 1h}]
  - name: free
    match: {path_prefix: /free/}
    auth: apikey
  - name: soft
    match: {path_prefix: /soft/}
    auth: apikey
    limits: [{by: apikey, requests: 100, window: 1m}]
    failure: {limits: open}
`

// creditsEngine is an Engine on a real redis-server with a real apikeys.Store and the
// server's limiter (a Guard around the Limiter), deciding with draft-7 headers.
func creditsEngine(t *testing.T, status int) (*Engine, *apikeys.Store, *redisconn.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redisClient(t, srv)
	cfg, err := config.Parse("credits.yaml", []byte(strings.ReplaceAll(creditsConfig, "%STATUS%", strconv.Itoa(status))))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := apikeys.New(rdb, apikeys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Keys:    keys,
		Limiter: ratelimit.NewGuard(ratelimit.NewLimiter(rdb), ratelimit.GuardOptions{Size: 1000}),
		Timeout: 5 * time.Second,
		Headers: ratelimit.FormatDraft7,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, keys, rdb
}

func createKey(t *testing.T, keys *apikeys.Store, c *apikeys.CreditParams) (string, apikeys.Record) {
	t.Helper()
	key, rec, err := keys.Create(t.Context(), apikeys.CreateParams{Owner: "o", Credits: c})
	if err != nil {
		t.Fatal(err)
	}
	return key, rec
}

func balance(t *testing.T, keys *apikeys.Store, rec apikeys.Record) int64 {
	t.Helper()
	b, err := keys.Balance(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	return b.Remaining
}

func TestCreditsDecisions(t *testing.T) {
	t.Parallel()
	e, keys, rdb := creditsEngine(t, 429)
	ctx := t.Context()

	t.Run("without refill: spent, then 429 over_credits without headers", func(t *testing.T) {
		key, rec := createKey(t, keys, &apikeys.CreditParams{Initial: 2})
		for i := range 2 {
			if d := e.Decide(ctx, req("GET", "/free/x", "x-api-key", key)); !d.Allow {
				t.Fatalf("request %d: %+v", i+1, d)
			}
		}
		d := e.Decide(ctx, req("GET", "/free/x", "x-api-key", key))
		if d.Allow || d.Status != 429 || d.Reason != "over_credits" || d.Message != "credits exhausted" {
			t.Fatalf("at zero: %d %s %q, want 429 over_credits \"credits exhausted\"", d.Status, d.Reason, d.Message)
		}
		if len(d.ResponseHeaders) != 0 {
			t.Errorf("a balance that never resets got headers %v", d.ResponseHeaders)
		}
		if got := balance(t, keys, rec); got != 0 {
			t.Errorf("balance %d, want 0", got)
		}
		// Credits an operator adds work on the next request: nothing remembered it as over.
		if _, _, err := keys.AddCredits(ctx, rec.ID, 1); err != nil {
			t.Fatal(err)
		}
		if d := e.Decide(ctx, req("GET", "/free/x", "x-api-key", key)); !d.Allow {
			t.Fatalf("after add: %+v", d)
		}
	})

	t.Run("the limit denies: no credit spent, the usual headers", func(t *testing.T) {
		key, rec := createKey(t, keys, &apikeys.CreditParams{Initial: 10, Refill: 10, Every: "1d"})
		for i := range 3 {
			d := e.Decide(ctx, req("GET", "/api/x", "x-api-key", key))
			if !d.Allow {
				t.Fatalf("request %d: %+v", i+1, d)
			}
			// The per-key limit is closer to its end than the credits: it is described.
			if v, _ := header(d.ResponseHeaders, "RateLimit"); !strings.HasPrefix(v, "limit=3, remaining="+strconv.Itoa(2-i)) {
				t.Errorf("request %d: RateLimit %q", i+1, v)
			}
			if v, _ := header(d.ResponseHeaders, "RateLimit-Policy"); !strings.Contains(v, "3;w=3600") || !strings.Contains(v, "10;w=86400") {
				t.Errorf("request %d: RateLimit-Policy %q, want the limit and the daily credits", i+1, v)
			}
		}
		d := e.Decide(ctx, req("GET", "/api/x", "x-api-key", key))
		if d.Status != 429 || d.Reason != "over_limit" {
			t.Fatalf("4th: %d %s, want 429 over_limit", d.Status, d.Reason)
		}
		if got := balance(t, keys, rec); got != 7 {
			t.Errorf("balance %d after a request the limit denied, want 7", got)
		}
	})

	t.Run("credits deny: no limit counted, the quota's headers", func(t *testing.T) {
		key, rec := createKey(t, keys, &apikeys.CreditParams{Initial: 1, Refill: 10, Every: "1mo"})
		if d := e.Decide(ctx, req("GET", "/api/x", "x-api-key", key)); !d.Allow {
			t.Fatalf("first: %+v", d)
		}
		d := e.Decide(ctx, req("GET", "/api/x", "x-api-key", key))
		if d.Status != 429 || d.Reason != "over_credits" {
			t.Fatalf("second: %d %s, want 429 over_credits", d.Status, d.Reason)
		}
		now := time.Now()
		left := int(time.Until(ratelimit.NextRefill(ratelimit.RefillMonthly, now)).Seconds())
		rl, _ := header(d.ResponseHeaders, "RateLimit")
		var limit, remaining, reset int
		if _, err := fmt.Sscanf(rl, "limit=%d, remaining=%d, reset=%d", &limit, &remaining, &reset); err != nil || limit != 10 || remaining != 0 || reset < left-2 || reset > left+2 {
			t.Errorf("RateLimit %q, want limit=10, remaining=0, reset about %d", rl, left)
		}
		month := int(ratelimit.RefillLength(ratelimit.RefillMonthly, now).Seconds())
		if v, _ := header(d.ResponseHeaders, "RateLimit-Policy"); !strings.Contains(v, "10;w="+strconv.Itoa(month)) {
			t.Errorf("RateLimit-Policy %q, want 10;w=%d", v, month)
		}
		if v, _ := header(d.ResponseHeaders, "Retry-After"); v != strconv.Itoa(reset) {
			t.Errorf("Retry-After %q, want the reset %d", v, reset)
		}
		// The per-key limit counted the first request only.
		lk := limitKey("rl:", "api", "per-key", "apikey:"+rec.ID)
		if v, err := rdb.Do(ctx, "GET", []string{lk}); err != nil || v != "1" {
			t.Errorf("limit count %v (%v) after a request denied for credits, want 1", v, err)
		}
	})

	t.Run("a key without credits is as before", func(t *testing.T) {
		key, rec := createKey(t, keys, nil)
		d := e.Decide(ctx, req("GET", "/free/x", "x-api-key", key))
		if !d.Allow || len(d.ResponseHeaders) != 0 {
			t.Fatalf("no limits, no credits: %+v", d)
		}
		d = e.Decide(ctx, req("GET", "/api/x", "x-api-key", key))
		if v, _ := header(d.ResponseHeaders, "RateLimit-Policy"); !d.Allow || v != "3;w=3600" {
			t.Fatalf("limits only: %+v, policy %q", d, v)
		}
		if _, err := keys.Balance(ctx, rec); !errors.Is(err, apikeys.ErrNoCredits) {
			t.Errorf("Balance of a key without credits: %v", err)
		}
		if n, _ := rdb.Do(ctx, "EXISTS", []string{"apikey:credits:" + rec.ID}); n != int64(0) {
			t.Errorf("a key without credits got a balance")
		}
	})

	t.Run("the body over HTTP", func(t *testing.T) {
		key, _ := createKey(t, keys, &apikeys.CreditParams{Initial: 0, Refill: 5, Every: "1d"})
		srv := httptest.NewServer(NewHTTPHandler(e))
		t.Cleanup(srv.Close)
		r, _ := http.NewRequest("GET", srv.URL+"/forward", nil)
		r.Header.Set("X-Forwarded-Method", "GET")
		r.Header.Set("X-Forwarded-Uri", "/free/x")
		r.Header.Set("X-Api-Key", key)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 429 || strings.TrimSpace(string(body)) != `{"error":"credits exhausted"}` {
			t.Errorf("got %d %q, want 429 {\"error\":\"credits exhausted\"}", resp.StatusCode, body)
		}
		if !strings.HasPrefix(resp.Header.Get("RateLimit"), "limit=5, remaining=0, reset=") || resp.Header.Get("Retry-After") == "" {
			t.Errorf("headers %v, want the daily quota's", resp.Header)
		}
	})
}

// apikeys.credits_status: 403 answers a key out of credits with 403; a rate limit stays 429.
func TestCreditsStatus403(t *testing.T) {
	t.Parallel()
	e, keys, _ := creditsEngine(t, 403)
	key, _ := createKey(t, keys, &apikeys.CreditParams{Initial: 0})
	if d := e.Decide(t.Context(), req("GET", "/free/x", "x-api-key", key)); d.Status != 403 || d.Reason != "over_credits" {
		t.Fatalf("got %d %s, want 403 over_credits", d.Status, d.Reason)
	}
	key, _ = createKey(t, keys, &apikeys.CreditParams{Initial: 100})
	for range 3 {
		e.Decide(t.Context(), req("GET", "/api/x", "x-api-key", key))
	}
	if d := e.Decide(t.Context(), req("GET", "/api/x", "x-api-key", key)); d.Status != 429 || d.Reason != "over_limit" {
		t.Fatalf("limit: got %d %s, want 429 over_limit", d.Status, d.Reason)
	}
}

// Redis down under failure.limits: open: a key without credits is let through on local
// counts as before; a key with credits is a backend error (the proxy's failure mode
// applies), because no replica can know a balance only Redis holds.
func TestCreditsRedisDown(t *testing.T) {
	t.Parallel()
	cfg, err := config.Parse("credits.yaml", []byte(strings.ReplaceAll(creditsConfig, "%STATUS%", "429")))
	if err != nil {
		t.Fatal(err)
	}
	e, err := newEngine(t, cfg, Options{
		Keys: fakeKeys{table: map[string]apikeys.Record{
			"k-metered": {ID: "k_metered", Owner: "o", Credits: apikeys.Credits{Enabled: true, Initial: 5, Key: "apikey:credits:k_metered"}},
			"k-plain":   {ID: "k_plain", Owner: "o"},
		}},
		Limiter: ratelimit.NewGuard(ratelimit.NewLimiter(downClient(t)), ratelimit.GuardOptions{Size: 1000}),
		Timeout: 200 * time.Millisecond,
		Headers: ratelimit.FormatDraft7,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d := e.Decide(ctx, req("GET", "/soft/x", "x-api-key", "k-plain")); !d.Allow || d.Reason != "degraded" {
		t.Fatalf("no credits, limits open: %+v, want allowed degraded", d)
	}
	for _, path := range []string{"/soft/x", "/free/x"} {
		d := e.Decide(ctx, req("GET", path, "x-api-key", "k-metered"))
		if d.Allow || d.Err == nil || d.Reason != "backend_error" {
			t.Fatalf("%s with credits: %+v, want a backend error", path, d)
		}
	}
}
