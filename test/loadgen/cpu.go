package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is a constant rather
// than a sysconf(_SC_CLK_TCK) call because that needs cgo, and it is 100 on every Linux
// architecture Go supports (what `getconf CLK_TCK` prints). One tick is 10ms, so CPU per request
// is only as precise as the number of ticks a phase accumulates: 100 ticks or more keeps the
// error to a percent.
const clockTicks = 100

// watchedProcess is a process whose CPU time is reported per request.
type watchedProcess struct {
	name string
	pid  int
}

// parsePIDs parses "name=pid,name2=pid2"; a pid of "self" is the load generator itself, whose
// CPU competes with the server's on a small machine.
func parsePIDs(s string) ([]watchedProcess, error) {
	var ps []watchedProcess
	if s == "" {
		return nil, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		name, pidText, ok := strings.Cut(item, "=")
		if !ok || name == "" || strings.ContainsAny(name, " []=") {
			return nil, fmt.Errorf("-pids item %q: want name=pid", item)
		}
		if seen[name] {
			return nil, fmt.Errorf("-pids: name %q given twice", name)
		}
		seen[name] = true
		pid := os.Getpid()
		if pidText != "self" {
			var err error
			if pid, err = strconv.Atoi(pidText); err != nil || pid <= 0 {
				return nil, fmt.Errorf("-pids item %q: pid must be a positive number or self", item)
			}
		}
		ps = append(ps, watchedProcess{name: name, pid: pid})
	}
	return ps, nil
}

// cpuTime reads the user plus system CPU time a process has used so far, all threads included.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name in field 2 may contain spaces and parentheses, so fields are counted
	// from the last ')': what follows starts at field 3 (state), making utime (field 14) and
	// stime (field 15) the 12th and 13th.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime %q or stime %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// cpuSnapshot reads every watched process; a process that cannot be read gets -1, so the
// report can say so instead of failing the whole run.
func cpuSnapshot(ps []watchedProcess) []time.Duration {
	out := make([]time.Duration, len(ps))
	for i, p := range ps {
		d, err := cpuTime(p.pid)
		if err != nil {
			d = -1
		}
		out[i] = d
	}
	return out
}
