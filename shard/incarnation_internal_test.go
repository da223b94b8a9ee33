package shard

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestTakeIncarnation(t *testing.T) {
	now := time.Unix(0, 1_700_000_000_000_000_000)
	wall := uint64(now.UnixNano())
	tests := []struct {
		name    string
		dir     bool
		file    string // "" for none
		want    uint64 // 0: an error
		persist bool   // the file holds want afterwards
	}{
		{name: "no data directory", want: wall},
		{name: "first start", dir: true, want: wall, persist: true},
		{name: "the clock moved on", dir: true, file: strconv.FormatUint(wall-5, 10) + "\n", want: wall, persist: true},
		{name: "the clock stepped back", dir: true, file: strconv.FormatUint(wall+uint64(time.Hour), 10), want: wall + uint64(time.Hour) + 1, persist: true},
		{name: "the same nanosecond", dir: true, file: strconv.FormatUint(wall, 10), want: wall + 1, persist: true},
		{name: "not a number", dir: true, file: "twelve"},
		{name: "the last incarnation", dir: true, file: strconv.FormatUint(math.MaxUint64, 10)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var dir string
			if tt.dir {
				dir = filepath.Join(t.TempDir(), "data") // created on first use
			}
			if tt.file != "" {
				if err := os.MkdirAll(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, IncarnationFile), []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := takeIncarnation(dir, now)
			switch {
			case tt.want == 0 && err == nil:
				t.Fatalf("takeIncarnation = %d, want an error", got)
			case tt.want == 0:
				t.Logf("error: %v", err)
				return
			case err != nil:
				t.Fatalf("takeIncarnation: %v", err)
			case got != tt.want:
				t.Fatalf("takeIncarnation = %d, want %d", got, tt.want)
			}
			if tt.persist {
				if on, err := readIncarnation(dir); err != nil || on != got {
					t.Fatalf("the file holds %d (%v), want %d", on, err, got)
				}
			}
		})
	}
}

// Every start takes a higher incarnation than the one before, whatever the
// wall clock does, and a raise at run time carries over to the next start.
func TestIncarnationsOnlyGrowAcrossStarts(t *testing.T) {
	dir := t.TempDir()
	clock := time.Unix(0, 1_700_000_000_000_000_000)
	steps := []time.Duration{0, time.Second, -time.Hour, -24 * time.Hour, time.Nanosecond, 48 * time.Hour}
	var last uint64
	for i, step := range steps {
		clock = clock.Add(step)
		inc, err := takeIncarnation(dir, clock)
		if err != nil {
			t.Fatal(err)
		}
		if inc <= last {
			t.Fatalf("start %d (clock stepped %v) took incarnation %d, not above %d", i, step, inc, last)
		}
		last = inc
	}
	if err := raiseIncarnationFile(dir, last+1000); err != nil {
		t.Fatal(err)
	}
	if err := raiseIncarnationFile(dir, last+10); err != nil { // lower: kept as it is
		t.Fatal(err)
	}
	if inc, err := takeIncarnation(dir, clock.Add(-time.Hour)); err != nil || inc != last+1001 {
		t.Fatalf("after a raise to %d, the next start took %d (%v), want %d", last+1000, inc, err, last+1001)
	}
}
