package main

// The soak (-mode soak, `make soak`) checks issue 4's memory requirement: the sidecar's RSS
// stays under 64 MiB, and goroutines, heap, open descriptors and Redis connections stay flat
// under a steady mixed load for ten minutes. It builds the sidecar, starts a private
// redis-server and the sidecar as processes, seeds sessions and API keys, drives a fixed-rate
// mix of ShouldRateLimit and Check over many principals, samples the sidecar and Redis every
// interval, ends with a short closed-loop burst at 128 callers, and judges the samples
// (verdict.go). It exits non-zero when something grew.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/extauthz/extauthz/internal/apikeys"
	"github.com/extauthz/extauthz/internal/redisconn"
)

// soakOptions are the -mode soak flags.
type soakOptions struct {
	duration, interval time.Duration
	burst              time.Duration
	burstC             int
	rate               float64
	keys, apiKeys      int
	redisNotify        string
	th                 thresholds
}

// soakRedisConns is what the connection bound allows the sidecar and the harness: the
// sidecar's Redis client multiplexes every command over one connection and the harness's
// (seeding, then sampling INFO) over another; the other two are room for a connection being
// replaced while its successor is up. A leak adds one per redial or per request and soon
// passes it.
const soakRedisConns = 4

// soakConns is the number of gRPC connections the load uses, as in the benchmark.
const soakConns = 4

// soakWorkers is how many callers share the fixed-rate schedule: enough that a stall of a few
// hundred milliseconds at 2,000/s does not leave slots waiting for a free caller.
const soakWorkers = 64

// soakFlagNames are the flags that only -mode soak takes.
var soakFlagNames = []string{
	"duration", "interval", "warmup", "rate", "keys", "apikeys", "burst", "burst-c",
	"max-goroutine-growth", "max-heap-growth", "max-rss-growth", "growth-floor-mib", "max-fd-growth",
	"max-rss-mib", "max-redis-clients", "max-error-rate",
}

func (o *soakOptions) register(fs *flag.FlagSet) {
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "soak: how long the fixed-rate load runs, warm-up included")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "soak: time between samples")
	fs.Float64Var(&o.rate, "rate", 2000, "soak: calls per second, half ShouldRateLimit and half Check")
	fs.IntVar(&o.keys, "keys", 10000, "soak: sessions, and ShouldRateLimit descriptor values, the load cycles through")
	fs.IntVar(&o.apiKeys, "apikeys", 1000, "soak: API keys issued and used (half of them tier pro)")
	fs.DurationVar(&o.burst, "burst", 30*time.Second, "soak: closed-loop burst after the steady load, for peak RSS (0: none)")
	fs.IntVar(&o.burstC, "burst-c", 128, "soak: callers in the burst")

	// The verdict's limits; see thresholds for why each is what it is.
	fs.DurationVar(&o.th.warmup, "warmup", 2*time.Minute, "soak: samples before this are shown but not compared")
	fs.Float64Var(&o.th.goroutineGrowth, "max-goroutine-growth", 10, "soak: goroutines may grow by this many (the fewest in the last third of the samples against the fewest in the first)")
	fs.Float64Var(&o.th.heapGrowth, "max-heap-growth", 0.25, "soak: heap in use may grow by this fraction (medians of the last and the first third)")
	fs.Float64Var(&o.th.rssGrowth, "max-rss-growth", 0.20, "soak: RSS may grow by this fraction (medians of the last and the first third)")
	fs.Float64Var(&o.th.growthFloorMiB, "growth-floor-mib", 4, "soak: heap or RSS growth below this many MiB never fails")
	fs.Float64Var(&o.th.fdGrowth, "max-fd-growth", 10, "soak: open descriptors may grow by this many")
	fs.Float64Var(&o.th.maxRSSMiB, "max-rss-mib", 64, "soak: the sidecar's RSS must stay under this many MiB in every sample and at its peak (VmHWM)")
	fs.Float64Var(&o.th.maxRedisClients, "max-redis-clients", soakRedisConns, "soak: connected_clients of the private redis-server must stay at or under this (the sidecar's one multiplexed connection, the harness's one, two being replaced)")
	fs.Float64Var(&o.th.maxErrorRate, "max-error-rate", 0.01, "soak: share of calls that may fail (an answer of the wrong kind always fails)")
}

