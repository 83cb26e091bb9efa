package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// topology is one Redis deployment the contract suite runs against, and what the suite needs
// to look at it directly: its nodes are asked with redistest's small RESP2 reader, never with
// the client under test, so a read-back cannot agree with the sidecar for the wrong reason.
type topology struct {
	name string
	// url is redis.url of the sidecar and --redis-url of the CLI.
	url string
	// kind is "single", "sentinel" or "cluster".
	kind string
	// seeds: the server (single), the sentinels (sentinel), every node (cluster).
	seeds []string
	// masterName is the name the sentinels monitor (sentinel only).
	masterName string
	// secrets are the session ids, cookies and API keys the suite used: none may appear in
	// the sidecar's log or in a CLI output other than create's.
	secrets []string
}

// respError is an error reply (-ERR ..., -MOVED ...).
type respError = redistest.ReplyError

// respCall sends one command to addr over a fresh connection and returns the reply (see
// redistest.Command): never through the client under test.
func respCall(ctx context.Context, addr string, args ...string) (any, error) {
	return redistest.Command(ctx, addr, "", args...)
}

// at runs a command on the node at addr and fails the test on any error.
func (tp *topology) at(t *testing.T, addr string, args ...string) any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := respCall(ctx, addr, args...)
	if err != nil {
		t.Fatalf("%s: %s on %s: %v", tp.name, args[0], addr, err)
	}
	return v
}

// masters are the addresses of the nodes that take writes: the server, the master the
// sentinels name now, or every master of the cluster.
func (tp *topology) masters(t *testing.T) []string {
	t.Helper()
	switch tp.kind {
	case "sentinel":
		var errs []error
		for _, s := range tp.seeds {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			v, err := respCall(ctx, s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", tp.masterName)
			cancel()
			if a, ok := v.([]any); err == nil && ok && len(a) == 2 {
				return []string{net.JoinHostPort(fmt.Sprint(a[0]), fmt.Sprint(a[1]))}
			}
			errs = append(errs, fmt.Errorf("%s: %v %v", s, v, err))
		}
		t.Fatalf("%s: no sentinel named the master: %v", tp.name, errors.Join(errs...))
	case "cluster":
		var out []string
		for _, r := range tp.slotRanges(t) {
			if !slices.Contains(out, r.master) {
				out = append(out, r.master)
			}
		}
		slices.Sort(out)
		return out
	}
	return []string{tp.seeds[0]}
}

type e2eSlotRange struct {
	start, end int64
	master     string
}

// slotRanges is CLUSTER SLOTS as the first seed that answers sees it.
func (tp *topology) slotRanges(t *testing.T) []e2eSlotRange {
	t.Helper()
	var last error
	for _, s := range tp.seeds {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		v, err := respCall(ctx, s, "CLUSTER", "SLOTS")
		cancel()
		if err != nil {
			last = err
			continue
		}
		var out []e2eSlotRange
		entries, _ := v.([]any)
		for _, e := range entries {
			a, _ := e.([]any)
			if len(a) < 3 {
				t.Fatalf("%s: CLUSTER SLOTS entry %v", tp.name, e)
			}
			m, _ := a[2].([]any)
			start, _ := a[0].(int64)
			end, _ := a[1].(int64)
			if len(m) < 2 {
				t.Fatalf("%s: CLUSTER SLOTS entry %v", tp.name, e)
			}
			out = append(out, e2eSlotRange{start: start, end: end, master: net.JoinHostPort(fmt.Sprint(m[0]), fmt.Sprint(m[1]))})
		}
		return out
	}
	t.Fatalf("%s: no node answered CLUSTER SLOTS: %v", tp.name, last)
	return nil
}

// slot is the Cluster slot of key (0 when the topology is not a cluster).
func (tp *topology) slot(t *testing.T, key string) int64 {
	t.Helper()
	if tp.kind != "cluster" {
		return 0
	}
	n, ok := tp.at(t, tp.seeds[0], "CLUSTER", "KEYSLOT", key).(int64)
	if !ok {
		t.Fatalf("%s: CLUSTER KEYSLOT %q: not an integer", tp.name, key)
	}
	return n
}

// nodeOf is the master that holds key.
func (tp *topology) nodeOf(t *testing.T, key string) string {
	t.Helper()
	if tp.kind != "cluster" {
		return tp.masters(t)[0]
	}
	slot := tp.slot(t, key)
	for _, r := range tp.slotRanges(t) {
		if r.start <= slot && slot <= r.end {
			return r.master
		}
	}
	t.Fatalf("%s: slot %d is not served", tp.name, slot)
	return ""
}

// do runs a command about key on the master that holds it.
func (tp *topology) do(t *testing.T, key string, args ...string) any {
	t.Helper()
	return tp.at(t, tp.nodeOf(t, key), args...)
}

// get is GET key: "" and false when the key is missing.
func (tp *topology) get(t *testing.T, key string) (string, bool) {
	t.Helper()
	v := tp.do(t, key, "GET", key)
	if v == nil {
		return "", false
	}
	s, ok := v.(string)
	if !ok {
		t.Fatalf("%s: GET %s = %v", tp.name, key, v)
	}
	return s, true
}

// intOf reads an integer string value, failing the test on anything else.
func (tp *topology) intOf(t *testing.T, key, v string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatalf("%s: %s holds %q, not an integer", tp.name, key, v)
	}
	return n
}

