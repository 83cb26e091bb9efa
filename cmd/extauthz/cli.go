package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// version and commit are set at build time with -ldflags "-X main.version=... -X main.commit=...".
var (
	version = "dev"
	commit  = ""
)

const usage = `extauthz: shared sessions, API keys and rate limits for every service behind Envoy.

Usage:
  extauthz serve [--config FILE] [--grpc-addr HOST:PORT] [--http-addr HOST:PORT]
                 [--admin-addr HOST:PORT] [--redis-url URL] [--rls-config-dir DIR]
  extauthz config validate --config FILE
  extauthz config nginx|caddy|traefik --config FILE [--listen ADDR] [--upstream ADDR]
                  [--extauthz ADDR] [--policy NAME] [--admin ADDR] [--bind HOST]
  extauthz apikey create --owner OWNER [--tier T] [--scopes a,b] [--expires DURATION] [--name N]
                         [--credits N [--refill N --refill-every 1d|1mo]]
                         [--redis-url URL | --config FILE]
  extauthz apikey list [--json] [--redis-url URL | --config FILE]
  extauthz apikey revoke ID [--redis-url URL | --config FILE]
  extauthz apikey credits ID [--set N | --add N] [--redis-url URL | --config FILE]
  extauthz sessions list --user U [--json] [--redis-url URL | --config FILE]
  extauthz sessions revoke --user U [--except ID] [--redis-url URL | --config FILE]
  extauthz sessions revoke ID [--user U] [--redis-url URL | --config FILE]
  extauthz sessions create --user U [--role R] [--ttl DURATION] [--redis-url URL | --config FILE]
  extauthz test [--config FILE] FILE...
  extauthz explain --config FILE --method M --path P [--host H] [--header K:V ...]
                   [--cookie C] [--client IP] [--policy NAME] [--json]
  extauthz version

Run "extauthz serve --help" for the serve flags.
`

// run dispatches a command line and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(args[1:], stdout, stderr)
	case "config":
		switch {
		case len(args) >= 2 && args[1] == "validate":
			return runValidate(args[2:], stdout, stderr)
		case len(args) >= 2 && isProxy(args[1]):
			return runProxyConf(args[1], args[2:], stdout, stderr)
		}
		fmt.Fprintln(stderr, configUsage)
		return 2
	case "apikey":
		return runAPIKey(args[1:], stdout, stderr)
	case "sessions":
		return runSessions(args[1:], stdout, stderr)
	case "test":
		return runPolicyTest(args[1:], stdout, stderr)
	case "explain":
		return runExplain(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "extauthz: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func versionString() string {
	c := commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					c = s.Value
				}
			}
		}
	}
	if c == "" {
		c = "unknown"
	}
	return fmt.Sprintf("extauthz %s (commit %s, %s, %s/%s)", version, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// subcommand runs one command of a group ("apikey create") on its own arguments and returns
// the exit code.
type subcommand func(args []string, stdout, stderr io.Writer) int

// dispatch runs the subcommand args[0] names in group, or prints usage: on stdout for help
// (exit 0), on stderr for none or an unknown one (exit 2).
func dispatch(group, usage string, cmds map[string]subcommand, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "extauthz %s: unknown command %q\n\n%s", group, args[0], usage)
		return 2
	}
	return cmd(args[1:], stdout, stderr)
}