func (o *soakOptions) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if o.duration <= 0 || o.duration > 24*time.Hour {
		bad("-duration %v: want more than 0 and at most 24h", o.duration)
	}
	if o.interval < time.Second || o.interval > o.duration {
		bad("-interval %v: want 1s to -duration", o.interval)
	}
	if o.th.warmup < 0 || o.th.warmup >= o.duration {
		bad("-warmup %v: want 0 to less than -duration", o.th.warmup)
	}
	if o.rate <= 0 || o.rate > 50000 {
		bad("-rate %v: want more than 0 and at most 50000", o.rate)
	}
	if o.keys < 1 || o.keys > 1_000_000 {
		bad("-keys %d: want 1 to 1000000", o.keys)
	}
	if o.apiKeys < 1 || o.apiKeys > 100_000 {
		bad("-apikeys %d: want 1 to 100000", o.apiKeys)
	}
	if o.burst < 0 || o.burst > 10*time.Minute {
		bad("-burst %v: want 0 to 10m", o.burst)
	}
	if o.burstC < 1 || o.burstC > 2000 {
		bad("-burst-c %d: want 1 to 2000", o.burstC)
	}
	if strings.ContainsAny(o.redisNotify, " \t\n") {
		bad("-redis-notify %q: no whitespace", o.redisNotify)
	}
	return errors.Join(errs...)
}

// soakSetupAllowance bounds everything but the load: two builds of at most five minutes each,
// seeding, starting and stopping.
const soakSetupAllowance = 15 * time.Minute

// soakSecret signs the soak's session cookies.
const soakSecret = "soak-secret"

// soakConfig is the sidecar's config file: sessions (touched like connect-redis does), API
// keys (always on), one policy with a per-principal limit and a tier, and the decision log at
// its production default (denials logged, sampled by the logger).
var soakConfig = `
log: {level: info, format: json}
sessions:
  secrets: [` + soakSecret + `]
  subject: userId
  headers: {x-user-id: userId, x-user-role: role}
  roles: role
  touch: {ttl: 24h, every: 1m}
policies:
  - name: soak
    match: {path_prefix: /api/}
    auth: any
    limits: [{name: per-principal, by: principal, requests: 600, window: 1m}]
    tiers: {pro: [{name: per-principal-pro, by: principal, requests: 1200, window: 1m, algorithm: sliding}]}
`

// soakRLSConfig is the sidecar's ratelimit domain: user values with a limit never reached, and
// hot values whose 100 a minute the load exceeds, so that the over-limit cache fills and its
// entries expire every minute.
const soakRLSConfig = `domain: soak
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 1000000000}
  - key: hot
    rate_limit: {unit: minute, requests_per_unit: 100}
`

// soak is the running soak.
type soak struct {
	o       soakOptions
	started time.Time
	stderr  io.Writer
	stdout  io.Writer
	csv     io.Writer
}

func (s *soak) progress(format string, a ...any) {
	fmt.Fprintf(s.stderr, "[%4.0fs] %s\n", time.Since(s.started).Seconds(), fmt.Sprintf(format, a...))
}

