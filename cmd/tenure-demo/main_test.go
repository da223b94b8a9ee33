package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDemoNarratesLeadersFailoverAndLeave(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"-nodes", "4", "-shards", "128"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, want := range []string{
		"Every shard has exactly one leader, its desired owner",
		"Killing node-4",
		"each at a higher epoch",
		"Handing shard",
		"nobody led it for",
		"node-3 drains",
		"led elsewhere",
		"leases that ended without a handoff",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestDemoRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"too few nodes", []string{"-nodes", "3"}, "-nodes"},
		{"fewer shards than nodes", []string{"-shards", "2"}, "-shards"},
		{"unknown profile", []string{"-profile", "fast"}, "unknown profile"},
		{"short lease", []string{"-lease", "10ms"}, "-lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.args, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%v) = %v, want an error naming %q", tt.args, err, tt.want)
			}
		})
	}
}
