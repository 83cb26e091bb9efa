package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/proxyconf"
)

// proxyConfUsage is printed for a bad `extauthz config <proxy>` command line.
const proxyConfUsage = `usage: extauthz config nginx|caddy|traefik --config FILE [--listen ADDR] [--upstream ADDR]
                       [--extauthz ADDR] [--policy NAME] [--admin ADDR] [--bind HOST]`

// runProxyConf prints the configuration of a proxy in front of an app, with extauthz deciding,
// for the config file given: exit 0 with the file on stdout, 1 when the config or an option
// is wrong, 2 for a bad command line.
func runProxyConf(proxy string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz config "+proxy, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the extauthz config `FILE` the proxy goes with (required)")
	o := proxyconf.Options{}
	fs.StringVar(&o.Listen, "listen", proxyconf.DefaultListen, "`ADDR` the proxy listens on (Caddy: its site address)")
	fs.StringVar(&o.Upstream, "upstream", proxyconf.DefaultUpstream, "the app's `ADDR`")
	fs.StringVar(&o.Extauthz, "extauthz", "", "the sidecar's HTTP authorization `ADDR` (default: the config's listen.http)")
	fs.StringVar(&o.Policy, "policy", "", "decide every request by the policy `NAME` instead of matching the route")
	if proxy == proxyconf.Caddy {
		fs.StringVar(&o.Admin, "admin", proxyconf.DefaultAdmin, "Caddy's admin endpoint `ADDR`, or off")
		fs.StringVar(&o.Bind, "bind", "", "the `HOST` Caddy binds (default: the IP host of --listen)")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, proxyConfUsage)
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		printProblems(stderr, *path, err)
		return 1
	}
	o.ConfigName = *path
	if err := proxyconf.Render(stdout, proxy, cfg, o); err != nil {
		fmt.Fprintf(stderr, "extauthz config %s: %v\n", proxy, err)
		return 1
	}
	if len(cfg.TrustedProxies) == 0 {
		fmt.Fprintf(stderr, "extauthz config %s: note: %s sets no trusted_proxies, so extauthz takes the %s's own address for every client's (by: ip limits count all clients together); add the %s's address to trusted_proxies\n",
			proxy, *path, proxy, proxy)
	}
	return 0
}

// isProxy reports whether name is a proxy `extauthz config` writes a configuration for.
func isProxy(name string) bool { return slices.Contains(proxyconf.Proxies, name) }

// configUsage is the usage line of `extauthz config`.
var configUsage = "usage: extauthz config validate --config FILE\n       extauthz config " +
	strings.Join(proxyconf.Proxies, "|") + " --config FILE [flags]"
