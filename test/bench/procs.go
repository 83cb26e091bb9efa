package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a long-lived child process (redis-server, the sidecar, the null server) that the
// orchestrator must stop before it exits.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, valid once done is closed
	log  string        // file holding its stdout and stderr
}

// startProc starts bin with its output in dir/name.log. stdout, if not nil, receives the
// process's standard output instead of the log (the null server announces its address there).
func startProc(dir, name, bin string, stdout io.Writer, args ...string) (*proc, error) {
	return startProcEnv(dir, name, bin, nil, stdout, args...)
}

// startProcEnv is startProc with extra environment variables ("NAME=value") on top of the
// bench's own.
func startProcEnv(dir, name, bin string, env []string, stdout io.Writer, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has already ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stopGrace is how long a child gets to exit after SIGTERM before it is killed.
const stopGrace = 15 * time.Second

// stop sends SIGTERM, waits up to stopGrace, then kills. It is safe to call more than once.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// logTail is the end of the process's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// freePort asks the kernel for an unused loopback port. Another process could take it before
// the child binds it; on a benchmark machine that is rare enough to report rather than retry.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitUntil polls ready every 50ms until it returns nil, p exits, or timeout passes.
func waitUntil(ctx context.Context, p *proc, timeout time.Duration, ready func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, p.logTail())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %v\n%s", p.name, timeout, err, p.logTail())
		case <-t.C:
		}
	}
}

// httpReady is a readiness check that wants 200 from url.
func httpReady(url string) func() error {
	c := &http.Client{Timeout: time.Second}
	return func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// startNullServer starts the null server on a kernel-chosen port and returns it with the
// address it announced.
func startNullServer(ctx context.Context, dir, bin string) (*proc, string, error) {
	pr, pw := io.Pipe()
	p, err := startProc(dir, "nullserver", bin, pw, "-addr", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addrc <- a
				break
			}
		}
		// Keep draining so the server never blocks on a full pipe.
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		<-p.done
		pw.Close()
	}()
	select {
	case a := <-addrc:
		return p, a, nil
	case <-p.done:
		return p, "", fmt.Errorf("nullserver exited (%v):\n%s", p.err, p.logTail())
	case <-time.After(10 * time.Second):
		return p, "", errors.New("nullserver did not announce its address within 10s")
	case <-ctx.Done():
		return p, "", ctx.Err()
	}
}

// runBounded runs a short-lived command (loadgen, redis-benchmark, redis-cli) and returns its
// standard output and standard error. It is interrupted with SIGINT when ctx ends or timeout
// passes, and killed 5s later, so no run outlives its budget.
func runBounded(ctx context.Context, timeout time.Duration, bin string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGINT) }
	cmd.WaitDelay = 5 * time.Second
	var errBuf strings.Builder
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	stdout, stderr = string(out), strings.TrimSpace(errBuf.String())
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
		}
		return stdout, stderr, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, stderr)
	}
	return stdout, stderr, nil
}

// shellQuote renders a command for the report so it can be pasted into a shell.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'$`\\*?[]{}()<>|&;#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
