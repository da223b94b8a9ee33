package server_test

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/shard"
)

// checkRefusal fails unless err is nil or a status the mapping produces
// for bad input: INVALID_ARGUMENT or NOT_FOUND with a tenure.io reason.
func checkRefusal(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound:
	default:
		t.Fatalf("%s: %v, want INVALID_ARGUMENT or NOT_FOUND", what, err)
	}
	got := tenurev1.FromStatus(err)
	if !errors.Is(got, tenurev1.ErrInvalid) && !errors.Is(got, shard.ErrKeyTooLarge) &&
		!errors.Is(got, shard.ErrUnknownShard) && !errors.Is(got, shard.ErrUnknownNode) {
		t.Fatalf("%s: %v maps to no documented error", what, got)
	}
}

// FuzzRequests decodes arbitrary bytes as each request that carries user
// input (keys, shard numbers, node IDs, states) and serves it: no panic,
// and every refusal is a mapped status. Lookups that pass answer the
// table's entry.
func FuzzRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&tenurev1.LookupRequest{Key: []byte("customer/1")},
		&tenurev1.BatchLookupRequest{Keys: [][]byte{[]byte("a"), nil, make([]byte, shard.MaxKeyBytes+1)}},
		&tenurev1.GetShardRequest{Shard: 15},
		&tenurev1.ListShardsRequest{Node: "node-2", State: tenurev1.ShardState_SHARD_STATE_UNLED, FilterState: true},
		&tenurev1.ListShardsRequest{PageSize: 3, PageToken: tenurev1.NextPageToken(&tenurev1.ListShardsRequest{}, 5)},
		&tenurev1.TransferRequest{Shard: 3, Node: "node-2"},
		&tenurev1.DrainRequest{Node: "node-x"},
		&tenurev1.PlanRequest{Limit: 3},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	n, err := shard.New(shard.Config{NodeID: "node-1", Shards: 16, GossipAddr: "127.0.0.1:0"})
	if err != nil {
		f.Fatal(err)
	}
	s, err := server.New(server.Config{Node: n, MaxBatchKeys: 64})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Close)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		var look tenurev1.LookupRequest
		if proto.Unmarshal(b, &look) == nil {
			rep, err := s.Lookup(ctx, &look)
			checkRefusal(t, "Lookup", err)
			if err == nil {
				if got, perr := tenurev1.EntryFromPB(rep.GetEntry()); perr != nil || got != n.Lookup(look.GetKey()) {
					t.Fatalf("Lookup answered %v (%v), the table says %+v", rep.GetEntry(), perr, n.Lookup(look.GetKey()))
				}
			}
		}
		var batch tenurev1.BatchLookupRequest
		if proto.Unmarshal(b, &batch) == nil {
			rep, err := s.BatchLookup(ctx, &batch)
			checkRefusal(t, "BatchLookup", err)
			if err == nil && len(rep.GetEntries()) != len(batch.GetKeys()) {
				t.Fatalf("BatchLookup answered %d entries for %d keys", len(rep.GetEntries()), len(batch.GetKeys()))
			}
		}
		var get tenurev1.GetShardRequest
		if proto.Unmarshal(b, &get) == nil {
			_, err := s.GetShard(ctx, &get)
			checkRefusal(t, "GetShard", err)
		}
		var list tenurev1.ListShardsRequest
		if proto.Unmarshal(b, &list) == nil {
			_, err := s.ListShards(ctx, &list)
			checkRefusal(t, "ListShards", err)
		}
		var plan tenurev1.PlanRequest
		if proto.Unmarshal(b, &plan) == nil {
			// A node that never started has no plan to show.
			if _, err := s.Plan(ctx, &plan); !errors.Is(tenurev1.FromStatus(err), shard.ErrNotStarted) {
				checkRefusal(t, "Plan", err)
			}
		}
		var tr tenurev1.TransferRequest
		if proto.Unmarshal(b, &tr) == nil {
			// Every shard of a node that never started is unled: a valid
			// request is redirected, never executed.
			_, err := s.Transfer(ctx, &tr)
			if !errors.Is(tenurev1.FromStatus(err), shard.ErrNotLeader) {
				checkRefusal(t, "Transfer", err)
			}
		}
		var dr tenurev1.DrainRequest
		if proto.Unmarshal(b, &dr) == nil && dr.GetNode() != n.ID() {
			_, err := s.Drain(ctx, &dr)
			checkRefusal(t, "Drain", err)
		}
	})
}