// scan lists the keys matching pattern on every master.
func (tp *topology) scan(t *testing.T, pattern string) []string {
	t.Helper()
	var out []string
	for _, m := range tp.masters(t) {
		cursor := "0"
		for {
			v, ok := tp.at(t, m, "SCAN", cursor, "MATCH", pattern, "COUNT", "1000").([]any)
			if !ok || len(v) != 2 {
				t.Fatalf("%s: SCAN on %s = %v", tp.name, m, v)
			}
			cursor, _ = v[0].(string)
			keys, _ := v[1].([]any)
			for _, k := range keys {
				out = append(out, fmt.Sprint(k))
			}
			if cursor == "0" {
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// nowMicros is Redis's clock (TIME) on the node that holds key, in Unix microseconds.
func (tp *topology) nowMicros(t *testing.T, key string) int64 {
	t.Helper()
	a, ok := tp.do(t, key, "TIME").([]any)
	if !ok || len(a) != 2 {
		t.Fatalf("%s: TIME = %v", tp.name, a)
	}
	sec, err1 := strconv.ParseInt(fmt.Sprint(a[0]), 10, 64)
	usec, err2 := strconv.ParseInt(fmt.Sprint(a[1]), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: TIME = %v", tp.name, a)
	}
	return sec*1_000_000 + usec
}

// commandCalls is how many times the node at addr has run command (INFO commandstats;
// commands run by scripts included), 0 before the first.
func (tp *topology) commandCalls(t *testing.T, addr, command string) int64 {
	t.Helper()
	info, _ := tp.at(t, addr, "INFO", "commandstats").(string)
	prefix := "cmdstat_" + strings.ToLower(command) + ":calls="
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			n, _, _ := strings.Cut(rest, ",")
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				t.Fatalf("%s: commandstats line %q", tp.name, line)
			}
			return v
		}
	}
	return 0
}

// waitDayRoom sleeps past midnight UTC by Redis's clock when less than need is left of the
// day: the suite's day windows (RLS unit day, a sliding 24h window) are aligned to it.
func (tp *topology) waitDayRoom(t *testing.T, need time.Duration) {
	t.Helper()
	const day = int64(24 * time.Hour / time.Microsecond)
	now := tp.nowMicros(t, "any")
	if left := time.Duration(day-now%day) * time.Microsecond; left < need {
		t.Logf("%s: %v left of the UTC day, waiting for the next one", tp.name, left)
		time.Sleep(left + 200*time.Millisecond)
	}
}

// storeSession writes a session under sess:<sid> exactly as connect-redis does (the JSON of
// writeSession, SET ... EX 3600) on the master that holds it, and returns the cookie value
// express-session would sign with secret.
func (tp *topology) storeSession(t *testing.T, sid, secret string, fields map[string]any) string {
	t.Helper()
	data := sessionJSON(t, fields)
	if v := tp.do(t, "sess:"+sid, "SET", "sess:"+sid, data, "EX", "3600"); v != "OK" {
		t.Fatalf("%s: SET sess: %v", tp.name, v)
	}
	cookie := signCookie(sid, secret)
	tp.secrets = append(tp.secrets, sid, cookie)
	return cookie
}

// sessionJSON is connect-redis's value for a session: express-session's cookie object and the
// app's fields at the top level (the layout writeSession writes).
func sessionJSON(t *testing.T, fields map[string]any) string {
	t.Helper()
	obj := map[string]any{
		"cookie": map[string]any{
			"originalMaxAge": 3600000,
			"expires":        time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05.000Z"),
			"httpOnly":       true,
			"path":           "/",
		},
	}
	for k, v := range fields {
		obj[k] = v
	}
	data, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
