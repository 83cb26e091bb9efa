package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/sessions"
)

const sessionsUsage = `Usage:
  extauthz sessions list --user U [--json] [--redis-url URL | --config FILE]
  extauthz sessions revoke --user U [--except ID] [--redis-url URL | --config FILE]
  extauthz sessions revoke ID [--user U] [--redis-url URL | --config FILE]
  extauthz sessions create --user U [--role R]... [--ttl DURATION] [--redis-url URL | --config FILE]

list and revoke work from the session index the sidecars keep (sessions.index); a session is
shown by its id, the first 16 hex digits of the SHA-256 of its session id, never by the session
id or the cookie. revoke deletes the sessions' connect-redis keys, so the app sees the logout
too and every sidecar's cache drops them on the next request. "revoke ID" finds the user
through the index's id entry, or takes --user.

create is a development helper: it writes a session as connect-redis would (under
sessions.prefix, with the TTL; --ttl takes a Go duration or whole days, default 24h), signs
its cookie with the first of sessions.secrets (or SESSION_SECRET), and prints the Cookie
header value on the first line.

Redis comes from --redis-url, else the config file's redis section (which EXTAUTHZ_REDIS_URL
overrides, as for serve), else EXTAUTHZ_REDIS_URL. The sessions settings come from the config
file, or the defaults.
`

// defaultCreateTTL is the life of a session "sessions create" writes: connect-redis's default
// ttl, 86400 s.
const defaultCreateTTL = 24 * time.Hour

// runSessions dispatches "extauthz sessions ..." and returns the exit code: 0 done, 1 failed,
// 2 bad usage.
func runSessions(args []string, stdout, stderr io.Writer) int {
	return dispatch("sessions", sessionsUsage, map[string]subcommand{
		"list":   runSessionsList,
		"revoke": runSessionsRevoke,
		"create": runSessionsCreate,
	}, args, stdout, stderr)
}

func newSessionsFlags(name string, stderr io.Writer) (*flag.FlagSet, *redisFlags) {
	fs := flag.NewFlagSet("extauthz sessions "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var rf redisFlags
	fs.StringVar(&rf.redisURL, "redis-url", "", "Redis `URL` (redis://, rediss://, unix://, redis-sentinel://, redis-cluster://)")
	fs.StringVar(&rf.config, "config", "", "config `FILE` whose redis and sessions sections to use")
	return fs, &rf
}

// sessionsEnv is what a sessions command works with.
type sessionsEnv struct {
	cfg *config.Config
	rc  *redisconn.Client
	ix  *sessions.Index
}

// withSessions opens the session index of the Redis the flags, the config file and the
// environment name (cliRedis), and runs fn under the command deadline (withRedis). The index is
// read whatever sessions.index.enabled says: an app may keep it itself.
func withSessions(name string, rf *redisFlags, stderr io.Writer, fn func(context.Context, *sessionsEnv) int) int {
	return withRedis("sessions "+name, rf, stderr, func(ctx context.Context, cfg *config.Config, rc *redisconn.Client) int {
		ix, err := sessions.NewIndex(rc, sessions.IndexOptions{
			Prefix:        cfg.Sessions.Index.Prefix,
			SessionPrefix: cfg.Sessions.Prefix,
			MaxPerUser:    cfg.Sessions.Index.MaxPerUser,
			Subject:       cfg.Sessions.Subject,
		})
		if err != nil {
			fmt.Fprintf(stderr, "extauthz sessions %s: %v\n", name, err)
			return 1
		}
		return fn(ctx, &sessionsEnv{cfg: cfg, rc: rc, ix: ix})
	})
}

// badID explains why id is not a listed session id, without repeating it: what was pasted
// may be a cookie or a session id, which must not land in a terminal's scrollback or a CI log.
func badID(id string) string {
	low := strings.ToLower(id)
	if strings.HasPrefix(low, "s:") || strings.HasPrefix(low, "s%3a") || strings.Contains(low, "connect.sid") || strings.Contains(id, "=") {
		return "that looks like a session cookie, not a session id: use the id that list prints"
	}
	return "want a session id as list prints it (16 hex digits)"
}

func runSessionsList(args []string, stdout, stderr io.Writer) int {
	fs, rf := newSessionsFlags("list", stderr)
	user := fs.String("user", "", "the user (session subject) whose sessions to list (required)")
	asJSON := fs.Bool("json", false, "one JSON object per line instead of a table")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	switch {
	case len(pos) > 0:
		err = fmt.Errorf("unexpected argument %q", pos[0])
	case *user == "":
		err = errors.New("--user is required")
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz sessions list: %v\n\n%s", err, sessionsUsage)
		return 2
	}
	return withSessions("list", rf, stderr, func(ctx context.Context, env *sessionsEnv) int {
		entries, err := env.ix.List(ctx, *user)
		if err != nil {
			fmt.Fprintf(stderr, "extauthz sessions list: %v\n", err)
			return 1
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetEscapeHTML(false)
			for _, e := range entries {
				if err := enc.Encode(e); err != nil {
					fmt.Fprintf(stderr, "extauthz sessions list: %v\n", err)
					return 1
				}
			}
			return 0
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tLAST SEEN\tFIRST SEEN\tIP\tEXPIRES\tUSER AGENT")
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, timeText(e.LastSeen), timeText(e.FirstSeen),
				orDash(e.IP, "-"), timeText(e.Expires), orDash(e.UserAgent, "-"))
		}
		if err := tw.Flush(); err != nil {
			fmt.Fprintf(stderr, "extauthz sessions list: %v\n", err)
			return 1
		}
		return 0
	})
}

