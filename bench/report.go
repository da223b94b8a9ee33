package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// quickRuns are the scenarios `go run ./bench all` runs, in order, with the
// sizes that keep the whole report to a few minutes on a small machine.
// Each entry's flags are exactly what is printed as its command.
var quickRuns = []quickRun{
	{"lookup", nil},
	{"rebalance", []string{"-nodes", "10", "-shards", "4096"}},
	{"grpc", []string{"-duration", "2s", "-unary", "5000"}},
	{"failover", []string{"-reps", "10"}},
	{"detect", []string{"-reps", "5"}},
	{"handoff", []string{"-moves", "200"}},
	{"rolling", nil},
	{"peers", []string{"-reps", "5", "-moves", "50"}},
	{"scale", []string{"-nodes", "10,100,1000", "-shards", "4096"}},
}

type quickRun struct {
	name string
	args []string
}

// runRecord is one scenario's outcome in a report.
type runRecord struct {
	name    string
	command string
	text    string         // the human-readable output, without the JSON line
	summary map[string]any // the JSON line; nil when the run failed
	took    time.Duration
	err     error
	plots   []string // file names under the plot directory
	cpu     cpuShare // what else the machine did while the scenario ran
}

// runAll runs every scenario at its quick size and writes a Markdown
// report with the figures, the machine, the exact commands and SVG plots
// of every latency distribution the scenarios return.
func runAll(args []string, out io.Writer) error {
	fs := flags("all")
	dir := fs.String("out", "bench", "directory of RESULTS.md; plots go to its plots/ subdirectory")
	only := fs.String("only", "", "comma-separated scenarios to run instead of all of them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	runs := quickRuns
	if *only != "" {
		runs = nil
		for _, name := range strings.Split(*only, ",") {
			i := slices.IndexFunc(quickRuns, func(r quickRun) bool { return r.name == name })
			if i < 0 {
				return fmt.Errorf("-only: no scenario %q in the report (have %s)", name, quickNames())
			}
			runs = append(runs, quickRuns[i])
		}
	}
	plotDir := filepath.Join(*dir, "plots")
	if err := os.MkdirAll(plotDir, 0o755); err != nil {
		return err
	}
	// Read before the run writes its plots, which would mark the
	// checkout dirty.
	machine := machineLines()
	began := time.Now()
	var recs []*runRecord
	failed := 0
	for _, r := range runs {
		sc, ok := scenarios[r.name]
		if !ok {
			return fmt.Errorf("report lists unknown scenario %q", r.name)
		}
		argv := append(slices.Clone(r.args), "-json")
		rec := &runRecord{name: r.name, command: strings.Join(append([]string{"go run ./bench", r.name}, argv...), " ")}
		fmt.Fprintf(out, "\n== %s\n", rec.command)
		var buf bytes.Buffer
		before := readCPU()
		start := time.Now()
		rec.err = sc.run(argv, io.MultiWriter(out, &buf))
		rec.took = time.Since(start)
		rec.cpu = before.until(readCPU())
		rec.text, rec.summary = splitSummary(buf.String())
		if rec.err == nil && rec.summary == nil {
			rec.err = errors.New("printed no JSON summary")
		}
		if rec.err != nil {
			failed++
			fmt.Fprintf(out, "%s: %v\n", r.name, rec.err)
		} else if rec.plots, rec.err = plotRecord(plotDir, rec); rec.err != nil {
			failed++
		}
		recs = append(recs, rec)
	}
	path := filepath.Join(*dir, "RESULTS.md")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	writeReport(f, machine, recs, time.Since(began))
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s (%d scenarios, %d failed) in %v\n", path, len(recs), failed, time.Since(began).Round(time.Second))
	if failed > 0 {
		return fmt.Errorf("%d of %d scenarios failed; see %s", failed, len(recs), path)
	}
	return nil
}

func quickNames() string {
	var ns []string
	for _, r := range quickRuns {
		ns = append(ns, r.name)
	}
	return strings.Join(ns, ", ")
}

// splitSummary separates a scenario's output into its text and its last
// line parsed as a JSON object (nil if it is not one).
func splitSummary(output string) (string, map[string]any) {
	trimmed := strings.TrimRight(output, "\n")
	i := strings.LastIndexByte(trimmed, '\n')
	last := trimmed[i+1:]
	var m map[string]any
	if err := json.Unmarshal([]byte(last), &m); err != nil {
		return output, nil
	}
	return trimmed[:i+1], m
}

// distributions returns the summary's latency samples grouped by unit: every
// field, at any depth, that is an array of at least 5 numbers and whose name
// ends in _ms or _us. A nested sample is named by its path ("etcd failover
// runs"); names are sorted so that a report is stable.
func distributions(summary map[string]any) map[string][]series {
	byUnit := map[string][]series{}
	collectSamples(summary, "", byUnit)
	return byUnit
}

func collectSamples(obj map[string]any, prefix string, byUnit map[string][]series) {
	var keys []string
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if sub, ok := obj[k].(map[string]any); ok {
			collectSamples(sub, prefix+k+" ", byUnit)
			continue
		}
		unit := ""
		switch {
		case strings.HasSuffix(k, "_ms"):
			unit = "ms"
		case strings.HasSuffix(k, "_us"):
			unit = "µs"
		default:
			continue
		}
		arr, ok := obj[k].([]any)
		if !ok || len(arr) < 5 {
			continue
		}
		var vs []float64
		for _, v := range arr {
			if f, ok := v.(float64); ok {
				vs = append(vs, f)
			}
		}
		if len(vs) == len(arr) {
			name := prefix + strings.TrimSuffix(strings.TrimSuffix(k, "_ms"), "_us")
			byUnit[unit] = append(byUnit[unit], series{strings.ReplaceAll(name, "_", " "), vs})
		}
	}
}