// runSoak is -mode soak. command is the command line for the report; out, if set, receives the
// samples as CSV; extauthzBin, if set, is soaked instead of a build of ./cmd/extauthz.
func runSoak(ctx context.Context, o soakOptions, command, out, extauthzBin string, stdout, stderr io.Writer) (err error) {
	if err := o.validate(); err != nil {
		return err
	}
	s := &soak{o: o, started: time.Now(), stderr: stderr, stdout: stdout}
	ctx, cancel := context.WithTimeout(ctx, o.duration+o.burst+soakSetupAllowance)
	defer cancel()

	dir, done, err := newWorkDir("extauthz-soak-", stderr)
	if err != nil {
		return err
	}
	defer func() { done(err) }()
	csvPath := out
	if csvPath == "" {
		csvPath = filepath.Join(os.TempDir(), "extauthz-soak-"+s.started.Format("20060102-150405")+".csv")
	}
	csvFile, err := os.Create(csvPath)
	if err != nil {
		return err
	}
	defer csvFile.Close()
	s.csv = csvFile

	var procs []*proc
	defer func() { stopAll(procs) }()

	root, goBin, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tree := gitState(ctx, root)
	sidecarBin := extauthzBin
	if sidecarBin == "" {
		sidecarBin = filepath.Join(dir, "extauthz")
		s.progress("building ./cmd/extauthz into %s", dir)
		if err := goBuild(ctx, root, goBin, sidecarBin, "./cmd/extauthz"); err != nil {
			return err
		}
	}
	m := machine{
		cpus: runtime.NumCPU(), model: cpuModel(), kernel: readTrim("/proc/sys/kernel/osrelease"),
		goVersion: goVersion(ctx, goBin), redisVersion: redisVersion(ctx),
	}

	s.progress("starting redis-server")
	var redisArgs []string
	if o.redisNotify != "" {
		redisArgs = append(redisArgs, "--notify-keyspace-events", o.redisNotify)
	}
	rs, err := startTopology(ctx, topoPlain, dir, redisArgs...)
	if err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	procs = append(procs, rs.procs()...)

	// One client seeds and then samples INFO; its one connection counts in connected_clients.
	rc, err := dialRedis(ctx, rs.url())
	if err != nil {
		return fmt.Errorf("redis client: %w", err)
	}
	defer rc.Close()
	s.progress("seeding %d sessions and %d API keys", o.keys+soakHotSessions, o.apiKeys)
	fx, err := seed(ctx, rc, o.keys, o.apiKeys)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}

	rlsDir := filepath.Join(dir, "rls")
	if err := os.MkdirAll(rlsDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rlsDir, "soak.yaml"), []byte(soakRLSConfig), 0o644); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "extauthz.yaml")
	if err := os.WriteFile(cfgPath, []byte(soakConfig), 0o644); err != nil {
		return err
	}
	s.progress("starting extauthz")
	sidecar, addrs, err := startSidecar(ctx, dir, sidecarBin, rs.url(), rlsDir, cfgPath)
	if sidecar != nil {
		procs = append(procs, sidecar)
	}
	if err != nil {
		return err
	}

	sm := &sampler{
		pid: sidecar.pid(), metricsURL: "http://" + addrs.admin + "/metrics",
		http: &http.Client{Timeout: sampleTimeout}, redis: rc,
	}
	conns, err := dialSoak(ctx, addrs.grpc, soakConns)
	if err != nil {
		return err
	}
	defer closeConns(conns)
	d := newDriver(conns, fx, time.Second)

	fmt.Fprintf(stdout, "## extauthz soak\n\nCommand: `%s`  \nMachine: %s  \nStarted: %s  \nSidecar: %s\n\n",
		command, m, s.started.Format(time.RFC3339), tree)
	fmt.Fprintf(stdout, "Load: %.0f calls/s for %v (half ShouldRateLimit, half Check; %d sessions, %d API keys, %d descriptor values), then %d callers closed loop for %v; warm-up %v; notify-keyspace-events %q; samples every %v in %s\n\n",
		o.rate, o.duration, o.keys, o.apiKeys, o.keys, o.burstC, o.burst, o.th.warmup, o.redisNotify, o.interval, csvPath)
	writeSampleHeader(stdout, s.csv)

	steadyStats, burstStats := &stats{}, &stats{}
	samples, runErr := s.steady(ctx, d, sm, sidecar, steadyStats)
	if runErr == nil && o.burst > 0 {
		var burst []sample
		burst, runErr = s.burstPhase(ctx, d, sm, sidecar, burstStats)
		samples = append(samples, burst...)
	}
	// The kernel's peak RSS of the sidecar, start-up and burst included.
	peak := math.NaN()
	if st, err := procStatus(sidecar.pid(), "VmHWM"); err == nil {
		peak = st["VmHWM"] / 1024
	}
	cacheLines := cacheGauges(ctx, sm)

	checks := verdict(samples, peak, o.th)
	if sidecar.exited() {
		checks = append(checks, check{name: "sidecar alive", detail: fmt.Sprintf("exited during the soak (%v)", sidecar.err)})
	}
	writeSoakReport(stdout, samples, peak, steadyStats, burstStats, o, cacheLines)
	fmt.Fprint(stdout, "\n", formatChecks(checks))
	s.progress("done")

	switch {
	case runErr != nil:
		return runErr
	case !passed(checks):
		return errors.New("soak: the verdict is FAIL")
	}
	return nil
}

