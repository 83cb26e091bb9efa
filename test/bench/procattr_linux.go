package main

import "syscall"

// childAttr puts each child in its own process group, so a terminal's Ctrl-C reaches only the
// orchestrator, which then stops the children in order, and asks the kernel to send SIGTERM to
// the child should the orchestrator die without stopping it (kill -9 included), so nothing is
// left running either way.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
