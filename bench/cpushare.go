package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuSample is the machine's CPU counters and load at one instant, read
// from /proc; ok is false where /proc is not available.
type cpuSample struct {
	ok    bool
	total uint64  // every state of every CPU, in clock ticks
	steal uint64  // time the hypervisor ran other guests on this guest's CPUs
	load  float64 // 1-minute load average
}

// cpuShare is what else happened on the machine between two samples.
type cpuShare struct {
	ok    bool
	load  float64 // 1-minute load average at the first sample
	steal float64 // share of CPU time stolen by the hypervisor, 0–1
}

func readCPU() cpuSample {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	total, steal, ok := parseCPULine(line)
	if !ok {
		return s
	}
	lb, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return s
	}
	first, _, _ := strings.Cut(string(lb), " ")
	load, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return s
	}
	return cpuSample{ok: true, total: total, steal: steal, load: load}
}

// parseCPULine reads the aggregate line of /proc/stat: "cpu" then user,
// nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice. Guest
// time is already counted in user and nice, so the total leaves it out.
func parseCPULine(line string) (total, steal uint64, ok bool) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range f[1:] {
		if i >= 8 {
			break
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += n
		if i == 7 {
			steal = n
		}
	}
	return total, steal, true
}

func (a cpuSample) until(b cpuSample) cpuShare {
	if !a.ok || !b.ok || b.total <= a.total || b.steal < a.steal {
		return cpuShare{}
	}
	return cpuShare{ok: true, load: a.load, steal: float64(b.steal-a.steal) / float64(b.total-a.total)}
}

func (c cpuShare) loadText() string {
	if !c.ok {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", c.load)
}

func (c cpuShare) stealText() string {
	if !c.ok {
		return "n/a"
	}
	return fmt.Sprintf("%.1f %%", 100*c.steal)
}
