package ledgerstore

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// BenchmarkCharge: one accepted charge in process (the store's lock and
// log append).
func BenchmarkCharge(b *testing.B) {
	s := New(Config{})
	b.ReportAllocs()
	for i := range b.N {
		if _, err := s.Charge(uint32(i%64), 1, "n1", uint64(i/64+1)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkChargeHTTP: accepted charges over HTTP on loopback, from
// parallel clients on separate shards.
func BenchmarkChargeHTTP(b *testing.B) {
	srv := httptest.NewServer(New(Config{}).Handler())
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer hc.CloseIdleConnections()
	c, err := NewClient(srv.URL, hc)
	if err != nil {
		b.Fatal(err)
	}
	var shards atomic.Uint32
	b.RunParallel(func(pb *testing.PB) {
		sh := shards.Add(1)
		for p := uint64(1); pb.Next(); p++ {
			if _, err := c.Charge(context.Background(), ChargeRequest{Shard: sh, Epoch: 1, Node: "n1", Period: p}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkAudit: the audit of a log of a million charges on 64 shards.
func BenchmarkAudit(b *testing.B) {
	s := New(Config{})
	for i := range 1_000_000 {
		if _, err := s.Charge(uint32(i%64), 1, fmt.Sprintf("n%d", i%64%3), uint64(i/64+1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if rep := s.Audit(); !rep.OK {
			b.Fatal(rep.Violations)
		}
	}
}