// plotRecord writes one CDF plot per unit of the run's distributions and
// returns their file names.
func plotRecord(dir string, rec *runRecord) ([]string, error) {
	var names []string
	byUnit := distributions(rec.summary)
	units := make([]string, 0, len(byUnit))
	for u := range byUnit {
		units = append(units, u)
	}
	slices.Sort(units)
	for _, unit := range units {
		suffix := map[string]string{"ms": "ms", "µs": "us"}[unit]
		name := fmt.Sprintf("%s-%s.svg", rec.name, suffix)
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return names, err
		}
		werr := writeCDF(f, fmt.Sprintf("%s: cumulative distribution", rec.name), unit, byUnit[unit])
		if err := errors.Join(werr, f.Close()); err != nil {
			return names, err
		}
		names = append(names, name)
	}
	return names, nil
}

// writeReport writes the Markdown report of recs.
func writeReport(w io.Writer, machine []string, recs []*runRecord, took time.Duration) {
	fmt.Fprintln(w, "# Benchmark results")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Written by `make bench` (`go run ./bench all`): every scenario at its quick size, one after")
	fmt.Fprintln(w, "another on this machine. Each section gives the exact command; run it alone, or with larger")
	fmt.Fprintln(w, "flags (`go run ./bench <scenario> -h`), to reproduce or extend a figure. The plots are")
	fmt.Fprintln(w, "cumulative distributions of every latency sample a scenario returns.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Machine")
	fmt.Fprintln(w)
	for _, l := range machine {
		fmt.Fprintf(w, "- %s\n", l)
	}
	fmt.Fprintf(w, "- whole run: %v\n", took.Round(time.Second))
	fmt.Fprintln(w)
	fmt.Fprintln(w, "## Summary")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| scenario | took | load at start | CPU stolen | key figures |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, r := range recs {
		fig := keyFigures(r)
		if r.err != nil {
			fig = "FAILED: " + r.err.Error()
		}
		fmt.Fprintf(w, "| [%s](#%s) | %v | %s | %s | %s |\n", r.name, r.name, roundTook(r.took), r.cpu.loadText(), r.cpu.stealText(), fig)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Load at start is the 1-minute load average when the scenario began (2 cores: above 2, work")
	fmt.Fprintln(w, "was waiting for a CPU). CPU stolen is the share of CPU time the hypervisor gave to other")
	fmt.Fprintln(w, "guests while the scenario ran; latencies and ns/op grow with both, ratios measured in one")
	fmt.Fprintln(w, "scenario much less.")
	for _, r := range recs {
		fmt.Fprintf(w, "\n## %s\n\n", r.name)
		fmt.Fprintf(w, "`%s` — %s; took %v.\n\n", r.command, scenarios[r.name].about, roundTook(r.took))
		if r.err != nil {
			fmt.Fprintf(w, "**FAILED:** %s\n\n", r.err)
		}
		fmt.Fprintln(w, "```")
		fmt.Fprint(w, strings.TrimRight(r.text, "\n")+"\n")
		fmt.Fprintln(w, "```")
		if r.summary != nil {
			fmt.Fprintln(w)
			fmt.Fprintln(w, "<details><summary>JSON summary</summary>")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "```json")
			b, _ := json.Marshal(scalarFields(r.summary))
			fmt.Fprintln(w, string(b))
			fmt.Fprintln(w, "```")
			fmt.Fprintln(w, "</details>")
		}
		for _, p := range r.plots {
			fmt.Fprintf(w, "\n![%s](plots/%s)\n", p, p)
		}
	}
}

// keyFigures picks the figures that answer each scenario's question.
var keyFields = map[string][]string{
	"lookup":    {"tenure_ns", "consistent_ns", "ratio", "tenure_parallel_ns", "parallel_ratio"},
	"rebalance": {"join_moved", "join_ideal", "leave_moved", "leave_ideal", "max_over_avg", "min_over_avg"},
	"grpc":      {"batch_keys_per_s", "unary_p50_us", "unary_p99_us"},
	"failover":  {"p50_ms", "p99_ms", "violations"},
	"detect":    {"p50_ms", "max_ms"},
	"handoff":   {"gap_p50_ms", "gap_p99_ms", "handoff_p99_ms", "failed", "violations"},
	"rolling":   {"crash_failovers", "worst_gap_ms", "total_s", "violations"},
}

func keyFigures(r *runRecord) string {
	var parts []string
	// peers: the ratio of each compared figure (Tenure / etcd).
	if rows, ok := r.summary["comparison"].([]any); ok {
		for _, row := range rows {
			m, _ := row.(map[string]any)
			if ratio, ok := m["ratio"]; ok {
				parts = append(parts, fmt.Sprintf("%v Tenure/etcd %s", m["metric"], formatFigure(ratio)))
			}
		}
	}
	// scale: per cluster size, the settle times after each event.
	if runs, ok := r.summary["runs"].([]any); ok && r.name == "scale" {
		for _, run := range runs {
			m, _ := run.(map[string]any)
			settle := func(phase string) string {
				p, _ := m[phase].(map[string]any)
				return formatFigure(p["settle_ms"])
			}
			parts = append(parts, fmt.Sprintf("%s nodes: settle join %s ms, leave %s ms, crash %s ms, violations %s",
				formatFigure(m["nodes"]), settle("join"), settle("leave"), settle("crash"), formatFigure(m["violations"])))
		}
	}
	for _, k := range keyFields[r.name] {
		if v, ok := r.summary[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", k, formatFigure(v)))
		}
	}
	return strings.Join(parts, ", ")
}

func formatFigure(v any) string {
	if f, ok := v.(float64); ok {
		switch {
		case f == float64(int64(f)):
			return fmt.Sprintf("%d", int64(f))
		case f >= 100:
			return fmt.Sprintf("%.0f", f)
		default:
			return fmt.Sprintf("%.3g", f)
		}
	}
	return fmt.Sprint(v)
}

// scalarFields drops the sample arrays from a summary: they are in the plots.
func scalarFields(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		switch v := v.(type) {
		case []any:
			if len(v) >= 5 && (strings.HasSuffix(k, "_ms") || strings.HasSuffix(k, "_us")) {
				continue
			}
		case map[string]any:
			out[k] = scalarFields(v)
			continue
		}
		out[k] = v
	}
	return out
}

// machineLines describes where the figures were measured.
func machineLines() []string {
	lines := []string{
		"started: " + time.Now().UTC().Format("2006-01-02 15:04 MST"),
		fmt.Sprintf("Go: %s %s/%s, GOMAXPROCS %d, %d CPUs", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU()),
	}
	if model := cpuModel(); model != "" {
		lines = append(lines, "CPU: "+model)
	}
	if mem := memTotal(); mem != "" {
		lines = append(lines, "memory: "+mem)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		lines = append(lines, "kernel: "+strings.TrimSpace(string(b)))
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		lines = append(lines, "commit: "+strings.TrimSpace(string(out)))
	}
	return lines
}

func cpuModel() string { return procField("/proc/cpuinfo", "model name") }

func memTotal() string { return procField("/proc/meminfo", "MemTotal") }

// procField returns the value of the first "key: value" line of a /proc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// roundTook rounds a run's duration for the report: milliseconds below a
// second, tenths of seconds above.
func roundTook(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