func timeText(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func runSessionsRevoke(args []string, stdout, stderr io.Writer) int {
	fs, rf := newSessionsFlags("revoke", stderr)
	user := fs.String("user", "", "revoke this user's sessions (with ID: the user the session belongs to)")
	except := fs.String("except", "", "with --user and no ID: keep the session with this `ID`")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	var id string
	switch {
	case len(pos) > 1:
		err = fmt.Errorf("want at most one ID, got %d arguments", len(pos))
	case len(pos) == 1 && *except != "":
		err = errors.New("--except goes with --user alone, not with an ID")
	case len(pos) == 1:
		if id = pos[0]; !sessions.ValidPublicID(id) {
			err = errors.New(badID(id))
		}
	case *user == "":
		err = errors.New("give --user U, or a session ID")
	case *except != "" && !sessions.ValidPublicID(*except):
		err = fmt.Errorf("--except: %s", badID(*except))
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz sessions revoke: %v\n\n%s", err, sessionsUsage)
		return 2
	}
	return withSessions("revoke", rf, stderr, func(ctx context.Context, env *sessionsEnv) int {
		if id != "" {
			_, err := env.ix.RevokeID(ctx, id, *user)
			switch {
			case errors.Is(err, sessions.ErrUnknownID):
				fmt.Fprintf(stderr, "extauthz sessions revoke: no indexed session with id %s (already revoked or expired?)\n", id)
				return 1
			case err != nil:
				fmt.Fprintf(stderr, "extauthz sessions revoke: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "revoked session %s\n", id)
			return 0
		}
		n, err := env.ix.Revoke(ctx, *user, *except)
		switch {
		case errors.Is(err, sessions.ErrUnknownID):
			fmt.Fprintf(stderr, "extauthz sessions revoke: user %q has no indexed session %s to keep; nothing was revoked\n", *user, *except)
			return 1
		case err != nil:
			fmt.Fprintf(stderr, "extauthz sessions revoke: %v (revoked %d before the error)\n", err, n)
			return 1
		}
		kept := ""
		if *except != "" {
			kept = ", kept " + *except
		}
		fmt.Fprintf(stdout, "revoked %d session(s) of user %q%s\n", n, *user, kept)
		return 0
	})
}

// roleFlags collects repeated --role flags.
type roleFlags []string

func (r *roleFlags) String() string { return strings.Join(*r, ",") }
func (r *roleFlags) Set(v string) error {
	if v = strings.TrimSpace(v); v == "" {
		return errors.New("empty role")
	}
	*r = append(*r, v)
	return nil
}

func runSessionsCreate(args []string, stdout, stderr io.Writer) int {
	fs, rf := newSessionsFlags("create", stderr)
	user := fs.String("user", "", "the session's subject, stored at sessions.subject (required)")
	var roles roleFlags
	fs.Var(&roles, "role", "a role, stored at sessions.roles; repeat for several")
	ttlText := fs.String("ttl", "", "the session's life: a Go duration (30m) or whole days (7d); default 24h")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseFailed(err)
	}
	ttl := defaultCreateTTL
	switch {
	case len(pos) > 0:
		err = fmt.Errorf("unexpected argument %q", pos[0])
	case strings.TrimSpace(*user) == "":
		err = errors.New("--user is required")
	case strings.ContainsAny(*user, "\r\n\x00"):
		err = errors.New("--user holds CR, LF or NUL, which no header can carry")
	case *ttlText != "":
		ttl, err = parseExpiry(*ttlText)
		if err != nil {
			err = errors.New(strings.Replace(err.Error(), "--expires", "--ttl", 1))
		} else if ttl < time.Second {
			err = errors.New("--ttl must be at least 1s, the unit of Redis TTLs")
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "extauthz sessions create: %v\n\n%s", err, sessionsUsage)
		return 2
	}
	return withSessions("create", rf, stderr, func(ctx context.Context, env *sessionsEnv) int {
		sc := env.cfg.Sessions
		switch {
		case len(sc.Secrets) == 0:
			fmt.Fprintf(stderr, "extauthz sessions create: the cookie is signed with the first of sessions.secrets (or %s), and none is set\n", config.EnvSessionSecret)
			return 1
		case len(roles) > 0 && sc.Roles == "":
			fmt.Fprintln(stderr, "extauthz sessions create: --role needs sessions.roles in the config (the session field roles are read from)")
			return 1
		}
		value, err := sessionValue(sc, *user, roles, ttl, time.Now())
		if err != nil {
			fmt.Fprintf(stderr, "extauthz sessions create: %v\n", err)
			return 1
		}
		sid, err := newSID()
		if err != nil {
			fmt.Fprintf(stderr, "extauthz sessions create: %v\n", err)
			return 1
		}
		ms := strconv.FormatInt(ttl.Milliseconds(), 10)
		if _, err := env.rc.Do(ctx, "SET", []string{sc.Prefix + sid}, value, "PX", ms, "NX"); err != nil {
			fmt.Fprintf(stderr, "extauthz sessions create: %v\n", err)
			return 1
		}
		// The Cookie header value alone on the first line, so that scripts can take it with
		// head -1.
		fmt.Fprintln(stdout, sessions.CookiePair(sc.Cookie, sid, sc.Secrets[0]))
		rolesText := "no roles"
		if len(roles) > 0 {
			rolesText = "roles " + strings.Join(roles, ",")
		}
		fmt.Fprintf(stdout, "created session %s for user %q (%s), expires %s; send the line above as the Cookie header\n",
			sessions.PublicID(sid), *user, rolesText, time.Now().Add(ttl).UTC().Format(time.RFC3339))
		return 0
	})
}

// newSID returns a session id as express-session's default genid makes them (uid-safe with 24
// bytes: 32 characters of URL-safe base64).
func newSID() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// sessionValue is the JSON connect-redis stores for a session express-session created with
// cookie.maxAge ttl at now, holding user at sessions.subject and roles at sessions.roles (a
// string for one, a list for several). Dotted paths become nested objects, as Passport's
// passport.user is.
func sessionValue(sc config.Sessions, user string, roles []string, ttl time.Duration, now time.Time) (string, error) {
	obj := map[string]any{
		"cookie": map[string]any{
			"originalMaxAge": ttl.Milliseconds(),
			"expires":        now.Add(ttl).UTC().Format("2006-01-02T15:04:05.000Z"),
			"secure":         false,
			"httpOnly":       true,
			"path":           "/",
		},
	}
	if err := setPath(obj, sc.Subject, user); err != nil {
		return "", err
	}
	switch len(roles) {
	case 0:
	case 1:
		err := setPath(obj, sc.Roles, roles[0])
		if err != nil {
			return "", err
		}
	default:
		if err := setPath(obj, sc.Roles, roles); err != nil {
			return "", err
		}
	}
	b, err := json.Marshal(obj)
	return string(b), err
}

// setPath stores v at a dotted path, making the objects on the way.
func setPath(obj map[string]any, path string, v any) error {
	keys := strings.Split(path, ".")
	for _, k := range keys[:len(keys)-1] {
		next, ok := obj[k].(map[string]any)
		if !ok {
			if _, taken := obj[k]; taken {
				return fmt.Errorf("session field %q is both a value and an object in the config's paths", k)
			}
			next = map[string]any{}
			obj[k] = next
		}
		obj = next
	}
	last := keys[len(keys)-1]
	if _, taken := obj[last]; taken {
		return fmt.Errorf("sessions.subject and sessions.roles name the same session field %q", path)
	}
	obj[last] = v
	return nil
}
