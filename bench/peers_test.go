package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a, b   float64
		want   float64
		wantOK bool
	}{
		{name: "tenure faster", a: 640, b: 1000, want: 0.64, wantOK: true},
		{name: "tenure slower", a: 3, b: 1.5, want: 2, wantOK: true},
		{name: "equal", a: 7, b: 7, want: 1, wantOK: true},
		{name: "tenure zero", a: 0, b: 2, want: 0, wantOK: true},
		{name: "etcd zero", a: 2, b: 0, wantOK: false},
		{name: "etcd negative", a: 2, b: -1, wantOK: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ratio(tc.a, tc.b)
			if ok != tc.wantOK || (ok && got != tc.want) {
				t.Fatalf("ratio(%v, %v) = %v, %v; want %v, %v", tc.a, tc.b, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

// etcdLine is a line bench/etcdpeer printed (trimmed of its runs).
const etcdLine = `{"scenario":"etcd","etcd_version":"3.7.3","members":1,"fsync":true,"candidates":5,"elections":1,"ttl_s":1,"granted_ttl_s":1,"election_ms":500,"heartbeat_ms":100,"failover":{"reps":3,"elections_failed_over":3,"p50_ms":1061.285,"p99_ms":1237.939,"max_ms":1237.939,"min_ms":944.905,"runs_ms":[944.905,1061.285,1237.939]},"handoff":{"moves":30,"gap_p50_ms":1.495,"gap_p99_ms":3.925,"gap_max_ms":3.925,"resign_p50_ms":1.359,"resign_p99_ms":3.718,"failed":0,"settled":22,"settle_ms":150,"seed":1}}`

func TestParseEtcdLine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		give    string
		wantErr string // substring; "" for success
	}{
		{name: "etcdpeer's line", give: etcdLine},
		{name: "surrounding blanks", give: "  " + etcdLine + "\n"},
		{name: "unknown fields are ignored", give: strings.Replace(etcdLine, `"members":1`, `"members":1,"new":2`, 1)},
		{name: "a table line", give: "etcd failover p50 936 ms", wantErr: "not JSON"},
		{name: "empty", give: "", wantErr: "not JSON"},
		{name: "cut short", give: etcdLine[:80], wantErr: "JSON line"},
		{name: "another scenario", give: strings.Replace(etcdLine, `"scenario":"etcd"`, `"scenario":"failover"`, 1), wantErr: `"failover"`},
		{name: "no failover", give: `{"scenario":"etcd","handoff":{"moves":1}}`, wantErr: "no failover"},
		{name: "no handoff", give: `{"scenario":"etcd","failover":{"reps":1}}`, wantErr: "no handoff"},
		{name: "zero moves", give: `{"scenario":"etcd","failover":{"reps":1},"handoff":{"moves":0}}`, wantErr: "no handoff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseEtcdLine(tc.give)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseEtcdLine = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.GrantedTTLS != 1 || got.Failover.P99MS != 1237.939 || got.Handoff.GapP50MS != 1.495 || got.Handoff.Settled != 22 {
				t.Fatalf("parsed %+v, failover %+v, handoff %+v", got, *got.Failover, *got.Handoff)
			}
		})
	}
}

