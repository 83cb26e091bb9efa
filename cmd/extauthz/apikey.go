package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/redisconn"
)

const apikeyUsage = `Usage:
  extauthz apikey create --owner OWNER [--tier T] [--scopes a,b] [--expires DURATION] [--name N]
                         [--credits N [--refill N --refill-every 1d|1mo]]
                         [--redis-url URL | --config FILE]
  extauthz apikey list [--json] [--redis-url URL | --config FILE]
  extauthz apikey revoke ID [--redis-url URL | --config FILE]
  extauthz apikey credits ID [--set N | --add N] [--redis-url URL | --config FILE]

Redis comes from --redis-url, else the config file's redis section (which EXTAUTHZ_REDIS_URL
overrides, as for serve), else EXTAUTHZ_REDIS_URL. A config without redis.url selects the
embedded store of the sidecar running with it (make run), reached at its redis.embedded_addr.
The key prefixes come from the config file's apikeys section, or the defaults. --expires
takes a Go duration (12h, 90m) or whole days (90d); without it the key never expires.
--credits meters the key: every request it makes spends a credit, and at zero it is denied
(apikeys.credits_status); --refill sets the balance back to N every UTC day (1d) or on the
1st of every month (1mo). "credits ID" prints the balance, or sets it (--set) or adds to it
(--add, negative takes away).
`

const (
	// apikeyCommandTimeout bounds a whole command, so that a stuck Redis ends it with an error.
	apikeyCommandTimeout = 30 * time.Second
	// apikeyConnectTimeout bounds the wait for the first connection.
	apikeyConnectTimeout = 5 * time.Second
	// maxExpiryDays bounds "--expires Nd" well below time.Duration's ~292 years.
	maxExpiryDays = 100 * 365
)

// runAPIKey dispatches "extauthz apikey ..." and returns the exit code: 0 done, 1 failed,
// 2 bad usage.
func runAPIKey(args []string, stdout, stderr io.Writer) int {
	return dispatch("apikey", apikeyUsage, map[string]subcommand{
		"create":  runAPIKeyCreate,
		"list":    runAPIKeyList,
		"revoke":  runAPIKeyRevoke,
		"credits": runAPIKeyCredits,
	}, args, stdout, stderr)
}

// redisFlags are the flags every apikey command takes to find Redis.
type redisFlags struct{ redisURL, config string }

