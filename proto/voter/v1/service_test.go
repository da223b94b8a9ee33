package voterv1_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
)

// echoVoter answers every request of its cluster with one accepted result
// per operation.
type echoVoter struct {
	voterv1.UnimplementedVoterServer
	cluster string
}

func (v echoVoter) Call(_ context.Context, m *voterv1.CallRequest) (*voterv1.CallReply, error) {
	cluster, req, err := voterv1.RequestFromPB(m)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if cluster != v.cluster {
		return nil, status.Errorf(codes.FailedPrecondition, "voter of cluster %q refuses a node of cluster %q", v.cluster, cluster)
	}
	rep := lease.Reply{Voter: "voter-1", Seq: req.Seq, Gen: 1}
	for _, op := range req.Ops {
		rep.Results = append(rep.Results, lease.Result{Op: op, Record: lease.Record{Epoch: op.Epoch, Holder: req.From, HolderGen: 1}, Gen: 1})
	}
	return voterv1.ReplyToPB(v.cluster, rep), nil
}

// The generated service carries a batched request and its reply through a
// real gRPC connection, and the server sees the cluster to refuse.
func TestVoterServiceOverGRPC(t *testing.T) {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	voterv1.RegisterVoterServer(srv, echoVoter{cluster: "prod"})
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
	client := voterv1.NewVoterClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	req := fullRequest()
	pb, err := client.Call(ctx, voterv1.RequestToPB("prod", req))
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	cluster, rep, err := voterv1.ReplyFromPB(pb)
	if err != nil {
		t.Fatalf("ReplyFromPB: %v", err)
	}
	if cluster != "prod" || rep.Seq != req.Seq || len(rep.Results) != len(req.Ops) {
		t.Fatalf("reply from cluster %q, seq %d, %d results; want prod, %d, %d",
			cluster, rep.Seq, len(rep.Results), req.Seq, len(req.Ops))
	}
	for i, res := range rep.Results {
		if res.Op != req.Ops[i] || !res.OK() {
			t.Errorf("Results[%d] = %+v, want an acceptance of %+v", i, res, req.Ops[i])
		}
	}

	_, err = client.Call(ctx, voterv1.RequestToPB("staging", req))
	if got := status.Code(err); got != codes.FailedPrecondition {
		t.Errorf("call from another cluster: code %v (%v), want FailedPrecondition", got, err)
	}
	_, err = client.Call(ctx, &voterv1.CallRequest{Cluster: "prod"})
	if got := status.Code(err); got != codes.InvalidArgument {
		t.Errorf("call without from: code %v (%v), want InvalidArgument", got, err)
	}
}
