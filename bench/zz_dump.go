package main

import (
	"os"
	"runtime/pprof"
)

func dumpGoroutines() {
	f, _ := os.Create("/tmp/goroutines.txt")
	pprof.Lookup("goroutine").WriteTo(f, 2)
	f.Close()
}
