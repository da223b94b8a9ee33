package voter_test

import (
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenurehq/tenure/voter"
)

// benchVoter serves a fresh voter on the real clock, with a lease long
// enough that no session expires during a run.
func benchVoter(b *testing.B) *harness {
	return serve(b, voter.Config{
		ID:            voterID,
		Cluster:       cluster,
		Dir:           b.TempDir(),
		Init:          true,
		LeaseDuration: time.Minute,
	})
}

// reportCalls reports throughput and, from per-call latencies, the median
// and the 99th percentile.
func reportCalls(b *testing.B, lat []time.Duration) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkCall is one node granting itself a shard at ever higher epochs,
// one call at a time: every call changes a record and waits for its own
// commit and fsync, plus a gRPC round trip over bufconn.
func BenchmarkCall(b *testing.B) {
	h := benchVoter(b)
	var (
		e   uint64
		lat []time.Duration
	)
	for b.Loop() {
		e++
		start := time.Now()
		rep, err := h.send(cluster, request("n1", grant(1, e)))
		lat = append(lat, time.Since(start))
		if err != nil || !rep.Results[0].OK() {
			b.Fatalf("grant of epoch %d: %+v, %v", e, rep, err)
		}
	}
	reportCalls(b, lat)
}

// BenchmarkCallParallel is many nodes each granting itself its own shard
// at ever higher epochs, concurrently: every call changes a record, and
// the calls that arrive during one commit share the next. Throughput grows
// with the number of callers while commits stay near the serial rate.
func BenchmarkCallParallel(b *testing.B) {
	for _, p := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("goroutines=%d", p*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			h := benchVoter(b)
			var (
				nodes atomic.Uint32
				mu    sync.Mutex
				lat   []time.Duration
			)
			b.SetParallelism(p)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				shard := nodes.Add(1)
				from := fmt.Sprintf("n%d", shard)
				var (
					e    uint64
					mine []time.Duration
				)
				for pb.Next() {
					e++
					start := time.Now()
					rep, err := h.send(cluster, request(from, grant(shard, e)))
					mine = append(mine, time.Since(start))
					if err != nil || !rep.Results[0].OK() {
						b.Errorf("grant of shard %d epoch %d to %s: %+v, %v", shard, e, from, rep, err)
						return
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			reportCalls(b, lat)
		})
	}
}
