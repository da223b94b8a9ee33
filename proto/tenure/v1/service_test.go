package tenurev1_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// oneShard leads shard 0 of a 4-shard table and redirects the others to
// node-b.
type oneShard struct {
	tenurev1.UnimplementedTenureServer
}

func (oneShard) GetShard(_ context.Context, m *tenurev1.GetShardRequest) (*tenurev1.ShardEntry, error) {
	if err := shard.CheckShard(int64(m.GetShard()), 4); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	if m.GetShard() != 0 {
		return nil, tenurev1.ToStatus(&shard.NotLeaderError{Shard: m.GetShard(), Leader: "node-b", Addr: "b:7000", Epoch: 12})
	}
	return tenurev1.EntryToPB(shard.Entry{State: shard.Led, Epoch: 3, Leader: "node-a", Addr: "a:7000"}), nil
}

// The redirect's details survive a real gRPC connection, and the client
// tests the outcome with errors.Is and errors.As alone.
func TestServiceErrorsOverGRPC(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	tenurev1.RegisterTenureServer(srv, oneShard{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := tenurev1.NewTenureClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	pb, err := client.GetShard(ctx, &tenurev1.GetShardRequest{Shard: 0})
	if err != nil {
		t.Fatalf("GetShard(0): %v", err)
	}
	if e, err := tenurev1.EntryFromPB(pb); err != nil || e.Leader != "node-a" || e.Epoch != 3 {
		t.Errorf("GetShard(0) = %+v, %v; want led by node-a at epoch 3", e, err)
	}

	_, err = client.GetShard(ctx, &tenurev1.GetShardRequest{Shard: 2})
	err = tenurev1.FromStatus(err)
	var nle *shard.NotLeaderError
	if !errors.As(err, &nle) {
		t.Fatalf("GetShard(2): %v (%T), want a *NotLeaderError", err, err)
	}
	if want := (shard.NotLeaderError{Shard: 2, Leader: "node-b", Addr: "b:7000", Epoch: 12}); *nle != want {
		t.Errorf("redirect = %+v, want %+v", *nle, want)
	}

	_, err = client.GetShard(ctx, &tenurev1.GetShardRequest{Shard: 4})
	if err = tenurev1.FromStatus(err); !errors.Is(err, shard.ErrUnknownShard) || status.Code(err) != codes.NotFound {
		t.Errorf("GetShard(4): %v, want NOT_FOUND matching ErrUnknownShard", err)
	}

	_, err = client.Drain(ctx, &tenurev1.DrainRequest{Node: "node-a"})
	if err = tenurev1.FromStatus(err); status.Code(err) != codes.Unimplemented {
		t.Errorf("Drain: %v, want UNIMPLEMENTED passed through", err)
	}
}
