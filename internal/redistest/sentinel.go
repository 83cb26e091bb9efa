package redistest

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Sentinel is a Redis Sentinel topology on loopback ports: a master, one replica and three
// sentinels (quorum 2) that fail over about two to four seconds after the master dies.
type Sentinel struct {
	t                testing.TB
	name             string
	password         string
	sentinelPassword string
	data             []*Server // the first master, then its replica
	sentinels        []*Server
	pids             []int

	mu       sync.Mutex
	paused   *Server
	old      string    // the master that KillMaster or PauseMaster took away
	downedAt time.Time // when it did
}

// sentinelMaster is the name the sentinels monitor the master under.
const sentinelMaster = "extauthz"

// StartSentinel starts the topology in the test's temporary directory and returns once the
// replica is in sync and every sentinel sees the master, the replica and the two other
// sentinels. Every process is stopped in t.Cleanup (a paused one is continued first). The
// test is skipped when redis-server or redis-cli is missing, except under CI.
func StartSentinel(t testing.TB, opts ...Option) *Sentinel {
	t.Helper()
	requireTools(t)
	o := buildOptions(opts)
	began := time.Now()
	dir := t.TempDir()
	used := map[int]bool{}
	s := &Sentinel{t: t, name: sentinelMaster, password: o.password, sentinelPassword: o.sentinelPassword}

	dataArgs := func([]int) []string { return o.dataArgs() }
	master := startFresh(t, dir, o.password, "", used, 1, dataArgs)
	replica := startFresh(t, dir, o.password, "", used, 1, func([]int) []string {
		return append(o.dataArgs(), "--replicaof", "127.0.0.1", strconv.Itoa(master.Port()))
	})
	s.data = []*Server{master, replica}
	if err := poll(20*time.Second, 20*time.Millisecond, func() error { return s.replicaSynced(replica) }); err != nil {
		t.Fatalf("redistest: replica %s did not sync with %s: %v\n%s", replica.Addr(), master.Addr(), err, replica.logTail())
	}

	for i := 0; i < 3; i++ {
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		if err := os.WriteFile(conf, []byte(s.sentinelConf(master.Port())), 0o600); err != nil {
			t.Fatalf("redistest: write %s: %v", conf, err)
		}
		s.sentinels = append(s.sentinels, startFresh(t, dir, o.sentinelPassword, conf, used, 1, func([]int) []string { return []string{"--sentinel"} }))
	}
	for _, n := range append(append([]*Server{}, s.data...), s.sentinels...) {
		s.pids = append(s.pids, n.PID())
	}
	if err := poll(30*time.Second, 50*time.Millisecond, s.sentinelsAgree); err != nil {
		t.Fatalf("redistest: the sentinels did not discover the topology: %v", err)
	}
	// Cleanups run last-registered first, so a paused master is continued before the
	// servers' Stop.
	t.Cleanup(s.resume)
	t.Logf("redistest: sentinel topology (master %s, replica %s, sentinels %s) ready in %v",
		master.Addr(), replica.Addr(), strings.Join(s.SentinelAddrs(), ","), time.Since(began).Round(time.Millisecond))
	return s
}

// sentinelConf is the configuration file of one sentinel. Passwords are quoted the way Go
// quotes strings, which redis-server reads alike for printable ASCII.
func (s *Sentinel) sentinelConf(masterPort int) string {
	var b strings.Builder
	b.WriteString("sentinel resolve-hostnames no\n")
	fmt.Fprintf(&b, "sentinel monitor %s 127.0.0.1 %d 2\n", s.name, masterPort)
	fmt.Fprintf(&b, "sentinel down-after-milliseconds %s 1000\n", s.name)
	fmt.Fprintf(&b, "sentinel failover-timeout %s 3000\n", s.name)
	fmt.Fprintf(&b, "sentinel parallel-syncs %s 1\n", s.name)
	if s.password != "" {
		fmt.Fprintf(&b, "sentinel auth-pass %s %q\n", s.name, s.password)
	}
	if s.sentinelPassword != "" {
		fmt.Fprintf(&b, "requirepass %q\n", s.sentinelPassword)
	}
	return b.String()
}

