package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/redisconn"
	"github.com/extauthz/extauthz/internal/redisurl"
)

const (
	// cliRedisTimeout is the least per-call Redis deadline of the one-off commands (apikey,
	// sessions). The serve deadline (25ms by default) is sized for Envoy; an operator's
	// command over a VPN should not fail because one round trip took 30ms.
	cliRedisTimeout = 5 * time.Second
	// cliProbeTimeout bounds the check that a running sidecar's embedded store answers. It is
	// on loopback: anything slower than this is not there.
	cliProbeTimeout = time.Second
)

// errNoRedis is what a one-off command says, wrapped in a message that says why and what to
// do, when it has no Redis to talk to: it must not start an embedded store of its own, whose
// keys and sessions would vanish when the command exits.
var errNoRedis = errors.New("need a Redis")

// noRedisError is errNoRedis with the explanation for this case.
type noRedisError struct{ msg string }

func (e *noRedisError) Error() string        { return errNoRedis.Error() + ": " + e.msg }
func (e *noRedisError) Is(target error) bool { return target == errNoRedis }

// cliRedis is the one answer to "which Redis does a CLI command talk to", for every command
// that reads or writes the sidecar's state (apikey, sessions):
//
//  1. --redis-url (redisURL), else the redis.url of the --config file (configPath; the
//     environment's EXTAUTHZ_REDIS_URL overrides it, as for serve), else EXTAUTHZ_REDIS_URL:
//     that Redis, with the file's credentials and TLS options.
//  2. Otherwise the config selects the embedded store, which lives inside the running
//     `extauthz serve` (`make run`). When redis.embedded_addr has a fixed port, the command
//     connects to it there; when nothing answers, the error says to start the sidecar.
//  3. With port 0 (the default) no other process can find that store: the error says so, and
//     what to set.
//
// It returns the loaded config (for key prefixes, the session settings) and a client with the
// cache off and a deadline of at least cliRedisTimeout, not yet connected: the caller waits
// with WaitReady and closes it. Errors from loading the file are config.Load's (a list of
// field problems); every other failure to find a Redis matches errNoRedis.
func cliRedis(redisURL, configPath string, getenv func(string) string) (*config.Config, *redisconn.Client, error) {
	override := func(c *config.Config) {
		if redisURL != "" {
			c.Redis.URL = redisURL
		}
	}
	var cfg *config.Config
	if configPath != "" {
		var err error
		if cfg, err = config.LoadWith(configPath, getenv, override); err != nil {
			return nil, nil, err
		}
	} else {
		cfg = config.Default()
		cfg.ApplyEnv(getenv)
		override(cfg)
		if err := cfg.Validate(); err != nil {
			return nil, nil, err
		}
	}
	opts := redisOptions(cfg.Redis, -1)
	opts.Timeout = max(opts.Timeout, cliRedisTimeout)
	if cfg.Embedded() {
		addr, err := runningEmbeddedStore(cfg, configPath)
		if err != nil {
			return nil, nil, err
		}
		// The store has no users: a password meant for a real Redis must not make it fail,
		// and no TLS options can apply (validation refuses them without a rediss:// url).
		opts.URL, opts.Username, opts.Password = "redis://"+addr, "", ""
	}
	rc, err := redisconn.New(opts, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	return cfg, rc, nil
}

// runningEmbeddedStore returns where the embedded store of a sidecar running with cfg listens,
// once something answers there.
func runningEmbeddedStore(cfg *config.Config, configPath string) (string, error) {
	ap, err := redisurl.ParseEmbeddedAddr(cfg.Redis.EmbeddedAddr)
	if err != nil {
		// Validation has refused it already; this keeps the function safe on its own.
		return "", fmt.Errorf("redis.embedded_addr: %w", err)
	}
	if ap.Port() == 0 {
		if configPath == "" {
			return "", &noRedisError{"no --redis-url, --config or " + config.EnvRedisURL + "; to reach the embedded store of a " +
				"running sidecar, pass its --config with a fixed redis.embedded_addr (examples/extauthz.yaml, which `make run` " +
				"uses, sets 127.0.0.1:9004)"}
		}
		return "", &noRedisError{fmt.Sprintf("%s has no redis.url, so it selects the embedded store, and its redis.embedded_addr "+
			"%s picks a free port in each process: no other process can reach that store. Set redis.embedded_addr to a "+
			"fixed loopback port (examples/extauthz.yaml uses 127.0.0.1:9004) and restart the sidecar, or give --redis-url",
			configPath, ap)}
	}
	addr := ap.String()
	conn, err := net.DialTimeout("tcp", addr, cliProbeTimeout)
	if err != nil {
		return "", &noRedisError{fmt.Sprintf("nothing answers at %s, where a sidecar started with %s keeps its embedded store "+
			"(redis.embedded_addr; there is no redis.url): start it first and leave it running (`make run` in another "+
			"terminal, or `extauthz serve --config %s`)", addr, configPath, configPath)}
	}
	_ = conn.Close()
	return addr, nil
}

// withRedis finds the Redis of a one-off command (cliRedis), waits for its client to connect
// and runs fn under the command deadline, then closes the client. A problem in the config file
// is listed field by field (printProblems); any other failure is one line naming the command
// ("apikey create", "sessions list"). It returns fn's exit code, or 1.
func withRedis(command string, rf *redisFlags, stderr io.Writer, fn func(context.Context, *config.Config, *redisconn.Client) int) int {
	cfg, rc, err := cliRedis(rf.redisURL, rf.config, os.Getenv)
	if err != nil {
		if rf.config != "" && !errors.Is(err, errNoRedis) {
			printProblems(stderr, rf.config, err)
		} else {
			fmt.Fprintf(stderr, "extauthz %s: %v\n", command, err)
		}
		return 1
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), apikeyCommandTimeout)
	defer cancel()
	// The client connects in the background and retries; a command waits for it a few
	// seconds (a Sentinel or Cluster client asks several nodes first), then says why not.
	wctx, wcancel := context.WithTimeout(ctx, apikeyConnectTimeout)
	err = rc.WaitReady(wctx)
	wcancel()
	if err != nil {
		fmt.Fprintf(stderr, "extauthz %s: %v\n", command, err)
		return 1
	}
	return fn(ctx, cfg, rc)
}
