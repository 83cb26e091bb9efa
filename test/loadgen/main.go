// Command loadgen measures a gRPC authorization server on loopback: Envoy's
// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit (-rpc ratelimit) or
// envoy.service.auth.v3.Authorization/Check (-rpc check), closed loop or at a fixed rate, and
// prints one summary line that test/bench parses.
//
// The line is space-separated key=value fields:
//
//	rpc, c, conns, rate, keys, descriptors  the settings (rate=0 is closed loop)
//	dur            the measured phase, warm-up excluded, e.g. 10.0s
//	requests       calls that started (open loop: were scheduled) in the measured phase and returned
//	rps            requests per second of the measured phase
//	mean_us, p50_us, p90_us, p99_us, p999_us, max_us
//	               latency in microseconds (to within 1%); at a fixed rate, counted from the
//	               scheduled time when every caller was busy, to avoid coordinated omission
//	ok             allowed (OverallCode OK; Check status OK)
//	over           over a limit (OVER_LIMIT; Check RESOURCE_EXHAUSTED or HTTP 429)
//	denied         Check denied for another reason (always 0 for ratelimit)
//	errors         gRPC errors, timeouts and answers of unknown shape (the first goes to stderr)
//	dropped        fixed rate only: measured calls never sent because the server fell too far behind
//	cpu_us_per_req[NAME]  user+system CPU of process NAME (from -pids) in the measured phase,
//	               per request, in microseconds; -1 if /proc could not be read
//	cpu_cores[NAME]       the same CPU time divided by the phase: cores busy on average
//
// Every run is bounded in time by -warmup + -d + -timeout and in calls by -max-requests, and only
// loopback addresses are accepted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// config holds the validated flags.
type config struct {
	addr, rpc, domain       string
	c, conns                int
	dur, warmup, timeout    time.Duration
	rate                    float64
	keys, descriptors       int
	maxRequests             int64
	pids                    []watchedProcess
	check                   checkOptions
	pidsText                string
	headers                 headerFlag
	cookie, host, checkPath string
}

// Bounds that keep a mistyped flag from turning into an unbounded or absurd run.
const (
	maxDuration    = time.Hour
	maxConcurrency = 10_000
	maxKeys        = 10_000_000
	maxDescriptors = 64
	maxRate        = 1_000_000
)

// headerFlag collects repeated -header "name: value" flags.
type headerFlag map[string]string

func (h headerFlag) String() string { return "" }

