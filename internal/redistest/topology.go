package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Option configures StartSentinel and StartCluster.
type Option func(*options)

type options struct {
	password         string
	sentinelPassword string
	args             []string
}

// WithPassword protects every data node with requirepass and lets replicas authenticate
// to their master with masterauth. Sentinels are told the password with sentinel auth-pass,
// and redis-cli gets it through REDISCLI_AUTH (as -a would, without the warning and without
// the password in the process listing).
func WithPassword(password string) Option {
	return func(o *options) { o.password = password }
}

// WithSentinelPassword protects the sentinels themselves with requirepass, which clients
// pass as sentinel_password. It applies to StartSentinel only.
func WithSentinelPassword(password string) Option {
	return func(o *options) { o.sentinelPassword = password }
}

// WithArgs adds redis-server directives (for example "--maxmemory", "10mb") to every data
// node of the topology; sentinels do not get them.
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// CLIBinary returns the path of redis-cli, or "" when it is not installed.
func CLIBinary() string {
	if p := os.Getenv("REDIS_CLI_BIN"); p != "" {
		return p
	}
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		return ""
	}
	return p
}

// requireTools skips the test when redis-server or redis-cli is missing, unless the CI
// environment variable is set, in which case it fails, as Start does.
func requireTools(t testing.TB) {
	t.Helper()
	var missing []string
	if Binary() == "" {
		missing = append(missing, "redis-server")
	}
	if CLIBinary() == "" {
		missing = append(missing, "redis-cli")
	}
	if len(missing) == 0 {
		return
	}
	what := strings.Join(missing, " and ")
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found on PATH; .ci/run must install them (apt-get install -y redis-server redis-tools)", what)
	}
	t.Skipf("%s not found on PATH: install them (apt-get install -y redis-server redis-tools) to run this test", what)
}

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// dataArgs are the directives of every data node. A replica's first full sync would wait
// five seconds for other replicas under Redis 7's default diskless sync, so the delay is off.
func (o options) dataArgs() []string {
	args := []string{"--repl-diskless-sync-delay", "0"}
	if o.password != "" {
		args = append(args, "--requirepass", o.password, "--masterauth", o.password)
	}
	return append(args, o.args...)
}

// startFresh starts a server on nports fresh free ports (the first is its own; argsFor turns
// them into its arguments, a cluster bus port say), and tries again on new ports, a few
// times, when one was taken between FreePort and the bind. used, when not nil, collects every
// port handed out, so that the nodes of one topology never share one.
func startFresh(t testing.TB, dir, password, conf string, used map[int]bool, nports int, argsFor func(ports []int) []string) *Server {
	t.Helper()
	if used == nil {
		used = map[int]bool{}
	}
	const attempts = 5
	for i := 1; ; i++ {
		ports := freePorts(t, nports, used)
		s := &Server{t: t, bin: Binary(), dir: dir, port: ports[0], args: argsFor(ports), conf: conf, password: password}
		err := s.tryStart()
		if err == nil {
			t.Cleanup(s.Stop)
			return s
		}
		if !errors.Is(err, errPortTaken) || i == attempts {
			t.Fatalf("redistest: %v", err)
		}
		t.Logf("redistest: %v; trying other ports", err)
	}
}

// freePorts returns n distinct free loopback ports, none of them in used.
func freePorts(t testing.TB, n int, used map[int]bool) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for i := 0; len(ports) < n; i++ {
		if i > 100*n {
			t.Fatalf("redistest: no %d distinct free ports after %d tries", n, i)
		}
		p := FreePort(t)
		if used[p] {
			continue
		}
		used[p] = true
		ports = append(ports, p)
	}
	return ports
}

// PID is the process id of the running server, or 0 when it is stopped.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

func (s *Server) ping(timeout time.Duration) error {
	if s.password == "" {
		return Ping(s.Addr(), timeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := command(ctx, s.Addr(), s.password, "PING")
	if err != nil {
		return err
	}
	if r != "PONG" {
		return fmt.Errorf("unexpected reply %v", r)
	}
	return nil
}

// poll calls check every interval until it returns nil, for at most timeout and at most
// timeout/interval+1 times, and returns the last error when time runs out.
func poll(timeout, interval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	tries := int(timeout/interval) + 1
	var err error
	for i := 0; i < tries; i++ {
		if err = check(); err == nil {
			return nil
		}
		if time.Now().Add(interval).After(deadline) {
			break
		}
		time.Sleep(interval)
	}
	return fmt.Errorf("not reached within %v: %w", timeout, err)
}

// runCLI runs redis-cli with args under timeout and returns its combined output.
func runCLI(timeout time.Duration, password string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, CLIBinary(), args...)
	cmd.Env = os.Environ()
	if password != "" {
		cmd.Env = append(cmd.Env, "REDISCLI_AUTH="+password)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("redis-cli %s: %w", args[0], ctx.Err())
	}
	return string(out), err
}