// steady runs the fixed-rate load and samples every interval until it ends.
func (s *soak) steady(ctx context.Context, d *driver, sm *sampler, sidecar *proc, st *stats) ([]sample, error) {
	o := s.o
	start := time.Now()
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() { d.openLoop(loadCtx, st, start, o.rate, o.duration, soakWorkers) })
	defer wg.Wait()

	s.progress("steady load: %.0f/s for %v, a sample every %v", o.rate, o.duration, o.interval)
	n := int(o.duration / o.interval)
	samples := make([]sample, 0, n)
	last := start
	for i := 1; i <= n; i++ {
		at := start.Add(time.Duration(i) * o.interval)
		if err := sleepUntil(ctx, at); err != nil {
			return samples, fmt.Errorf("interrupted after %d samples: %w", len(samples), err)
		}
		if sidecar.exited() {
			return samples, fmt.Errorf("extauthz exited during the soak (%v):\n%s", sidecar.err, sidecar.logTail())
		}
		smp := s.take(ctx, sm, st, start, &last, false)
		samples = append(samples, smp)
	}
	return samples, nil
}

// burstPhase runs burstC callers closed loop for the burst duration, sampling every 5 s (or
// every interval, if shorter), for the peak RSS under the heaviest load of the benchmark.
func (s *soak) burstPhase(ctx context.Context, d *driver, sm *sampler, sidecar *proc, st *stats) ([]sample, error) {
	o := s.o
	every := min(o.interval, 5*time.Second)
	start := time.Now()
	end := start.Add(o.burst)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	// 100,000 calls a second would be ten times what the benchmark reaches on two cores.
	wg.Go(func() { d.closedLoop(loadCtx, st, end, o.burstC, int64(o.burst.Seconds()*100000)) })
	defer wg.Wait()

	s.progress("burst: %d callers closed loop for %v", o.burstC, o.burst)
	var samples []sample
	last := start
	for i := 1; i <= int(o.burst/every); i++ {
		if err := sleepUntil(ctx, start.Add(time.Duration(i)*every)); err != nil {
			return samples, fmt.Errorf("interrupted in the burst: %w", err)
		}
		if sidecar.exited() {
			return samples, fmt.Errorf("extauthz exited during the burst (%v):\n%s", sidecar.err, sidecar.logTail())
		}
		smp := s.take(ctx, sm, st, start, &last, true)
		smp.at += s.o.duration
		samples = append(samples, smp)
	}
	return samples, nil
}

// take makes one sample: the interval's counts, then the gauges.
func (s *soak) take(ctx context.Context, sm *sampler, st *stats, start time.Time, last *time.Time, burst bool) sample {
	now := time.Now()
	c := st.take()
	elapsed := now.Sub(*last)
	*last = now
	smp := sample{
		at: now.Sub(start).Round(time.Second), burst: burst,
		requests: c.requests, ok: c.n[outOK], over: c.n[outOver], denied: c.n[outDenied], errors: c.n[outError],
		wrong: c.wrong, dropped: c.dropped,
		p50ms: c.p50.Seconds() * 1000, p99ms: c.p99.Seconds() * 1000,
	}
	if elapsed > 0 {
		smp.rps = float64(c.requests) / elapsed.Seconds()
	}
	for _, err := range sm.read(ctx, &smp) {
		s.progress("sample at %v: %v", smp.at, err)
	}
	writeSample(s.stdout, s.csv, smp)
	return smp
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// harnessRedisTimeout bounds a harness call that has no deadline of its own: the sidecar's
// 25 ms default is for decisions, and a busy shared machine misses it now and then.
const harnessRedisTimeout = 5 * time.Second

// dialRedis builds the harness's client of the private Redis (the sidecar's own client, with
// caching off) and waits until it is connected: the client connects in the background and
// fails every call until then.
func dialRedis(ctx context.Context, url string) (*redisconn.Client, error) {
	rc, err := redisconn.New(redisconn.Options{URL: url, CacheBytes: -1, Timeout: harnessRedisTimeout}, zap.NewNop())
	if err != nil {
		return nil, err
	}
	err = poll(ctx, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return rc.Ping(ctx)
	})
	if err != nil {
		rc.Close()
		return nil, err
	}
	return rc, nil
}

