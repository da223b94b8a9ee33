// Command bench is Tenure's benchmark harness. Each scenario prints a table
// and, with -json, one JSON object as its last line.
//
//	go run ./bench failover -nodes 5 -voters 3 -shards 1024 -reps 20 -json
//
// To see where a scenario spends its time, set TENURE_BENCH_CPUPROFILE to
// a file for a CPU profile (go tool pprof) and TENURE_BENCH_TRACE to a file
// for an execution trace (go tool trace) of the whole run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"time"
)

type scenario struct {
	about string
	run   func(args []string, out io.Writer) error
}

var scenarios = map[string]scenario{
	"failover": {"kill a leader (no Leave) repeatedly; time until its shards are led again", runFailover},
	"detect":   {"gossip alone: time until every survivor drops a crashed node", runDetect},
	"rolling":  {"rolling restart: drain, restart and rebalance every node in turn; crash failovers must be 0", runRolling},
	"handoff":  {"operator moves of random shards: the gap between the source stopping and the target leading", runHandoff},
	"peers":    {"failover and handoff against etcd's concurrency.Election (bench/etcdpeer) in one run, side by side as ratios", runPeers},

	"grpc":      {"the public API on loopback: BatchLookup keys/s over concurrent callers, sequential Lookup latency", runGRPC},
	"lookup":    {"key → owner lookups: Tenure against buraksezer/consistent, one goroutine and GOMAXPROCS", runLookup},
	"coldstart": {"real tenured processes on loopback, every one a voter: time until every shard is led, RSS, voter failures; then kill -9 the busiest and time its failover", runColdstart},
	"rebalance": {"shards moved on one join and one leave: rebalance.Plan against consistent hashing alone", runRebalance},
	"scale":     {"simulated clusters of 10 to 1000 nodes: settle time after a join, a leave and a crash; traffic, voter load, memory per shard", runScale},
}

func main() {
	stop, err := profile(os.Getenv("TENURE_BENCH_CPUPROFILE"), os.Getenv("TENURE_BENCH_TRACE"))
	if err == nil {
		err = run(os.Args[1:], os.Stdout)
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// profile starts a CPU profile into cpuFile and an execution trace into
// traceFile, each unless its name is empty, and returns what stops them.
func profile(cpuFile, traceFile string) (stop func(), err error) {
	var files []*os.File
	stop = func() {
		if cpuFile != "" {
			pprof.StopCPUProfile()
		}
		if traceFile != "" {
			trace.Stop()
		}
		for _, f := range files {
			if err := f.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
			}
		}
	}
	create := func(name string) (*os.File, error) {
		f, err := os.Create(name)
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	if cpuFile != "" {
		f, err := create(cpuFile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			cpuFile = ""
			stop()
			return nil, fmt.Errorf("TENURE_BENCH_CPUPROFILE: %w", err)
		}
	}
	if traceFile != "" {
		f, err := create(traceFile)
		if err == nil {
			err = trace.Start(f)
		}
		if err != nil {
			traceFile = ""
			stop()
			return nil, fmt.Errorf("TENURE_BENCH_TRACE: %w", err)
		}
	}
	return stop, nil
}

func run(args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "help" {
		usage(out)
		if len(args) == 0 {
			return fmt.Errorf("name a scenario")
		}
		return nil
	}
	if args[0] == "all" {
		return runAll(args[1:], out)
	}
	sc, ok := scenarios[args[0]]
	if !ok {
		usage(out)
		return fmt.Errorf("unknown scenario %q", args[0])
	}
	return sc.run(args[1:], out)
}

func usage(out io.Writer) {
	fmt.Fprintln(out, "usage: go run ./bench <scenario> [flags]; scenarios:")
	var names []string
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(out, "  %-10s %s\n", n, scenarios[n].about)
	}
	fmt.Fprintf(out, "  %-10s %s\n", "all", "every scenario at a quick size; writes bench/RESULTS.md and bench/plots/ (make bench)")
}

// emit prints v as one JSON line.
func emit(out io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(b))
	return err
}

// percentile returns the p-th percentile (0..100) of sorted ds, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// quantiles returns n evenly spaced quantiles of sorted ds (the
// (i+1)/n-th for i < n), each converted by unit: a compact, plottable
// form of a large sample.
func quantiles(sorted []time.Duration, n int, unit func(time.Duration) float64) []float64 {
	if len(sorted) == 0 {
		return nil
	}
	qs := make([]float64, n)
	for i := range qs {
		qs[i] = unit(percentile(sorted, 100*float64(i+1)/float64(n)))
	}
	return qs
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func flags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: go run ./bench %s [flags]\n", name)
		fs.PrintDefaults()
	}
	return fs
}