func (s *Sentinel) replicaSynced(replica *Server) error {
	info, err := askString(replica.Addr(), s.password, "INFO", "replication")
	if err != nil {
		return err
	}
	if v := infoField(info, "master_link_status"); v != "up" {
		return fmt.Errorf("master_link_status %q", v)
	}
	return nil
}

// sentinelsAgree checks that every sentinel sees the first master, a healthy replica and the
// two other sentinels.
func (s *Sentinel) sentinelsAgree() error {
	want := s.data[0].Addr()
	for _, sn := range s.sentinels {
		addr, err := s.askMasterAddr(sn.Addr())
		if err != nil {
			return err
		}
		if addr != want {
			return fmt.Errorf("sentinel %s: master %s, want %s", sn.Addr(), addr, want)
		}
		r, err := ask(sn.Addr(), s.sentinelPassword, "SENTINEL", "REPLICAS", s.name)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
		}
		reps, _ := r.([]any)
		if len(reps) != 1 || pairs(reps[0])["flags"] != "slave" || pairs(reps[0])["master-link-status"] != "ok" {
			return fmt.Errorf("sentinel %s: replicas %v", sn.Addr(), r)
		}
		r, err = ask(sn.Addr(), s.sentinelPassword, "SENTINEL", "SENTINELS", s.name)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
		}
		if peers, _ := r.([]any); len(peers) != len(s.sentinels)-1 {
			return fmt.Errorf("sentinel %s: sees %d other sentinels, want %d", sn.Addr(), len(peers), len(s.sentinels)-1)
		}
	}
	return nil
}

func (s *Sentinel) askMasterAddr(sentinel string) (string, error) {
	r, err := ask(sentinel, s.sentinelPassword, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.name)
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sentinel, err)
	}
	a, _ := r.([]any)
	if len(a) != 2 {
		return "", fmt.Errorf("sentinel %s: GET-MASTER-ADDR-BY-NAME = %v", sentinel, r)
	}
	host, _ := a[0].(string)
	port, _ := a[1].(string)
	return net.JoinHostPort(host, port), nil
}

// MasterName is the name the sentinels monitor the master under.
func (s *Sentinel) MasterName() string { return s.name }

// SentinelAddrs are host:port of the three sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// DataAddrs are host:port of the two data nodes, the first master first.
func (s *Sentinel) DataAddrs() []string {
	return []string{s.data[0].Addr(), s.data[1].Addr()}
}

// MasterAddr asks the sentinels (the first that answers) for the current master. It must be
// called from the test's goroutine.
func (s *Sentinel) MasterAddr() string {
	s.t.Helper()
	var errs []error
	for _, sn := range s.sentinels {
		addr, err := s.askMasterAddr(sn.Addr())
		if err == nil {
			return addr
		}
		errs = append(errs, err)
	}
	s.t.Fatalf("redistest: no sentinel named the master: %v", errors.Join(errs...))
	return ""
}

// ReplicaAddrs asks a sentinel for the replicas it does not consider down.
func (s *Sentinel) ReplicaAddrs() []string {
	s.t.Helper()
	r, err := ask(s.sentinels[0].Addr(), s.sentinelPassword, "SENTINEL", "REPLICAS", s.name)
	if err != nil {
		s.t.Fatalf("redistest: SENTINEL REPLICAS: %v", err)
	}
	var addrs []string
	reps, _ := r.([]any)
	for _, rep := range reps {
		m := pairs(rep)
		if !strings.Contains(m["flags"], "down") && !strings.Contains(m["flags"], "disconnected") {
			addrs = append(addrs, net.JoinHostPort(m["ip"], m["port"]))
		}
	}
	return addrs
}

// URL is the redis-sentinel:// URL of database db, with the password of the data nodes as
// userinfo and the sentinels' password as sentinel_password when they are set.
func (s *Sentinel) URL(db int) string {
	u := "redis-sentinel://"
	if s.password != "" {
		u += url.UserPassword("", s.password).String() + "@"
	}
	u += strings.Join(s.SentinelAddrs(), ",") + "/" + s.name + "/" + strconv.Itoa(db)
	if s.sentinelPassword != "" {
		u += "?sentinel_password=" + url.QueryEscape(s.sentinelPassword)
	}
	return u
}

