package shard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenurehq/tenure/lease"
	peerv1 "github.com/tenurehq/tenure/proto/peer/v1"
)

// peers is the client side of the handoff protocol: one connection per
// peer address, made on first use and kept until the node stops.
type peers struct {
	opts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeers(opts []grpc.DialOption) *peers {
	return &peers{opts: opts, conns: make(map[string]*grpc.ClientConn)}
}

func (p *peers) client(addr string) (peerv1.PeerClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		return nil, ErrNotStarted
	}
	c := p.conns[addr]
	if c == nil {
		var err error
		if c, err = grpc.NewClient("passthrough:///"+addr, p.opts...); err != nil {
			return nil, fmt.Errorf("peer at %s: %w", addr, err)
		}
		p.conns[addr] = c
	}
	return peerv1.NewPeerClient(c), nil
}

// prepare asks the target to get ready and returns the lowest epoch it
// can lead at.
func (p *peers) prepare(ctx context.Context, hf *handoff, cfg Config) (uint64, error) {
	c, err := p.client(hf.addr)
	if err != nil {
		return 0, err
	}
	rep, err := c.Prepare(ctx, &peerv1.PrepareRequest{
		Cluster: cfg.Cluster, Shard: hf.shard, Epoch: hf.epoch, From: cfg.NodeID,
		To: hf.to, ToIncarnation: hf.toInc, FromDraining: hf.draining,
		TimeoutMs: uint32(cfg.HandoffTimeout / time.Millisecond),
	}, grpc.WaitForReady(true))
	return rep.GetMinEpoch(), err
}

// lead forwards the outcome of hf's transfer, c: Transferred, or
// TransferFailed (aborted).
func (p *peers) lead(ctx context.Context, hf *handoff, c lease.Change, cfg Config) error {
	cl, err := p.client(hf.addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.LeaseDuration)
	defer cancel()
	_, err = cl.Lead(ctx, &peerv1.LeadRequest{
		Cluster: cfg.Cluster, Shard: c.Shard, Epoch: c.Epoch, From: cfg.NodeID,
		To: hf.to, ToIncarnation: hf.toInc, Generations: c.Gens,
		Aborted: c.Kind == lease.TransferFailed,
	})
	return err
}

func (p *peers) close() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// peerServer serves the handoff protocol's target side.
type peerServer struct {
	peerv1.UnimplementedPeerServer
	n *Node
}

// check refuses a request that is not for this node, this incarnation or
// a shard of this cluster.
func (ps peerServer) check(cluster, to string, inc uint64, s uint32) error {
	n := ps.n
	switch {
	case cluster != n.cfg.Cluster:
		return status.Errorf(codes.FailedPrecondition, "cluster %q, this node is of %q", cluster, n.cfg.Cluster)
	case to != n.cfg.NodeID:
		return status.Errorf(codes.FailedPrecondition, "handoff for node %q reached %q", to, n.cfg.NodeID)
	case inc != n.inc.Load():
		return status.Errorf(codes.FailedPrecondition, "handoff for incarnation %d of %s, this is %d", inc, to, n.inc.Load())
	case int(s) >= n.cfg.Shards:
		return status.Errorf(codes.InvalidArgument, "shard %d: %v (P = %d)", s, ErrUnknownShard, n.cfg.Shards)
	}
	return nil
}

// Prepare runs the application's prepare hook, then expects the shard.
func (ps peerServer) Prepare(ctx context.Context, req *peerv1.PrepareRequest) (*peerv1.PrepareReply, error) {
	n := ps.n
	if err := ps.check(req.GetCluster(), req.GetTo(), req.GetToIncarnation(), req.GetShard()); err != nil {
		return nil, err
	}
	timeout := time.Duration(req.GetTimeoutMs()) * time.Millisecond
	if timeout <= 0 || timeout > time.Minute {
		return nil, status.Errorf(codes.InvalidArgument, "timeout_ms %d out of (0, 60000]", req.GetTimeoutMs())
	}
	if n.draining.Load() {
		return nil, status.Error(codes.Unavailable, ErrDraining.Error())
	}
	if n.superseded.Load() {
		// The voters refuse this process a session: it could never lead.
		return nil, status.Errorf(codes.FailedPrecondition, "incarnation %d of %s is superseded by a newer process", n.inc.Load(), n.cfg.NodeID)
	}
	if p, ok := n.cfg.Handler.(Preparer); ok {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		err := p.Prepare(pctx, req.GetShard(), req.GetEpoch())
		cancel()
		if err != nil {
			return nil, status.Errorf(codes.Aborted, "prepare refused: %v", err)
		}
	}
	var err error
	var min uint64
	if !n.do(func(st *loopState) {
		if inc := n.inc.Load(); inc != req.GetToIncarnation() {
			// Raised while the Preparer ran: a transfer to the old
			// incarnation would be refused.
			err = fmt.Errorf("handoff for incarnation %d of %s, this is %d", req.GetToIncarnation(), n.cfg.NodeID, inc)
			return
		}
		min, err = n.expect(st, req.GetShard(), timeout, req.GetFrom(), req.GetFromDraining())
	}) {
		return nil, status.Error(codes.Unavailable, ErrNotStarted.Error())
	}
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &peerv1.PrepareReply{MinEpoch: min}, nil
}

// Lead applies a transfer the voters accepted.
func (ps peerServer) Lead(_ context.Context, req *peerv1.LeadRequest) (*peerv1.LeadReply, error) {
	n := ps.n
	inc := req.GetToIncarnation()
	if cur := n.inc.Load(); req.GetAborted() && inc < cur {
		// An abort only ends a hold-off this process has: one addressed
		// to its incarnation before a raise still applies.
		inc = cur
	}
	if err := ps.check(req.GetCluster(), req.GetTo(), inc, req.GetShard()); err != nil {
		return nil, err
	}
	if !req.GetAborted() && (req.GetEpoch() == 0 || len(req.GetGenerations()) == 0) {
		return nil, status.Error(codes.InvalidArgument, "lead needs an epoch and generations, or aborted")
	}
	ok := n.do(func(st *loopState) {
		if st.holder == nil {
			return
		}
		now := n.now()
		if req.GetAborted() {
			// The source's lease ended and the voters kept the shard:
			// nobody leads it. Stop waiting and acquire it now.
			if _, expected := st.expecting[req.GetShard()]; expected {
				st.holder.Expect(req.GetShard(), now)
				st.sendNow = true
			}
			return
		}
		st.holder.AcceptTransfer(req.GetShard(), req.GetEpoch(), req.GetGenerations(), now)
		if _, ok := st.holder.Leads(req.GetShard(), now); !ok {
			n.log.Info("transfer not adopted", "shard", req.GetShard(), "epoch", req.GetEpoch(), "from", req.GetFrom())
		}
		n.afterStep(st)
		st.sendNow = true
	})
	if !ok {
		return nil, status.Error(codes.Unavailable, ErrNotStarted.Error())
	}
	return &peerv1.LeadReply{}, nil
}