func newAPIKeyFlags(name string, stderr io.Writer) (*flag.FlagSet, *redisFlags) {
	fs := flag.NewFlagSet("extauthz apikey "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf redisFlags
	fs.StringVar(&rf.redisURL, "redis-url", "", "Redis `URL` (redis://, rediss://, unix://)")
	fs.StringVar(&rf.config, "config", "", "config `FILE` whose redis and apikeys sections to use")
	return fs, &rf
}

// parseInterleaved parses flags placed before or after positional arguments ("revoke ID
// --redis-url URL"); flag.FlagSet.Parse alone stops at the first positional one.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseFailed turns a flag parse error into an exit code; the flag package has already
// printed the problem and the flags.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// withStore opens the key store of the Redis the flags, the config file and the environment
// name (cliRedis), with the file's key prefixes, and runs fn under the command deadline
// (withRedis).
func withStore(name string, rf *redisFlags, stderr io.Writer, fn func(context.Context, *apikeys.Store) int) int {
	return withRedis("apikey "+name, rf, stderr, func(ctx context.Context, cfg *config.Config, rc *redisconn.Client) int {
		st, err := apikeys.New(rc, apikeys.Options{Prefix: cfg.APIKeys.Prefix, TokenPrefix: cfg.APIKeys.TokenPrefix})
		if err != nil {
			fmt.Fprintf(stderr, "extauthz apikey %s: %v\n", name, err)
			return 1
		}
		return fn(ctx, st)
	})
}

func runAPIKeyCreate(args []string, stdout, stderr io.Writer) int {
	fs, rf := newAPIKeyFlags("create", stderr)
	owner := fs.String("owner", "", "who the key acts for (required)")
	name := fs.String("name", "", "a label for the key, e.g. the service it is for")
	tier := fs.String("tier", "", "rate limit tier; empty means the policy's default limits")
	scopes := fs.String("scopes", "", "comma-separated scopes, e.g. invoices:read,invoices:write")
	expires := fs.String("expires", "", "lifetime: a Go duration (12h) or whole days (90d); default never")
	cf := addCreditFlags(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	var ttl time.Duration
	switch {
	case len(pos) > 0:
		err = fmt.Errorf("unexpected argument %q", pos[0])
	case strings.TrimSpace(*owner) == "":
		err = errors.New("--owner is required")
	case *expires != "":
		ttl, err = parseExpiry(*expires)
	}
	var credits *apikeys.CreditParams
	if err == nil {
		credits, err = cf.params()
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz apikey create: %v\n\n%s", err, apikeyUsage)
		return 2
	}
	p := apikeys.CreateParams{Name: *name, Owner: *owner, Tier: *tier, Scopes: splitScopes(*scopes), TTL: ttl, Credits: credits}
	return withStore("create", rf, stderr, func(ctx context.Context, st *apikeys.Store) int {
		key, rec, err := st.Create(ctx, p)
		if err != nil {
			fmt.Fprintf(stderr, "extauthz apikey create: %v\n", err)
			return 1
		}
		// The key alone on the first line, so that scripts can take it with head -1.
		fmt.Fprintln(stdout, key)
		fmt.Fprintf(stdout, "created api key %s for owner %q, tier %s, scopes %s, expires %s\n",
			rec.ID, rec.Owner, orDash(rec.Tier, "(default)"), orDash(strings.Join(rec.Scopes, ","), "(none)"), expiryText(rec.Expires))
		if c := rec.Credits; c.Enabled {
			fmt.Fprintf(stdout, "credits %d, %s\n", c.Initial, refillText(c))
		}
		fmt.Fprintln(stdout, "store the key now: it is not shown again, and extauthz keeps only its SHA-256")
		return 0
	})
}

// parseExpiry reads a Go duration or a whole number of days ("90d"), which Go durations lack
// and which key lifetimes are usually written in.
func parseExpiry(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > maxExpiryDays {
			return 0, fmt.Errorf("--expires %q: want whole days from 1 to %d, e.g. 90d", s, maxExpiryDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("--expires %q: want a duration such as 12h or days such as 90d", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("--expires %q: must be positive; leave it out for a key that never expires", s)
	}
	return d, nil
}

// splitScopes splits a comma-separated list, dropping blanks so that "a, b," means [a b].
func splitScopes(s string) []string {
	var out []string
	for _, sc := range strings.Split(s, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			out = append(out, sc)
		}
	}
	return out
}

// listEntry is one line of "list --json". Expires is null for a key that never expires, so
// that no string has to be reserved to mean "never"; times are RFC 3339 in UTC.
type listEntry struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Owner   string   `json:"owner"`
	Tier    string   `json:"tier"`
	Scopes  []string `json:"scopes"`
	Created string   `json:"created"`
	Expires *string  `json:"expires"`
	State   string   `json:"state"`
	// Credits is null for a key without credits.
	Credits *creditsEntry `json:"credits"`
}

func runAPIKeyList(args []string, stdout, stderr io.Writer) int {
	fs, rf := newAPIKeyFlags("list", stderr)
	asJSON := fs.Bool("json", false, "one JSON object per line instead of a table")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "extauthz apikey list: unexpected argument %q\n\n%s", pos[0], apikeyUsage)
		return 2
	}
	return withStore("list", rf, stderr, func(ctx context.Context, st *apikeys.Store) int {
		recs, err := st.List(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "extauthz apikey list: %v\n", err)
			return 1
		}
		bals, err := st.Balances(ctx, recs)
		if err != nil {
			fmt.Fprintf(stderr, "extauthz apikey list: %v\n", err)
			return 1
		}
		now := time.Now()
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetEscapeHTML(false)
			for _, r := range recs {
				e := listEntry{
					ID: r.ID, Name: r.Name, Owner: r.Owner, Tier: r.Tier, Scopes: r.Scopes,
					Created: r.Created.UTC().Format(time.RFC3339), State: r.State(now),
				}
				b, ok := bals[r.ID]
				e.Credits = creditsJSON(r, b, ok, now)
				if e.Scopes == nil {
					e.Scopes = []string{}
				}
				if !r.Expires.IsZero() {
					s := r.Expires.UTC().Format(time.RFC3339)
					e.Expires = &s
				}
				if err := enc.Encode(e); err != nil {
					fmt.Fprintf(stderr, "extauthz apikey list: %v\n", err)
					return 1
				}
			}
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tOWNER\tTIER\tSCOPES\tEXPIRES\tSTATE\tCREDITS")
		for _, r := range recs {
			b, ok := bals[r.ID]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, orDash(r.Name, "-"), orDash(r.Owner, "-"),
				orDash(r.Tier, "-"), orDash(strings.Join(r.Scopes, ","), "-"), expiryText(r.Expires), r.State(now), creditsCell(r, b, ok))
		}
		if err := tw.Flush(); err != nil {
			fmt.Fprintf(stderr, "extauthz apikey list: %v\n", err)
			return 1
		}
		return 0
	})
}

func runAPIKeyRevoke(args []string, stdout, stderr io.Writer) int {
	fs, rf := newAPIKeyFlags("revoke", stderr)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "extauthz apikey revoke: want exactly one ID\n\n%s", apikeyUsage)
		return 2
	}
	id := pos[0]
	return withStore("revoke", rf, stderr, func(ctx context.Context, st *apikeys.Store) int {
		// A key pasted where the id belongs must not be echoed into a terminal or a CI log.
		if st.Valid(id) {
			fmt.Fprintln(stderr, "extauthz apikey revoke: that is an api key, not its id: use the id that create and list print")
			return 1
		}
		err := st.Revoke(ctx, id)
		switch {
		case errors.Is(err, apikeys.ErrNotFound):
			fmt.Fprintf(stderr, "extauthz apikey revoke: no api key with id %q\n", id)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "extauthz apikey revoke: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "revoked %s\n", id)
		return 0
	})
}

func expiryText(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s, empty string) string {
	if s == "" {
		return empty
	}
	return s
}