func (h headerFlag) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	name = strings.ToLower(strings.TrimSpace(name))
	if !ok || name == "" {
		return fmt.Errorf("want \"name: value\", got %q", s)
	}
	h[name] = strings.TrimSpace(value)
	return nil
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	cfg := &config{headers: headerFlag{}}
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: loadgen [flags]\n\nCalls ShouldRateLimit or Check on a loopback gRPC server and prints one key=value summary\nline; `go doc ./test/loadgen` lists its fields.\n\nFlags:")
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8081", "server `HOST:PORT` (loopback only)")
	fs.StringVar(&cfg.rpc, "rpc", "ratelimit", "`RPC` to call: ratelimit (ShouldRateLimit) or check (Check)")
	fs.IntVar(&cfg.c, "c", 32, "concurrent callers")
	fs.IntVar(&cfg.conns, "conns", 4, "gRPC connections, at most -c; callers are spread over them round-robin")
	fs.DurationVar(&cfg.dur, "d", 10*time.Second, "measured `duration`")
	fs.DurationVar(&cfg.warmup, "warmup", 2*time.Second, "warm-up `duration` before the measured phase; its results are discarded")
	fs.Float64Var(&cfg.rate, "rate", 0, "calls per second across all callers, open loop; 0 is closed loop (each caller calls again as soon as it has an answer)")
	fs.IntVar(&cfg.keys, "keys", 1, "ratelimit: distinct descriptor values, drawn at random per descriptor")
	fs.IntVar(&cfg.descriptors, "descriptors", 1, "ratelimit: descriptors per request, keyed k0, k1, ...")
	fs.StringVar(&cfg.domain, "domain", "bench", "ratelimit: the request's domain")
	fs.Int64Var(&cfg.maxRequests, "max-requests", 10_000_000, "hard bound on calls started, warm-up included")
	fs.StringVar(&cfg.pidsText, "pids", "", "report CPU per request of these processes: `name=pid,...` (pid self is loadgen)")
	fs.DurationVar(&cfg.timeout, "timeout", time.Second, "per-call `timeout`")
	fs.StringVar(&cfg.checkPath, "path", "/", "check: request path")
	fs.StringVar(&cfg.host, "host", "localhost", "check: request host (:authority)")
	fs.StringVar(&cfg.cookie, "cookie", "", "check: cookie header value")
	fs.Var(cfg.headers, "header", "check: extra request `HEADER` as \"name: value\", e.g. -header 'x-api-key: k1' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	conns := false
	fs.Visit(func(f *flag.Flag) { conns = conns || f.Name == "conns" })
	if !conns {
		// The default connection count must not make a small -c invalid.
		cfg.conns = min(cfg.conns, max(cfg.c, 1))
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// validate checks every flag and reports all problems at once.
func (cfg *config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := checkLoopback(cfg.addr); err != nil {
		bad("-addr: %v", err)
	}
	if cfg.rpc != "ratelimit" && cfg.rpc != "check" {
		bad("-rpc %q: want ratelimit or check", cfg.rpc)
	}
	if cfg.c < 1 || cfg.c > maxConcurrency {
		bad("-c %d: want 1 to %d", cfg.c, maxConcurrency)
	}
	if cfg.conns < 1 || cfg.conns > cfg.c {
		bad("-conns %d: want 1 to -c (%d)", cfg.conns, cfg.c)
	}
	if cfg.dur <= 0 || cfg.dur > maxDuration {
		bad("-d %v: want more than 0 and at most %v", cfg.dur, maxDuration)
	}
	if cfg.warmup < 0 || cfg.warmup > maxDuration {
		bad("-warmup %v: want 0 to %v", cfg.warmup, maxDuration)
	}
	if cfg.rate < 0 || cfg.rate > maxRate {
		bad("-rate %v: want 0 to %d", cfg.rate, maxRate)
	}
	if cfg.keys < 1 || cfg.keys > maxKeys {
		bad("-keys %d: want 1 to %d", cfg.keys, maxKeys)
	}
	if cfg.descriptors < 1 || cfg.descriptors > maxDescriptors {
		bad("-descriptors %d: want 1 to %d", cfg.descriptors, maxDescriptors)
	}
	if cfg.domain == "" {
		bad("-domain: empty")
	}
	if cfg.maxRequests < 1 {
		bad("-max-requests %d: want at least 1", cfg.maxRequests)
	}
	if cfg.timeout <= 0 {
		bad("-timeout %v: want more than 0", cfg.timeout)
	}
	if !strings.HasPrefix(cfg.checkPath, "/") {
		bad("-path %q: want an absolute path", cfg.checkPath)
	}
	pids, err := parsePIDs(cfg.pidsText)
	if err != nil {
		bad("%v", err)
	}
	cfg.pids = pids
	cfg.check = checkOptions{host: cfg.host, path: cfg.checkPath, cookie: cfg.cookie, headers: cfg.headers}
	return errors.Join(errs...)
}

// checkLoopback refuses any target but this machine, so a typo cannot load someone else's server.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q: %w", port, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", host)
	}
	return nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 2
	}
	conns, err := dial(ctx, cfg.addr, cfg.conns)
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}

	l := &load{callers: newCallers(cfg, conns), timeout: cfg.timeout, rate: cfg.rate}
	l.budget.Store(cfg.maxRequests)
	l.begin = time.Now()
	l.measure = l.begin.Add(cfg.warmup)
	l.end = l.measure.Add(cfg.dur)

	// CPU is read at the phase boundaries by a goroutine of its own, so the workers never wait for
	// /proc. cpuDone carries the before and after snapshots.
	cpuDone := make(chan [2][]time.Duration, 1)
	cpuCtx, stopCPU := context.WithCancel(ctx)
	go func() { cpuDone <- sampleCPU(cpuCtx, cfg.pids, l.measure, l.end) }()

	total := l.run(ctx)
	stopCPU()
	cpu := <-cpuDone

	measured := l.measuredEnd().Sub(l.measure)
	if total.firstErr != nil {
		fmt.Fprintf(stderr, "loadgen: %d errors, the first: %v\n", total.errors, total.firstErr)
	}
	if total.hist.clamped > 0 {
		fmt.Fprintf(stderr, "loadgen: %d latencies above %v were counted as %v\n", total.hist.clamped, time.Duration(histMaxUS)*time.Microsecond, time.Duration(histMaxUS)*time.Microsecond)
	}
	fmt.Fprintln(stdout, summary(cfg, total, measured, cpu))
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "loadgen: interrupted; the summary covers the part that ran")
		return 130
	}
	return 0
}