// Password is the data nodes' password ("" when there is none).
func (s *Sentinel) Password() string { return s.password }

// SentinelPassword is the sentinels' password ("" when there is none).
func (s *Sentinel) SentinelPassword() string { return s.sentinelPassword }

// PIDs are the process ids of every process the topology started.
func (s *Sentinel) PIDs() []int { return append([]int(nil), s.pids...) }

// Node returns the data node or sentinel at addr, or nil, for Do, Restart and friends.
func (s *Sentinel) Node(addr string) *Server {
	for _, n := range append(append([]*Server{}, s.data...), s.sentinels...) {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// currentMaster is the data node the sentinels name as master.
func (s *Sentinel) currentMaster() *Server {
	s.t.Helper()
	addr := s.MasterAddr()
	n := s.Node(addr)
	if n == nil {
		s.t.Fatalf("redistest: the sentinels name %s, which is not one of the data nodes", addr)
	}
	return n
}

// KillMaster sends SIGKILL to the current master, waits for it to exit and returns its
// address. WaitFailover measures from this moment.
func (s *Sentinel) KillMaster() string {
	s.t.Helper()
	m := s.currentMaster()
	s.mu.Lock()
	s.old, s.downedAt = m.Addr(), time.Now()
	s.mu.Unlock()
	m.Stop()
	return m.Addr()
}

// PauseMaster sends SIGSTOP to the current master: its connections stay open and nothing
// answers. WaitFailover measures from this moment; ResumeMaster undoes it.
func (s *Sentinel) PauseMaster() string {
	s.t.Helper()
	m := s.currentMaster()
	s.mu.Lock()
	if s.paused != nil {
		s.mu.Unlock()
		s.t.Fatalf("redistest: %s is already paused", s.paused.Addr())
	}
	s.paused, s.old, s.downedAt = m, m.Addr(), time.Now()
	s.mu.Unlock()
	m.Pause()
	return m.Addr()
}

// ResumeMaster sends SIGCONT to the node PauseMaster stopped. Once the sentinels have
// failed over, it comes back as a replica of the new master.
func (s *Sentinel) ResumeMaster() {
	s.t.Helper()
	s.mu.Lock()
	p := s.paused
	s.paused = nil
	s.mu.Unlock()
	if p == nil {
		s.t.Fatal("redistest: ResumeMaster without PauseMaster")
	}
	p.Resume()
}

func (s *Sentinel) resume() {
	s.mu.Lock()
	p := s.paused
	s.paused = nil
	s.mu.Unlock()
	if p != nil && p.Running() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// WaitFailover waits until every sentinel names a new master in place of the one KillMaster
// or PauseMaster took away, and that node answers ROLE as a master. It returns the new
// master and the time since the old one was taken away. It is safe to call from any
// goroutine.
func (s *Sentinel) WaitFailover(timeout time.Duration) (string, time.Duration, error) {
	s.mu.Lock()
	old, since := s.old, s.downedAt
	s.mu.Unlock()
	if old == "" {
		return "", 0, errors.New("redistest: WaitFailover before KillMaster or PauseMaster")
	}
	var newMaster string
	err := poll(timeout, 20*time.Millisecond, func() error {
		addr := ""
		for _, sn := range s.sentinels {
			a, err := s.askMasterAddr(sn.Addr())
			if err != nil {
				return err
			}
			if a == old {
				return fmt.Errorf("sentinel %s still names %s", sn.Addr(), old)
			}
			if addr != "" && a != addr {
				return fmt.Errorf("the sentinels disagree: %s and %s", addr, a)
			}
			addr = a
		}
		r, err := ask(addr, s.password, "ROLE")
		if err != nil {
			return fmt.Errorf("new master %s: %w", addr, err)
		}
		if role, _ := r.([]any); len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("new master %s: ROLE %v", addr, r)
		}
		newMaster = addr
		return nil
	})
	took := time.Since(since)
	if err != nil {
		return "", took, fmt.Errorf("redistest: no failover from %s: %w", old, err)
	}
	return newMaster, took, nil
}
