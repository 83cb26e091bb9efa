package main

import (
	"errors"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redisurl"
)

// Each topology starts, serves its URL to the sidecar's own client, routes the harness's
// commands to the right master, and leaves no process behind once stopped.
func TestTopologies(t *testing.T) {
	for _, tool := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: %v", tool, err)
		}
	}
	cases := []struct {
		kind      string
		topology  redisurl.Topology
		nodes     int // processes
		masters   int
		pidFields int // loadgen -pids items
	}{
		{topoPlain, redisurl.Single, 1, 1, 1},
		{topoSentinel, redisurl.Sentinel, 5, 1, 2},
		{topoCluster, redisurl.Cluster, 6, 3, 6},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			ctx := t.Context()
			topo, err := startTopology(ctx, tc.kind, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			procs := topo.procs()
			stopped := false
			t.Cleanup(func() {
				if !stopped {
					stopAll(procs)
				}
			})
			if len(procs) != tc.nodes || len(topo.masters) != tc.masters {
				t.Fatalf("%d processes and %d masters, want %d and %d", len(procs), len(topo.masters), tc.nodes, tc.masters)
			}
			u, err := redisurl.Parse(topo.url())
			if err != nil {
				t.Fatalf("url %s: %v", topo.url(), err)
			}
			if u.Topology != tc.topology {
				t.Fatalf("url %s is a %v, want %v", topo.url(), u.Topology, tc.topology)
			}
			if n := len(splitPIDs(topo.pids())); n != tc.pidFields {
				t.Fatalf("pids %q: %d items, want %d", topo.pids(), n, tc.pidFields)
			}

			// The harness's RESP: the script on every master, a key on the master that owns it.
			sha, err := topo.eachMaster(ctx, "SCRIPT", "LOAD", incrScript)
			if err != nil || len(sha.(string)) != 40 {
				t.Fatalf("SCRIPT LOAD = %v, %v", sha, err)
			}
			for i := range 20 { // keys in several slots, so a cluster redirects some
				key := "bench:" + strconv.Itoa(i)
				if _, err := topo.do(ctx, "SET", key, "v"+strconv.Itoa(i)); err != nil {
					t.Fatalf("SET %s: %v", key, err)
				}
				if got, err := topo.do(ctx, "EVALSHA", sha.(string), "1", key+":n"); err != nil || got != int64(1) {
					t.Fatalf("EVALSHA on %s = %v, %v; want 1", key, got, err)
				}
			}

			// The sidecar's client reads them back through the URL.
			rc, err := dialRedis(ctx, topo.url())
			if err != nil {
				t.Fatalf("redisconn on %s: %v", topo.url(), err)
			}
			defer rc.Close()
			for i := range 20 {
				key := "bench:" + strconv.Itoa(i)
				got, err := rc.Do(ctx, "GET", []string{key})
				if err != nil || got != "v"+strconv.Itoa(i) {
					t.Fatalf("GET %s through redisconn = %v, %v", key, got, err)
				}
			}
			rc.Close()

			var pids []int
			for _, p := range procs {
				pids = append(pids, p.pid())
			}
			stopAll(procs)
			stopped = true
			for _, pid := range pids {
				// The process is reaped by stop, so its pid is gone (or, rarely, reused).
				deadline := time.Now().Add(5 * time.Second)
				for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
					time.Sleep(20 * time.Millisecond)
				}
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Errorf("pid %d still there after stop: %v", pid, err)
				}
			}
		})
	}
}

func TestStartTopologyRefusesUnknownKind(t *testing.T) {
	if _, err := startTopology(t.Context(), "ring", t.TempDir()); err == nil {
		t.Fatal("no error for -topology ring")
	}
	if err := run(t.Context(), []string{"-mode", "quick", "-topology", "ring"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), `-topology "ring"`) {
		t.Fatalf("run -topology ring: err = %v", err)
	}
	if err := run(t.Context(), []string{"-mode", "soak", "-topology", "cluster"}, io.Discard, io.Discard); err == nil ||
		!strings.Contains(err.Error(), "plain only") {
		t.Fatalf("run -mode soak -topology cluster: err = %v", err)
	}
}

func splitPIDs(s string) []string { return strings.Split(s, ",") }
