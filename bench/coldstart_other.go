//go:build !linux

package main

import "syscall"

// tenuredProcAttr: outside Linux there is no parent-death signal, and a
// benchmark killed with SIGKILL leaves its tenured processes running.
func tenuredProcAttr() *syscall.SysProcAttr { return nil }