func TestCompare(t *testing.T) {
	e, err := parseEtcdLine(etcdLine)
	if err != nil {
		t.Fatal(err)
	}
	ts := tenureSide{
		Failover: failoverResult{P50MS: 1171, P99MS: 1284, MaxMS: 1284},
		Handoff:  handoffResult{GapP50MS: 2.6, GapP99MS: 10.5, GapMaxMS: 13.4},
	}
	e.Handoff.GapMaxMS = 0 // no ratio against a zero
	rows := compare(ts, e)
	want := []struct {
		metric       string
		tenure, etcd float64
		ratio        float64
		ratioAbsent  bool
	}{
		{"failover p50", 1171, 1061.285, 1.103, false},
		{"failover p99", 1284, 1237.939, 1.037, false},
		{"failover max", 1284, 1237.939, 1.037, false},
		{"handoff gap p50", 2.6, 1.495, 1.739, false},
		{"handoff gap p99", 10.5, 3.925, 2.675, false},
		{"handoff gap max", 13.4, 0, 0, true},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for i, w := range want {
		r := rows[i]
		if r.Metric != w.metric || r.Tenure != w.tenure || r.Etcd != w.etcd {
			t.Errorf("row %d = %+v, want %s %v %v", i, r, w.metric, w.tenure, w.etcd)
		}
		switch {
		case w.ratioAbsent && r.Ratio != nil:
			t.Errorf("%s: ratio %v, want none", w.metric, *r.Ratio)
		case !w.ratioAbsent && (r.Ratio == nil || *r.Ratio != w.ratio):
			t.Errorf("%s: ratio %v, want %v", w.metric, r.Ratio, w.ratio)
		}
	}
}

func TestFindEtcdPeer(t *testing.T) {
	root := t.TempDir()
	mod := filepath.Join(root, "bench", "etcdpeer")
	write := func(dir, gomod string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(root, "module github.com/tenurehq/tenure\n\ngo 1.26.8\n")
	write(mod, "// the etcd side\nmodule "+etcdPeerModule+"\n\ngo 1.26.8\n")
	write(filepath.Join(root, "other"), "module example.com/other\n")
	if err := os.MkdirAll(filepath.Join(root, "shard", "deep"), 0o755); err != nil {
		t.Fatal(err)
	}
	lone := t.TempDir()

	for _, tc := range []struct {
		name    string
		start   string
		want    string
		wantErr string
	}{
		{name: "from the module root", start: root, want: mod},
		{name: "from a package below the root", start: filepath.Join(root, "shard", "deep"), want: mod},
		{name: "from bench", start: filepath.Join(root, "bench"), want: mod},
		{name: "from the etcdpeer module itself", start: mod, want: mod},
		{name: "from another module below the root", start: filepath.Join(root, "other"), want: mod},
		{name: "outside the tree", start: lone, wantErr: "no bench/etcdpeer module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findEtcdPeer(tc.start)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("findEtcdPeer(%s) = %q, %v; want an error containing %q", tc.start, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("findEtcdPeer(%s) = %q, %v; want %q", tc.start, got, err, tc.want)
			}
		})
	}
}

// TestEtcdPeerModuleInTree checks that the module the scenario builds is
// where findEtcdPeer looks from this package's directory.
func TestEtcdPeerModuleInTree(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := findEtcdPeer(wd)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "etcdpeer"); dir != want {
		t.Fatalf("found %s, want %s", dir, want)
	}
}

func TestCheckModule(t *testing.T) {
	for _, tc := range []struct {
		name    string
		gomod   string // "" for no go.mod
		wantErr string
	}{
		{name: "etcdpeer", gomod: "module " + etcdPeerModule + "\n"},
		{name: "quoted path", gomod: `module "` + etcdPeerModule + `"` + "\n"},
		{name: "another module", gomod: "module github.com/tenurehq/tenure\n", wantErr: "want " + etcdPeerModule},
		{name: "no module line", gomod: "go 1.26.8\n", wantErr: "names no module"},
		{name: "no go.mod", wantErr: "go.mod"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.gomod != "" {
				if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(tc.gomod), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			err := checkModule(dir, etcdPeerModule)
			if tc.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkModule = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestPeersFlags checks that bad flags fail at once, before anything is
// built or started, with an error naming the flag.
func TestPeersFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		give    []string
		wantErr string
	}{
		{name: "no reps", give: []string{"-reps", "0"}, wantErr: "-reps"},
		{name: "no moves", give: []string{"-moves", "0"}, wantErr: "-moves"},
		{name: "negative candidates", give: []string{"-candidates", "-1"}, wantErr: "-candidates"},
		{name: "negative ttl", give: []string{"-ttl", "-1"}, wantErr: "-ttl"},
		{name: "no elections", give: []string{"-elections", "0"}, wantErr: "-elections"},
		{name: "negative settle", give: []string{"-settle", "-1ms"}, wantErr: "-settle"},
		{name: "one node", give: []string{"-nodes", "1"}, wantErr: "-nodes"},
		{name: "unknown profile", give: []string{"-profile", "moon"}, wantErr: "moon"},
		{name: "stray argument", give: []string{"failover"}, wantErr: `"failover"`},
		{name: "unknown flag", give: []string{"-members", "3"}, wantErr: "-members"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			err := runPeers(tc.give, &out)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("runPeers(%q) = %v, want an error naming %s", tc.give, err, tc.wantErr)
			}
			if strings.Contains(out.String(), "building") {
				t.Fatalf("runPeers(%q) went on to build the etcd side:\n%s", tc.give, out.String())
			}
		})
	}
}
