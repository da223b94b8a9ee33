package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tenurehq/tenure/membership"
	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/shard"
)

type grpcResult struct {
	Scenario      string  `json:"scenario"`
	Nodes         int     `json:"nodes"`
	Shards        int     `json:"shards"`
	Streams       int     `json:"streams"`
	Conns         int     `json:"conns"`
	Batch         int     `json:"batch"`
	KeyBytes      int     `json:"key_bytes"`
	BatchSeconds  float64 `json:"batch_seconds"`
	BatchCalls    int64   `json:"batch_calls"`
	BatchKeysPerS float64 `json:"batch_keys_per_s"`
	BatchP50US    float64 `json:"batch_p50_us"`
	BatchP99US    float64 `json:"batch_p99_us"`
	UnaryCalls    int     `json:"unary_calls"`
	UnaryPerS     float64 `json:"unary_per_s"`
	UnaryMeanUS   float64 `json:"unary_mean_us"`
	UnaryP50US    float64 `json:"unary_p50_us"`
	UnaryP99US    float64 `json:"unary_p99_us"`
	UnaryMaxUS    float64 `json:"unary_max_us"`
	WrongAnswers  int64   `json:"wrong_answers"`
	UnledAnswers  int64   `json:"unled_answers"`
	GOMAXPROCS    int     `json:"gomaxprocs"`
	// The latency distributions the report plots, as 200 evenly spaced
	// quantiles each (sorted).
	UnaryQuantilesUS []float64 `json:"unary_quantiles_us"`
	BatchQuantilesUS []float64 `json:"batch_quantiles_us"`
}