// dial opens n connections and waits until each is ready, so that connection setup is not
// measured even with no warm-up.
func dial(ctx context.Context, addr string, n int) ([]*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var conns []*grpc.ClientConn
	for range n {
		// passthrough hands the address to the dialer as is: it is a loopback literal or
		// localhost, and no resolver should get a say.
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return conns, err
		}
		conns = append(conns, cc)
		cc.Connect()
		for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
			if !cc.WaitForStateChange(ctx, s) {
				return conns, fmt.Errorf("connect to %s: %w (last state %v)", addr, ctx.Err(), s)
			}
		}
	}
	return conns, nil
}

// newCallers builds one caller per worker, spread over the connections round-robin.
func newCallers(cfg *config, conns []*grpc.ClientConn) []caller {
	var values []string
	if cfg.rpc == "ratelimit" {
		values = make([]string, cfg.keys)
		for i := range values {
			values[i] = "v" + strconv.Itoa(i)
		}
	}
	callers := make([]caller, cfg.c)
	for i := range callers {
		cc := conns[i%len(conns)]
		if cfg.rpc == "check" {
			callers[i] = newCheckCaller(cc, cfg.check, i)
		} else {
			callers[i] = newRateLimitCaller(cc, cfg.domain, cfg.descriptors, values, uint64(i))
		}
	}
	return callers
}

// sampleCPU reads the processes' CPU time at from and at to (or when ctx ends, if sooner).
func sampleCPU(ctx context.Context, ps []watchedProcess, from, to time.Time) [2][]time.Duration {
	var out [2][]time.Duration
	if len(ps) == 0 {
		return out
	}
	wait := func(t time.Time) {
		timer := time.NewTimer(time.Until(t))
		defer timer.Stop()
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
	}
	wait(from)
	out[0] = cpuSnapshot(ps)
	wait(to)
	out[1] = cpuSnapshot(ps)
	return out
}

// summary formats the one output line; the field list is in the package comment.
func summary(cfg *config, t *tally, measured time.Duration, cpu [2][]time.Duration) string {
	measured = max(measured, 0)
	requests := t.hist.n
	var rps float64
	if measured > 0 {
		rps = float64(requests) / measured.Seconds()
	}
	var b strings.Builder
	field := func(k string, v any) { fmt.Fprintf(&b, "%s=%v ", k, v) }
	field("rpc", cfg.rpc)
	field("c", cfg.c)
	field("conns", cfg.conns)
	field("rate", strconv.FormatFloat(cfg.rate, 'f', -1, 64))
	field("keys", cfg.keys)
	field("descriptors", cfg.descriptors)
	field("dur", fmt.Sprintf("%.1fs", measured.Seconds()))
	field("requests", requests)
	field("rps", fmt.Sprintf("%.1f", rps))
	field("mean_us", fmt.Sprintf("%.0f", t.hist.meanUS()))
	field("p50_us", t.hist.quantile(0.50))
	field("p90_us", t.hist.quantile(0.90))
	field("p99_us", t.hist.quantile(0.99))
	field("p999_us", t.hist.quantile(0.999))
	field("max_us", t.hist.maxUS)
	field("ok", t.ok)
	field("over", t.over)
	field("denied", t.denied)
	field("errors", t.errors)
	field("dropped", t.dropped)
	for i, p := range cfg.pids {
		before, after := cpu[0], cpu[1]
		perReq, cores := "-1", "-1"
		if before != nil && after != nil && before[i] >= 0 && after[i] >= 0 {
			used := after[i] - before[i]
			if requests > 0 {
				perReq = fmt.Sprintf("%.1f", float64(used.Microseconds())/float64(requests))
			}
			if measured > 0 {
				cores = fmt.Sprintf("%.2f", used.Seconds()/measured.Seconds())
			}
		}
		field("cpu_us_per_req["+p.name+"]", perReq)
		field("cpu_cores["+p.name+"]", cores)
	}
	return strings.TrimSuffix(b.String(), " ")
}
