package main

import (
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

func TestAPIKeyCredits(t *testing.T) {
	noRedisEnv(t)
	srv := redistest.Start(t)
	url := srv.URL()

	code, out, errOut := runCLI(t, "apikey", "create", "--owner", "metered", "--credits", "3", "--refill", "5", "--refill-every", "1d", "--redis-url", url)
	if code != 0 {
		t.Fatalf("create exit %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "credits 3, refill 5 every 1d") {
		t.Errorf("create output %q does not describe the credits", out)
	}
	key := strings.SplitN(out, "\n", 2)[0]
	id := createdID(t, out)
	code, out, errOut = runCLI(t, "apikey", "create", "--owner", "plain", "--redis-url", url)
	if code != 0 || strings.Contains(out, "credits") {
		t.Fatalf("create without credits: exit %d, %q, %q", code, out, errOut)
	}
	plainID := createdID(t, out)

	tomorrow := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour).Format(time.RFC3339)
	steps := []struct {
		args []string
		want string
	}{
		{nil, id + ": 3 credits remaining, refill 5 every 1d, next " + tomorrow},
		{[]string{"--add", "2"}, id + ": 5 credits remaining"},
		{[]string{"--set", "1"}, id + ": 1 credits remaining"},
		{[]string{"--add", "-10"}, id + ": 0 credits remaining"},
	}
	for _, s := range steps {
		args := append([]string{"apikey", "credits", id, "--redis-url", url}, s.args...)
		code, out, errOut := runCLI(t, args...)
		if code != 0 || !strings.HasPrefix(out, s.want) {
			t.Errorf("credits %v: exit %d, %q, %q; want %q", s.args, code, out, errOut, s.want)
		}
	}

	code, out, errOut = runCLI(t, "apikey", "list", "--redis-url", url)
	if code != 0 {
		t.Fatalf("list exit %d, stderr %q", code, errOut)
	}
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "ID"):
			if !strings.HasSuffix(strings.TrimSpace(line), "CREDITS") {
				t.Errorf("list header %q lacks CREDITS", line)
			}
		case strings.HasPrefix(line, id):
			if !strings.HasSuffix(line, "0 (5/1d)") {
				t.Errorf("list row %q, want credits 0 (5/1d)", line)
			}
		case strings.HasPrefix(line, plainID):
			if !strings.HasSuffix(strings.TrimSpace(line), "-") {
				t.Errorf("list row %q, want no credits", line)
			}
		}
	}
	if strings.Contains(out, key) {
		t.Error("list printed a key")
	}

	code, out, _ = runCLI(t, "apikey", "list", "--json", "--redis-url", url)
	if code != 0 {
		t.Fatalf("list --json exit %d", code)
	}
	for _, e := range parseJSONLines(t, out) {
		c, has := e["credits"]
		if !has {
			t.Fatalf("entry %v lacks credits", e)
		}
		switch e["id"] {
		case plainID:
			if c != nil {
				t.Errorf("a key without credits lists credits %v", c)
			}
		case id:
			m, _ := c.(map[string]any)
			if m["remaining"] != float64(0) || m["initial"] != float64(3) || m["refill"] != float64(5) ||
				m["refill_every"] != "1d" || m["next_refill"] != tomorrow {
				t.Errorf("credits %v, want remaining 0, initial 3, refill 5 every 1d, next %s", m, tomorrow)
			}
		}
	}

	// A lost balance is said, not made up.
	if _, err := srv.Do(t.Context(), "DEL", "apikey:credits:"+id); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "apikey", "credits", id, "--redis-url", url); code != 1 || !strings.Contains(errOut, "missing") {
		t.Errorf("missing balance: exit %d, %q", code, errOut)
	}
	if _, out, _ := runCLI(t, "apikey", "list", "--redis-url", url); !strings.Contains(out, "missing") {
		t.Errorf("list does not show the missing balance:\n%s", out)
	}
	if code, out, _ := runCLI(t, "apikey", "credits", id, "--set", "4", "--redis-url", url); code != 0 || !strings.HasPrefix(out, id+": 4 credits") {
		t.Errorf("set restores a missing balance: exit %d, %q", code, out)
	}

	failures := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"credits", plainID}, 1, "has no credits"},
		{[]string{"credits", "k_AAAAAAAAAAAA"}, 1, "no api key with id"},
		{[]string{"credits", key}, 1, "that is an api key, not its id"},
	}
	for _, f := range failures {
		code, _, errOut := runCLI(t, append(append([]string{"apikey"}, f.args...), "--redis-url", url)...)
		if code != f.code || !strings.Contains(errOut, f.err) || strings.Contains(errOut, key) {
			t.Errorf("%v: exit %d, %q; want %d and %q, without the key", f.args[:1], code, errOut, f.code, f.err)
		}
	}
}

// createdID is the id in create's note, "created api key ID for ...".
func createdID(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 3 && strings.HasPrefix(line, "created api key ") {
			return f[3]
		}
	}
	t.Fatalf("no id in %q", out)
	return ""
}

func TestAPIKeyCreditsUsageErrors(t *testing.T) {
	noRedisEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"refill without credits", []string{"create", "--owner", "o", "--refill", "5", "--refill-every", "1d"}, "need --credits"},
		{"refill without period", []string{"create", "--owner", "o", "--credits", "5", "--refill", "5"}, "go together"},
		{"period without refill", []string{"create", "--owner", "o", "--credits", "5", "--refill-every", "1d"}, "go together"},
		{"unknown period", []string{"create", "--owner", "o", "--credits", "5", "--refill", "5", "--refill-every", "1w"}, "want 1d or 1mo"},
		{"negative credits", []string{"create", "--owner", "o", "--credits", "-3"}, "--credits -3"},
		{"credits without id", []string{"credits"}, "exactly one ID"},
		{"set and add", []string{"credits", "k_AAAAAAAAAAAA", "--set", "1", "--add", "1"}, "do not go together"},
		{"negative set", []string{"credits", "k_AAAAAAAAAAAA", "--set", "-1"}, "--set"},
		{"bad add", []string{"credits", "k_AAAAAAAAAAAA", "--add", "lots"}, "--add"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, append([]string{"apikey"}, tt.args...)...)
			if code != 2 || !strings.Contains(errOut, tt.want) || out != "" {
				t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", code, out, errOut, tt.want)
			}
		})
	}
}
