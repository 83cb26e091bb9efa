// Command bench is the orchestrator behind `make bench`: it builds the sidecar, the null server
// and loadgen, starts a private Redis, the sidecar and the null server on free loopback ports,
// runs the load matrix against the sidecar and the null server in turn, measures the raw Redis
// ceiling with redis-benchmark, and prints a markdown report.
//
//	go run ./test/bench -mode full    # about six minutes, bounded at seven
//	go run ./test/bench -mode quick   # about 40 seconds of load
//	go run ./test/bench -mode soak    # `make soak`: ten minutes of steady load, then a verdict
//
// -topology picks the private Redis: plain (one redis-server, redis://), sentinel (a master,
// a replica and three sentinels, redis-sentinel://) or cluster (three masters with one replica
// each, redis-cluster://). The null server is the same in every topology.
//
// The soak (soak.go) checks that the sidecar's memory, goroutines and Redis connections stay
// flat under a steady mixed load, and exits non-zero when one grows; -duration sets its length.
//
// Every process it starts is stopped before it exits, on Ctrl-C too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// Time budgets, builds included. Scenarios that no longer fit are skipped and say so.
const (
	// fullBudget: the matrix's load (about 6.7 minutes with the auth: optional row) plus
	// builds and the warm-up.
	fullBudget  = 7*time.Minute + 30*time.Second
	quickBudget = 2 * time.Minute
	// topologyAllowance is added to the budget for a sentinel or cluster topology: starting
	// it, joining it and waiting for it to agree take up to half a minute more than one
	// redis-server.
	topologyAllowance = 30 * time.Second
	// stopAllowance is kept at the end of the budget for stopping the servers.
	stopAllowance = 10 * time.Second
)

// bench is the running environment the scenarios share.
type bench struct {
	real, null target
	redis      *redisTopology
	sha        string // the INCR script's SHA for redis-benchmark
	redisN     int    // redis-benchmark -n
	loadgen    string // loadgen binary
	raw        io.Writer
	deadline   time.Time
	started    time.Time
	stderr     io.Writer
}

