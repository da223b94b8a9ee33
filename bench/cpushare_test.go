package main

import (
	"math"
	"os"
	"testing"
)

func TestParseCPULine(t *testing.T) {
	tests := []struct {
		name      string
		line      string
		wantTotal uint64
		wantSteal uint64
		wantOK    bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice:
		// guest time is inside user and nice, so it is not added again.
		{"with guest fields", "cpu  100 2 30 800 5 1 2 60 40 0", 1000, 60, true},
		{"no guest fields", "cpu 10 0 10 70 0 0 0 10", 100, 10, true},
		{"a single CPU's line", "cpu0 100 2 30 800 5 1 2 60 0 0", 0, 0, false},
		{"too few fields", "cpu 1 2 3", 0, 0, false},
		{"not a number", "cpu 1 2 3 4 5 6 7 x", 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			total, steal, ok := parseCPULine(tt.line)
			if total != tt.wantTotal || steal != tt.wantSteal || ok != tt.wantOK {
				t.Errorf("parseCPULine(%q) = %d, %d, %v; want %d, %d, %v", tt.line, total, steal, ok, tt.wantTotal, tt.wantSteal, tt.wantOK)
			}
		})
	}
}

func TestCPUShare(t *testing.T) {
	a := cpuSample{ok: true, total: 1000, steal: 10, load: 1.5}
	b := cpuSample{ok: true, total: 3000, steal: 210, load: 3}
	got := a.until(b)
	if !got.ok || got.load != 1.5 || math.Abs(got.steal-0.1) > 1e-9 {
		t.Fatalf("until = %+v, want load 1.5 (the first sample's) and steal 0.1", got)
	}
	if got.loadText() != "1.50" || got.stealText() != "10.0 %" {
		t.Errorf("texts = %q, %q", got.loadText(), got.stealText())
	}
	for name, c := range map[string]cpuShare{
		"first sample missing": cpuSample{}.until(b),
		"counters went back":   b.until(a),
	} {
		if c.ok || c.loadText() != "n/a" || c.stealText() != "n/a" {
			t.Errorf("%s: %+v, want n/a", name, c)
		}
	}
	// Where /proc exists (Linux, CI), the report must be able to read it.
	if _, err := os.Stat("/proc/stat"); err == nil && !readCPU().ok {
		t.Error("readCPU could not read /proc/stat and /proc/loadavg")
	}
}
