package voterstore_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/voterstore"
)

func benchStore(b *testing.B) *voterstore.Store {
	s, err := voterstore.Open(voterstore.Options{Dir: b.TempDir(), Cluster: "bench", VoterID: "v1", Init: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// benchRecord is a typical record: a granted epoch and a short NodeID. Shards
// cycle through 4096 so that the file stays the size of a real voter's.
func benchRecord(n uint32) []lease.ShardRecord {
	return []lease.ShardRecord{{Shard: n % 4096, Record: lease.Record{Epoch: uint64(n), Holder: "node-17", HolderGen: 3<<32 | 41}}}
}

func reportSaves(b *testing.B, s *voterstore.Store) {
	commits := voterstore.Commits(s)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "saves/s")
	if commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "saves/commit")
	}
}

// BenchmarkSaveSerial is the cost of one commit: one goroutine saving one
// record at a time, so every Save waits for its own fsync.
func BenchmarkSaveSerial(b *testing.B) {
	s := benchStore(b)
	ctx := context.Background()
	var n uint32
	for b.Loop() {
		n++
		if err := s.Save(ctx, benchRecord(n)); err != nil {
			b.Fatal(err)
		}
	}
	reportSaves(b, s)
}

// BenchmarkSaveParallel saves one record per call from many goroutines, as
// concurrent requests do. Saves that arrive during a commit share the next
// one, so saves/s grows with the number of goroutines while commits/s stays
// near the serial rate.
func BenchmarkSaveParallel(b *testing.B) {
	for _, p := range []int{1, 4, 16, 64} {
		b.Run(fmt.Sprintf("goroutines=%d", p*runtime.GOMAXPROCS(0)), func(b *testing.B) {
			s := benchStore(b)
			var n atomic.Uint32
			b.SetParallelism(p)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := s.Save(ctx, benchRecord(n.Add(1))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportSaves(b, s)
		})
	}
}