func (b *bench) progress(format string, a ...any) {
	fmt.Fprintf(b.stderr, "[%4.0fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, a...))
}

// newWorkDir makes a run's directory for the binaries and the servers' logs. done, deferred
// with the run's error, removes it after a success and keeps it, named on stderr, for a look
// at the logs after a failure.
func newWorkDir(prefix string, stderr io.Writer) (dir string, done func(error), err error) {
	dir, err = os.MkdirTemp("", prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func(runErr error) {
		if runErr == nil {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(stderr, "bench: binaries and server logs kept in %s\n", dir)
		}
	}, nil
}

// sidecarGOMAXPROCS, when positive, is the sidecar's GOMAXPROCS (-sidecar-gomaxprocs).
var sidecarGOMAXPROCS int

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	mode := fs.String("mode", "full", "`MODE`: full (about 6 minutes), quick (about 40 seconds of load) or soak (-duration of steady load, then a verdict)")
	out := fs.String("out", "", "write the raw loadgen and redis-benchmark lines (soak: the samples as CSV) to `FILE` (default: a new temp file)")
	extauthzBin := fs.String("extauthz-bin", "", "benchmark this extauthz `BINARY` instead of building ./cmd/extauthz (e.g. a release, to compare)")
	topology := fs.String("topology", topoPlain, "`KIND` of the private Redis the sidecar uses: "+strings.Join(topologies, ", ")+" (not with -mode soak)")
	var soakOpts soakOptions
	soakOpts.register(fs)
	fs.IntVar(&sidecarGOMAXPROCS, "sidecar-gomaxprocs", 0, "run the sidecar (only) with GOMAXPROCS=`N`, as a Kubernetes CPU limit of N cores or less sets it; 0 inherits the environment")
	// Every mode's private Redis. The sidecar's client-side cache uses CLIENT TRACKING and
	// needs no keyspace notifications; the flag stays to measure what they cost.
	fs.StringVar(&soakOpts.redisNotify, "redis-notify", "", "the private Redis's notify-keyspace-events on every data node (\"\": off; the sidecar's cache needs none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// The command for the report: every flag given, so that the run can be repeated.
	command := "go run ./test/bench"
	fs.Visit(func(f *flag.Flag) { command += " -" + f.Name + " " + shellQuote([]string{f.Value.String()}) })
	if !slices.Contains(topologies, *topology) {
		return fmt.Errorf("-topology %q: want %s", *topology, strings.Join(topologies, ", "))
	}
	if *mode == "soak" {
		if *topology != topoPlain {
			return fmt.Errorf("-topology %s: the soak runs on plain only", *topology)
		}
		return runSoak(ctx, soakOpts, command, *out, *extauthzBin, stdout, stderr)
	}
	var soakOnly []string
	fs.Visit(func(f *flag.Flag) {
		if slices.Contains(soakFlagNames, f.Name) {
			soakOnly = append(soakOnly, "-"+f.Name)
		}
	})
	if len(soakOnly) > 0 {
		return fmt.Errorf("%s: only with -mode soak", strings.Join(soakOnly, ", "))
	}
	budget := fullBudget
	redisN := 60000
	switch *mode {
	case "full":
	case "quick":
		budget, redisN = quickBudget, 30000
	default:
		return fmt.Errorf("-mode %q: want full, quick or soak", *mode)
	}
	if *topology != topoPlain {
		budget += topologyAllowance
	}

	b := &bench{started: time.Now(), stderr: stderr, redisN: redisN}
	b.deadline = b.started.Add(budget - stopAllowance)
	ctx, cancel := context.WithDeadline(ctx, b.deadline)
	defer cancel()

	dir, done, err := newWorkDir("extauthz-bench-", stderr)
	if err != nil {
		return err
	}
	defer func() { done(err) }()

	rawFile, err := openRaw(*out)
	if err != nil {
		return err
	}
	defer rawFile.Close()
	b.raw = rawFile

	var procs []*proc
	defer func() { stopAll(procs) }()

	root, goBin, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	b.progress("building into %s", dir)
	if err := goBuild(ctx, root, goBin, dir+string(filepath.Separator), "./test/nullserver", "./test/loadgen"); err != nil {
		return err
	}
	b.loadgen = filepath.Join(dir, "loadgen")
	sidecarBin := *extauthzBin
	sidecarFrom := "binary " + sidecarBin
	if sidecarBin == "" {
		sidecarFrom = gitState(ctx, root)
		sidecarBin = filepath.Join(dir, "extauthz")
		if err := goBuild(ctx, root, goBin, sidecarBin, "./cmd/extauthz"); err != nil {
			return err
		}
	}

	m := machine{
		cpus: runtime.NumCPU(), model: cpuModel(), kernel: readTrim("/proc/sys/kernel/osrelease"),
		goVersion: goVersion(ctx, goBin), redisVersion: redisVersion(ctx), redisNotify: soakOpts.redisNotify,
		sidecarProcs: sidecarGOMAXPROCS, topology: *topology, sidecarFrom: sidecarFrom,
	}
	fmt.Fprintf(b.raw, "# %s\n# machine: %s\n# started: %s\n", command, m, b.started.Format(time.RFC3339))

	b.progress("starting redis (%s), extauthz and nullserver", *topology)
	var redisArgs []string
	if soakOpts.redisNotify != "" {
		redisArgs = append(redisArgs, "--notify-keyspace-events", soakOpts.redisNotify)
	}
	if b.redis, err = startTopology(ctx, *topology, dir, redisArgs...); err != nil {
		return fmt.Errorf("redis %s: %w", *topology, err)
	}
	procs = append(procs, b.redis.procs()...)
	m.topology = b.redis.describe()
	sha, err := b.redis.eachMaster(ctx, "SCRIPT", "LOAD", incrScript)
	if err != nil {
		return fmt.Errorf("load the INCR script: %w", err)
	}
	b.sha, _ = sha.(string)

	rlsDir := filepath.Join(dir, "rls")
	if err := writeRLSConfig(rlsDir); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(cfgPath, []byte(benchConfig), 0o644); err != nil {
		return err
	}
	if _, err := b.redis.do(ctx, "SET", "sess:"+benchSID, benchSession); err != nil {
		return fmt.Errorf("seed the bench session: %w", err)
	}
	sidecar, addrs, err := startSidecar(ctx, dir, sidecarBin, b.redis.url(), rlsDir, cfgPath)
	if sidecar != nil {
		procs = append(procs, sidecar)
	}
	if err != nil {
		return err
	}
	null, nullAddr, err := startNullServer(ctx, dir, filepath.Join(dir, "nullserver"))
	if null != nil {
		procs = append(procs, null)
	}
	if err != nil {
		return err
	}
	b.real = target{name: "extauthz", addr: addrs.grpc,
		pids: fmt.Sprintf("extauthz=%d,%s,loadgen=self", sidecar.pid(), b.redis.pids())}
	b.null = target{name: "null", addr: nullAddr, pids: fmt.Sprintf("null=%d,loadgen=self", null.pid())}

	b.warmUp(ctx)
	var results []*result
	for _, s := range scenarios(*mode) {
		if ctx.Err() != nil {
			break
		}
		results = append(results, b.runScenario(ctx, s))
	}
	for _, p := range procs {
		if p.exited() {
			err = errors.Join(err, fmt.Errorf("%s exited during the run (%v):\n%s", p.name, p.err, p.logTail()))
		}
	}
	writeReport(stdout, results, m, command, rawFile.Name())
	b.progress("done")
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = errors.Join(err, errors.New("interrupted: the report covers what ran"))
	}
	return err
}

// stopAll stops the processes at once, so the wait for one does not add to the others.
func stopAll(procs []*proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(p.stop)
	}
	wg.Wait()
}

