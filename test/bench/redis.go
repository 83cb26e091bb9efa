package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// redisServer is the private redis-server the sidecar uses during the benchmark.
type redisServer struct {
	*proc
	port int
	cli  string // redis-cli path
}

// startRedis starts redis-server on a free loopback port with persistence off, so disk writes
// do not disturb the measurements and nothing is left behind. extra are more directives, e.g.
// "--notify-keyspace-events", "KA".
func startRedis(ctx context.Context, dir string, extra ...string) (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, err
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
		"--save", "", "--appendonly", "no", "--dir", dir}
	p, err := startProc(dir, "redis", bin, nil, append(args, extra...)...)
	if err != nil {
		return nil, err
	}
	r := &redisServer{proc: p, port: port, cli: cli}
	err = waitUntil(ctx, p, 10*time.Second, func() error {
		out, err := r.command(ctx, "PING")
		if err == nil && out != "PONG" {
			err = fmt.Errorf("PING answered %q", out)
		}
		return err
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	return r, nil
}

func (r *redisServer) url() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.port) }

// command runs one redis-cli command and returns its trimmed output.
func (r *redisServer) command(ctx context.Context, args ...string) (string, error) {
	out, _, err := runBounded(ctx, 5*time.Second, r.cli,
		append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.port)}, args...)...)
	return strings.TrimSpace(out), err
}

// incrScript is the raw Redis ceiling's unit of work: one fixed-window counter, incremented and
// given an expiry on first use, which is the least a Redis-backed limiter can do per descriptor.
const incrScript = `local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], 60) end
return n`

// redisBenchResult is what redis-benchmark measured.
type redisBenchResult struct {
	rps           float64
	p50MS, p99MS  float64
	command, line string // the command run and its CSV result row, for the raw file
}

// benchmarkEvalSHA runs redis-benchmark with the INCR script at concurrency c over keys keys
// (1 means one hot key). It uses --csv rather than -q because the CSV row carries p50 and p99
// along with the rate in one parseable line, where -q prints only rps and p50 behind progress
// output.
func (r *redisServer) benchmarkEvalSHA(ctx context.Context, sha string, c, keys, n int) (redisBenchResult, error) {
	bin, err := exec.LookPath("redis-benchmark")
	if err != nil {
		return redisBenchResult{}, err
	}
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(r.port), "-c", strconv.Itoa(c), "-n", strconv.Itoa(n), "--csv"}
	if keys > 1 {
		args = append(args, "-r", strconv.Itoa(keys))
	}
	args = append(args, "EVALSHA", sha, "1", "key:__rand_int__")
	res := redisBenchResult{command: shellQuote(append([]string{"redis-benchmark"}, args...))}
	// redis-benchmark retries a refused connection forever, so it runs under a timeout too.
	out, _, err := runBounded(ctx, 60*time.Second, bin, args...)
	if err != nil {
		return res, err
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(rows) < 2 {
		return res, fmt.Errorf("redis-benchmark: unexpected output %q", out)
	}
	head, row := rows[0], rows[len(rows)-1]
	res.line = strings.Join(row, ",")
	field := func(name string) (float64, error) {
		for i, h := range head {
			if h == name && i < len(row) {
				return strconv.ParseFloat(row[i], 64)
			}
		}
		return 0, fmt.Errorf("redis-benchmark: no %q column in %q", name, out)
	}
	if res.rps, err = field("rps"); err != nil {
		return res, err
	}
	if res.p50MS, err = field("p50_latency_ms"); err != nil {
		return res, err
	}
	if res.p99MS, err = field("p99_latency_ms"); err != nil {
		return res, err
	}
	return res, nil
}

// redisVersion is the installed redis-server's version, e.g. "7.0.15".
func redisVersion(ctx context.Context) string {
	out, _, err := runBounded(ctx, 5*time.Second, "redis-server", "--version")
	if err != nil {
		return "unknown"
	}
	for f := range strings.FieldsSeq(out) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return strings.TrimSpace(out)
}
