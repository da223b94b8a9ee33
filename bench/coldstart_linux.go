package main

import "syscall"

// tenuredProcAttr has the kernel kill each tenured process with SIGKILL
// when the benchmark ends, even when the benchmark itself is killed with
// SIGKILL and runs none of its cleanup. (The signal follows the thread
// that started the process; Go ends a thread only when a goroutine locked
// to it exits, which the benchmark's goroutines never are.)
func tenuredProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