// seedParallel is how many seeding calls are in flight at once; the client pipelines them.
const seedParallel = 8

// seed writes the sessions, issues the API keys, and returns the load's fixtures.
func seed(ctx context.Context, rc *redisconn.Client, keys, nAPIKeys int) (*fixtures, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	fx := &fixtures{}
	session := func(user string) string {
		return `{"cookie":{"originalMaxAge":86400000,"expires":null,"httpOnly":true,"path":"/"},"userId":"` + user + `","role":"member"}`
	}
	// Session ids are 32 characters like express-session's, without the '.' that ends one.
	sid := func(kind string, i int) string { return fmt.Sprintf("soak%s%024d", kind, i) }
	var ids, users []string
	for i := range keys {
		id := sid("sess", i)
		ids, users = append(ids, id), append(users, "user-"+strconv.Itoa(i))
		fx.sessions = append(fx.sessions, sessionCookie(soakSecret, id))
		fx.rlsValues = append(fx.rlsValues, "u"+strconv.Itoa(i))
	}
	for i := range soakHotSessions {
		id := sid("hot", i)
		ids, users = append(ids, id), append(users, "hot-user-"+strconv.Itoa(i))
		fx.hot = append(fx.hot, sessionCookie(soakSecret, id))
	}
	ttl := strconv.Itoa(int((24 * time.Hour).Seconds()))
	if err := inParallel(len(ids), seedParallel, func(i int) error {
		_, err := rc.Do(ctx, "SET", []string{"sess:" + ids[i]}, session(users[i]), "EX", ttl)
		return err
	}); err != nil {
		return nil, err
	}
	for i := range soakNoSessions {
		fx.missing = append(fx.missing, sessionCookie(soakSecret, sid("gone", i)))
	}
	for i := range soakHotValues {
		fx.hotValues = append(fx.hotValues, "h"+strconv.Itoa(i))
	}

	store, err := apikeys.New(rc, apikeys.Options{})
	if err != nil {
		return nil, err
	}
	fx.apiKeys = make([]string, nAPIKeys)
	if err := inParallel(nAPIKeys, seedParallel, func(i int) error {
		p := apikeys.CreateParams{Name: "soak", Owner: "service-" + strconv.Itoa(i)}
		if i%2 == 1 {
			p.Tier = "pro"
		}
		var err error
		fx.apiKeys[i], _, err = store.Create(ctx, p)
		return err
	}); err != nil {
		return nil, err
	}
	return fx, fx.validate()
}

// inParallel calls fn(0) ... fn(n-1) from workers goroutines and returns the errors joined. A
// worker stops at its first error.
func inParallel(n, workers int, fn func(i int) error) error {
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if errs[w] = fn(i); errs[w] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// gitState describes the tree the sidecar is built from: the commit, and the files changed
// since, which matter because others may be editing the working tree.
func gitState(ctx context.Context, root string) string {
	head, _, err := runBounded(ctx, 10*time.Second, "git", "-C", root, "rev-parse", "--short", "HEAD")
	if err != nil {
		return "not a git checkout"
	}
	st, _, err := runBounded(ctx, 10*time.Second, "git", "-C", root, "status", "--porcelain", "--untracked-files=all", "--", "cmd", "internal", "go.mod", "go.sum")
	if err != nil {
		return "commit " + strings.TrimSpace(head)
	}
	var changed []string
	for line := range strings.Lines(st) {
		if f := strings.TrimSpace(line); len(f) > 3 {
			changed = append(changed, strings.TrimSpace(f[2:]))
		}
	}
	if len(changed) == 0 {
		return "commit " + strings.TrimSpace(head) + ", clean"
	}
	return fmt.Sprintf("commit %s + uncommitted changes to %d files (%s)", strings.TrimSpace(head), len(changed), strings.Join(changed, ", "))
}

// cacheGauges returns the sidecar's extauthz_cache* lines, if it has a local cache, for the
// report: whether the cache was active says which code paths the soak exercised.
func cacheGauges(ctx context.Context, sm *sampler) []string {
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sm.metricsURL, nil)
	if err != nil {
		return nil
	}
	resp, err := sm.http.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil
	}
	var out []string
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "extauthz_cache") {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}
