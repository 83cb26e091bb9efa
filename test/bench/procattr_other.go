//go:build !linux

package main

import "syscall"

// childAttr leaves children in the orchestrator's process group elsewhere than Linux: the
// benchmark reads /proc and is meant for Linux, and this only keeps the package compiling.
func childAttr() *syscall.SysProcAttr { return nil }