func openRaw(path string) (*os.File, error) {
	if path == "" {
		return os.CreateTemp("", "extauthz-bench-*.txt")
	}
	return os.Create(path)
}

// moduleRoot finds the extauthz module that the packages are built from, and the go command.
func moduleRoot(ctx context.Context) (root, goBin string, err error) {
	goBin, err = exec.LookPath("go")
	if err != nil {
		return "", "", fmt.Errorf("the go command is needed to build the binaries: %w", err)
	}
	gomod, _, err := runBounded(ctx, 30*time.Second, goBin, "env", "GOMOD")
	gomod = strings.TrimSpace(gomod)
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", "", fmt.Errorf("run from inside the extauthz module (go env GOMOD: %q %v)", gomod, err)
	}
	return filepath.Dir(gomod), goBin, nil
}

// goBuild builds pkgs into out (a directory when it ends in a separator).
func goBuild(ctx context.Context, root, goBin, out string, pkgs ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, append([]string{"build", "-o", out}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}

// writeRLSConfig writes the sidecar's envoyproxy/ratelimit config: domain bench, whose limits are
// so high that every call is allowed and all the work is counting, and domain bench_over, whose
// limit of one per hour puts every call after the first over it.
func writeRLSConfig(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("domain: bench\ndescriptors:\n")
	for i := range 10 {
		fmt.Fprintf(&b, "  - key: k%d\n    rate_limit: {unit: minute, requests_per_unit: 1000000000}\n", i)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.yaml"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	const over = "domain: bench_over\ndescriptors:\n  - key: k0\n    rate_limit: {unit: hour, requests_per_unit: 1}\n"
	return os.WriteFile(filepath.Join(dir, "bench_over.yaml"), []byte(over), 0o644)
}

// sidecarAddrs are the loopback listeners of a started sidecar.
type sidecarAddrs struct {
	grpc  string // ext_authz and ratelimit
	admin string // /readyz, /metrics
}

// startSidecar starts `extauthz serve` on free loopback ports and waits for /readyz.
func startSidecar(ctx context.Context, dir, bin, redisURL, rlsDir, cfgPath string) (*proc, sidecarAddrs, error) {
	var env []string
	if sidecarGOMAXPROCS > 0 {
		env = []string{"GOMAXPROCS=" + strconv.Itoa(sidecarGOMAXPROCS)}
	}
	var ports [3]int
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, sidecarAddrs{}, err
		}
		ports[i] = p
	}
	addr := func(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
	p, err := startProcEnv(dir, "extauthz", bin, env, nil, "serve", "--config", cfgPath,
		"--grpc-addr", addr(ports[0]), "--http-addr", addr(ports[1]), "--admin-addr", addr(ports[2]),
		"--redis-url", redisURL, "--rls-config-dir", rlsDir)
	if err != nil {
		return nil, sidecarAddrs{}, err
	}
	addrs := sidecarAddrs{grpc: addr(ports[0]), admin: addr(ports[2])}
	ready := httpReady("http://" + addrs.admin + "/readyz")
	if err := waitUntil(ctx, p, 30*time.Second, ready); err != nil {
		return p, addrs, fmt.Errorf("extauthz: %w", err)
	}
	return p, addrs, nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func goVersion(ctx context.Context, goBin string) string {
	v, _, err := runBounded(ctx, 30*time.Second, goBin, "env", "GOVERSION")
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(v)
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
