package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// sampler reads the sidecar's and Redis's gauges. Every read is bounded by a short timeout;
// one that fails leaves its gauges NaN and its error in the sample's note.
type sampler struct {
	pid        int
	metricsURL string
	http       *http.Client
	redis      doer // one connection, counted in connected_clients
}

// doer runs one Redis command: *redisconn.Client.
type doer interface {
	Do(ctx context.Context, name string, keys []string, args ...string) (any, error)
}

// sampleTimeout bounds each read of a sample.
const sampleTimeout = 2 * time.Second

// read fills s's gauges and returns what could not be read.
func (sm *sampler) read(ctx context.Context, s *sample) []error {
	var errs []error
	s.rssMiB, s.hwmMiB = math.NaN(), math.NaN()
	s.heapMiB, s.goroutines, s.openFDs = math.NaN(), math.NaN(), math.NaN()
	s.redisClients, s.redisMemMiB = math.NaN(), math.NaN()

	if st, err := procStatus(sm.pid, "VmRSS", "VmHWM"); err != nil {
		errs = append(errs, err)
	} else {
		s.rssMiB, s.hwmMiB = st["VmRSS"]/1024, st["VmHWM"]/1024
	}

	if m, err := sm.scrape(ctx, "go_goroutines", "go_memstats_heap_inuse_bytes", "process_open_fds"); err != nil {
		errs = append(errs, err)
	} else {
		s.goroutines, s.heapMiB, s.openFDs = m["go_goroutines"], m["go_memstats_heap_inuse_bytes"]/(1<<20), m["process_open_fds"]
	}

	if info, err := sm.redisInfo(ctx, "connected_clients", "used_memory"); err != nil {
		errs = append(errs, err)
	} else {
		s.redisClients, s.redisMemMiB = info["connected_clients"], info["used_memory"]/(1<<20)
	}
	return errs
}

// procStatus reads fields of /proc/PID/status given in kB, in kB; a missing field is NaN.
func procStatus(pid int, fields ...string) (map[string]float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := make(map[string]float64, len(fields))
	for _, f := range fields {
		out[f] = math.NaN()
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if _, want := out[k]; !ok || !want {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		out[k] = kb
	}
	return out, nil
}

// scrape reads unlabelled gauges from the sidecar's Prometheus text exposition.
func (sm *sampler) scrape(ctx context.Context, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, sm.metricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := sm.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", sm.metricsURL, resp.Status)
	}
	// The exposition is a few hundred lines; 4 MiB bounds a broken one.
	m, err := parseGauges(io.LimitReader(resp.Body, 4<<20), names...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sm.metricsURL, err)
	}
	return m, nil
}

// parseGauges picks the named unlabelled samples ("name value") out of a text exposition. A
// name not found is an error: the sidecar is expected to export every one.
func parseGauges(r io.Reader, names ...string) (map[string]float64, error) {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !want[name] {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("no %s in the exposition", n)
		}
	}
	return out, nil
}

// redisInfo reads numeric fields of INFO clients and memory.
func (sm *sampler) redisInfo(ctx context.Context, fields ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	r, err := sm.redis.Do(ctx, "INFO", nil, "clients", "memory")
	if err != nil {
		return nil, fmt.Errorf("redis INFO: %w", err)
	}
	text, ok := r.(string)
	if !ok {
		return nil, fmt.Errorf("redis INFO: reply %T, want a string", r)
	}
	return parseInfo(text, fields...)
}

// parseInfo picks numeric "field:value" lines out of an INFO reply.
func parseInfo(text string, fields ...string) (map[string]float64, error) {
	out := make(map[string]float64, len(fields))
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		for _, f := range fields {
			if k == f {
				n, err := strconv.ParseFloat(v, 64)
				if err != nil {
					return nil, fmt.Errorf("redis INFO %s: %w", k, err)
				}
				out[k] = n
			}
		}
	}
	for _, f := range fields {
		if _, ok := out[f]; !ok {
			return nil, fmt.Errorf("redis INFO: no %s", f)
		}
	}
	return out, nil
}