// runGRPC measures the public API on loopback: BatchLookup throughput over
// concurrent callers, then the latency of sequential unary Lookups, both
// against one node of an in-process cluster whose every node serves the
// API on its own gRPC server. Server and load generator share the
// machine's cores.
func runGRPC(args []string, out io.Writer) error {
	fs := flags("grpc")
	nodes := fs.Int("nodes", 3, "nodes in the cluster, all serving the API")
	voters := fs.Int("voters", 3, "voters among them (1, 3 or 5)")
	shards := fs.Int("shards", 1024, "shards P")
	streams := fs.Int("streams", 4, "concurrent BatchLookup callers")
	conns := fs.Int("conns", 2, "client connections the callers share (round robin)")
	batch := fs.Int("batch", 1000, "keys per BatchLookup")
	duration := fs.Duration("duration", 5*time.Second, "how long to run BatchLookups")
	unary := fs.Int("unary", 20000, "sequential unary Lookups to time")
	asJSON := fs.Bool("json", false, "print a JSON summary as the last line")
	verbose := fs.Bool("v", false, "log the nodes' info output to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 1 || *voters < 1 || *voters > *nodes || *streams < 1 || *conns < 1 || *batch < 1 || *batch > server.DefaultMaxBatchKeys || *unary < 100 {
		return fmt.Errorf("need nodes ≥ 1, 1 ≤ voters ≤ nodes, streams ≥ 1, conns ≥ 1, 1 ≤ batch ≤ %d, unary ≥ 100", server.DefaultMaxBatchKeys)
	}
	logger := slog.New(slog.DiscardHandler)
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	fmt.Fprintf(out, "grpc: %d nodes (%d voters), %d shards; BatchLookup of %d keys by %d callers over %d connections for %v; %d sequential Lookups\n",
		*nodes, *voters, *shards, *batch, *streams, *conns, *duration, *unary)

	var (
		mu      sync.Mutex
		servers []*server.Server
	)
	attach := func(id string, cfg *shard.Config) func(*shard.Node) error {
		var srv *server.Server
		cfg.RegisterGRPC = func(g *grpc.Server) { srv.Register(g) }
		return func(n *shard.Node) (err error) {
			srv, err = server.New(server.Config{Node: n, Logger: logger.With("node", id)})
			mu.Lock()
			servers = append(servers, srv)
			mu.Unlock()
			return err
		}
	}
	c, err := newClusterWith(attach, *nodes, *voters, *shards, membership.Local, time.Second, logger)
	if err != nil {
		return err
	}
	defer func() {
		// Servers first: their Watch streams would hold up the nodes' gRPC
		// servers.
		for _, s := range servers {
			s.Close()
		}
		c.close()
	}()
	target := c.node("node-1")
	if !waitFor(time.Minute, func() bool { return c.settled() && allLed(target.Table()) }) {
		return fmt.Errorf("the cluster did not settle within a minute: %s", c.unsettled())
	}

	var clients []tenurev1.TenureClient
	for range *conns {
		conn, err := grpc.NewClient("passthrough:///"+c.grpc["node-1"], grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients = append(clients, tenurev1.NewTenureClient(conn))
	}
	keys := make([][]byte, 100_000)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "customer/%08d", i)
	}
	res := grpcResult{
		Scenario: "grpc", Nodes: *nodes, Shards: *shards, Streams: *streams, Conns: *conns, Batch: *batch,
		KeyBytes: len(keys[0]), UnaryCalls: *unary, GOMAXPROCS: runtime.GOMAXPROCS(0),
	}

	// Warm up connections, code paths and the allocator.
	ctx := context.Background()
	for i := range 200 {
		if _, err := clients[i%len(clients)].BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: keys[:*batch]}); err != nil {
			return fmt.Errorf("warm-up batch lookup: %w", err)
		}
	}

	// Throughput: every caller sends batches back to back until the time
	// is up; a batch counts if it returned before then.
	var (
		total, calls, wrong, unled atomic.Int64
		wg                         sync.WaitGroup
		errOnce                    sync.Once
		firstErr                   error
		latMu                      sync.Mutex
		batchLat                   []time.Duration
	)
	deadline := time.Now().Add(*duration)
	start := time.Now()
	for w := range *streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[w%len(clients)]
			var lat []time.Duration
			off := (w * 7919 * *batch) % len(keys)
			for time.Now().Before(deadline) {
				ks := window(keys, off, *batch)
				off = (off + *batch) % len(keys)
				t0 := time.Now()
				rep, err := cl.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: ks})
				lat = append(lat, time.Since(t0))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if len(rep.GetEntries()) != len(ks) || rep.GetEntries()[0].GetShard() != uint32(shard.Of(ks[0], *shards)) {
					wrong.Add(1)
				}
				total.Add(int64(len(ks)))
				calls.Add(1)
			}
			latMu.Lock()
			batchLat = append(batchLat, lat...)
			latMu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return fmt.Errorf("batch lookup: %w", firstErr)
	}
	slices.Sort(batchLat)
	res.BatchSeconds = elapsed.Seconds()
	res.BatchCalls = calls.Load()
	res.BatchKeysPerS = float64(total.Load()) / elapsed.Seconds()
	res.BatchP50US = usOf(percentile(batchLat, 50))
	res.BatchP99US = usOf(percentile(batchLat, 99))

	// Latency: one caller, one key per call, one call at a time, from a
	// clean heap, so that collecting the throughput phase's garbage is not
	// charged to it.
	runtime.GC()
	for i := range 1000 {
		if _, err := clients[0].Lookup(ctx, &tenurev1.LookupRequest{Key: keys[i]}); err != nil {
			return fmt.Errorf("warm-up lookup: %w", err)
		}
	}
	lat := make([]time.Duration, *unary)
	ustart := time.Now()
	for i := range lat {
		k := keys[i%len(keys)]
		t0 := time.Now()
		rep, err := clients[0].Lookup(ctx, &tenurev1.LookupRequest{Key: k})
		lat[i] = time.Since(t0)
		if err != nil {
			return fmt.Errorf("unary lookup: %w", err)
		}
		if rep.GetEntry().GetShard() != uint32(shard.Of(k, *shards)) {
			wrong.Add(1)
		}
		if rep.GetEntry().GetLeader() == "" {
			unled.Add(1)
		}
	}
	uelapsed := time.Since(ustart)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	slices.Sort(lat)
	res.UnaryPerS = float64(*unary) / uelapsed.Seconds()
	res.UnaryMeanUS = usOf(sum / time.Duration(len(lat)))
	res.UnaryP50US = usOf(percentile(lat, 50))
	res.UnaryP99US = usOf(percentile(lat, 99))
	res.UnaryMaxUS = usOf(lat[len(lat)-1])
	res.WrongAnswers, res.UnledAnswers = wrong.Load(), unled.Load()
	res.UnaryQuantilesUS, res.BatchQuantilesUS = quantiles(lat, 200, usOf), quantiles(batchLat, 200, usOf)

	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tcalls\tkeys/s or calls/s\tmean µs\tp50 µs\tp99 µs\tmax µs\t")
	fmt.Fprintf(w, "BatchLookup ×%d, %d callers\t%d\t%.0f keys/s\t\t%.0f\t%.0f\t%.0f\t\n",
		*batch, *streams, res.BatchCalls, res.BatchKeysPerS, res.BatchP50US, res.BatchP99US, usOf(batchLat[len(batchLat)-1]))
	fmt.Fprintf(w, "Lookup, sequential\t%d\t%.0f calls/s\t%.1f\t%.1f\t%.1f\t%.1f\t\n",
		*unary, res.UnaryPerS, res.UnaryMeanUS, res.UnaryP50US, res.UnaryP99US, res.UnaryMaxUS)
	w.Flush()
	// Unled answers are correct answers: a node starved of CPU by the load
	// generator may miss its keep-alives and lose leases for a moment.
	fmt.Fprintf(out, "wrong answers: %d; unled answers: %d; targets: batch_keys_per_s ≥ 500000 (%s), unary_p99_us ≤ 500 (%s)\n",
		res.WrongAnswers, res.UnledAnswers, verdict(res.BatchKeysPerS >= 500000), verdict(res.UnaryP99US <= 500))
	if res.WrongAnswers > 0 {
		return fmt.Errorf("%d wrong answers", res.WrongAnswers)
	}
	if *asJSON {
		return emit(out, res)
	}
	return nil
}

// window returns n keys from off, wrapping around.
func window(keys [][]byte, off, n int) [][]byte {
	if off+n <= len(keys) {
		return keys[off : off+n]
	}
	return append(slices.Clip(keys[off:]), keys[:n-(len(keys)-off)]...)
}

func allLed(t *shard.Table) bool {
	for _, e := range t.Entries() {
		if e.State != shard.Led {
			return false
		}
	}
	return true
}

func usOf(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}
