package main

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"text/tabwriter"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"

	"github.com/tenurehq/tenure/shard"
)

type lookupResult struct {
	Scenario             string  `json:"scenario"`
	Members              int     `json:"members"`
	Shards               int     `json:"shards"`
	Keys                 int     `json:"keys"`
	GOMAXPROCS           int     `json:"gomaxprocs"`
	TenureNS             float64 `json:"tenure_ns"`
	ConsistentNS         float64 `json:"consistent_ns"`
	Ratio                float64 `json:"ratio"`
	TenureParallelNS     float64 `json:"tenure_parallel_ns"`
	ConsistentParallelNS float64 `json:"consistent_parallel_ns"`
	ParallelRatio        float64 `json:"parallel_ratio"`
	TenureAllocs         int64   `json:"tenure_allocs_per_op"`
	ConsistentAllocs     int64   `json:"consistent_allocs_per_op"`
}

// runLookup times key → owner lookups: Tenure's Directory (xxhash mod P,
// then one load of the published table) against consistent's LocateKey over
// the same members, shard count and keys, on one goroutine and on
// GOMAXPROCS goroutines. A ratio below 1 means Tenure is faster.
func runLookup(args []string, out io.Writer) error {
	fs := flags("lookup")
	members := fs.Int("members", 16, "members in the ring")
	shards := fs.Int("shards", 1024, "shards P")
	nKeys := fs.Int("keys", 4096, "distinct keys looked up in turn (a power of two)")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *members < 1 || *shards < 1 || *nKeys < 1 || *nKeys&(*nKeys-1) != 0 {
		return fmt.Errorf("need -members ≥ 1, -shards ≥ 1 and -keys a power of two, got %d, %d and %d", *members, *shards, *nKeys)
	}
	ms := make([]shard.Member, *members)
	cm := make([]consistent.Member, *members)
	for i := range ms {
		ms[i] = shard.Member{ID: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("10.0.0.%d:7000", i), Weight: 1}
		cm[i] = ringName(ms[i].ID + "/") // the name shard.Assign gives it in the ring
	}
	a, err := shard.Assign(shard.AssignConfig{Shards: *shards}, ms)
	if err != nil {
		return err
	}
	var d shard.Directory
	d.Publish(shard.TableFromAssignment(1, a))
	c := consistent.New(cm, consistent.Config{
		Hasher: xxhasher{}, PartitionCount: *shards,
		ReplicationFactor: shard.DefaultReplicationFactor, Load: shard.DefaultLoad,
	})
	keys := make([][]byte, *nKeys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "subscription/%08d", i)
	}
	mask := *nKeys - 1
	tenure := func(i int) string { return d.Lookup(keys[i&mask]).Addr }
	ring := func(i int) string { return c.LocateKey(keys[i&mask]).String() }

	fmt.Fprintf(out, "lookup: %d members, %d shards, %d keys, GOMAXPROCS %d\n", *members, *shards, *nKeys, runtime.GOMAXPROCS(0))
	tSerial, cSerial := benchSerial(tenure), benchSerial(ring)
	tPar, cPar := benchParallel(tenure), benchParallel(ring)
	res := lookupResult{Scenario: "lookup", Members: *members, Shards: *shards, Keys: *nKeys, GOMAXPROCS: runtime.GOMAXPROCS(0),
		TenureNS: nsPerOp(tSerial), ConsistentNS: nsPerOp(cSerial), TenureParallelNS: nsPerOp(tPar), ConsistentParallelNS: nsPerOp(cPar),
		TenureAllocs: tSerial.AllocsPerOp(), ConsistentAllocs: cSerial.AllocsPerOp()}
	res.Ratio = res.TenureNS / res.ConsistentNS
	res.ParallelRatio = res.TenureParallelNS / res.ConsistentParallelNS

	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "lookup\tTenure\tconsistent\tratio\t")
	fmt.Fprintf(w, "1 goroutine\t%.1f ns\t%.1f ns\t%.3f\t\n", res.TenureNS, res.ConsistentNS, res.Ratio)
	fmt.Fprintf(w, "%d goroutines\t%.1f ns\t%.1f ns\t%.3f\t\n", res.GOMAXPROCS, res.TenureParallelNS, res.ConsistentParallelNS, res.ParallelRatio)
	fmt.Fprintf(w, "allocs/op\t%d\t%d\t\t\n", res.TenureAllocs, res.ConsistentAllocs)
	w.Flush()
	if *asJSON {
		return emit(out, res)
	}
	return nil
}

func benchSerial(lookup func(int) string) testing.BenchmarkResult {
	return testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		var last string
		i := 0
		for b.Loop() {
			last = lookup(i)
			i++
		}
		runtime.KeepAlive(last) // the lookups must not be discarded
	})
}

func benchParallel(lookup func(int) string) testing.BenchmarkResult {
	return testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			var last string
			i := 0
			for pb.Next() {
				last = lookup(i)
				i++
			}
			runtime.KeepAlive(last)
		})
	})
}

func nsPerOp(r testing.BenchmarkResult) float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.T.Nanoseconds()) / float64(r.N)
}

type ringName string

func (m ringName) String() string { return string(m) }

type xxhasher struct{}

func (xxhasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }
