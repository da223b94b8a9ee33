package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// forwardedKey marks an administrative call one node forwarded to another,
// with the forwarder's NodeID. A forwarded call is never forwarded again:
// two nodes whose views disagree about a shard's leader would otherwise
// pass the call back and forth.
const forwardedKey = "tenure-forwarded-by"

// authorize refuses an administrative call from a caller without a
// verified client certificate when the config requires one. A certificate
// the TLS handshake merely received (tls.RequestClientCert) has no verified
// chain and does not count.
func (s *Server) authorize(ctx context.Context, method string) error {
	if !s.cfg.AdminRequiresClientCert {
		return nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			return nil
		}
	}
	s.log.Warn("administrative call refused: no verified client certificate", "method", method, "peer", peerAddr(ctx))
	return fmt.Errorf("%s: %w", method, tenurev1.ErrUnauthenticated)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// forwardedBy returns the NodeID that forwarded the call, or "".
func forwardedBy(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, forwardedKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// forward runs call on a connection to addr, marked as forwarded. The
// error is the remote status as it came, so that the caller sees the
// concerned node's answer (tenurev1.ToStatus passes a status through
// unchanged).
func (s *Server) forward(ctx context.Context, addr string, call func(context.Context, tenurev1.TenureClient) error) error {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, s.cfg.DialOptions...)
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return status.Errorf(codes.Internal, "server: forward to %s: %v", addr, err)
	}
	defer conn.Close()
	ctx = metadata.AppendToOutgoingContext(ctx, forwardedKey, s.node.ID())
	return call(ctx, tenurev1.NewTenureClient(conn))
}

// Drain starts a drain of the named node. On this node it runs in the
// background (Drained tells when it is done) and the call returns at once;
// a drain already running is not started again. Another node's drain is
// forwarded to it.
func (s *Server) Drain(ctx context.Context, req *tenurev1.DrainRequest) (*tenurev1.DrainReply, error) {
	if err := s.authorize(ctx, "Drain"); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	node := req.GetNode()
	if err := tenurev1.CheckNodeID("DrainRequest.node", node); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	if node == s.node.ID() {
		if err := s.startDrain(forwardedBy(ctx)); err != nil {
			return nil, err
		}
		return &tenurev1.DrainReply{}, nil
	}
	if by := forwardedBy(ctx); by != "" {
		return nil, tenurev1.ToStatus(fmt.Errorf("drain %s: %s forwarded it to %s: %w", node, by, s.node.ID(), shard.ErrUnknownNode))
	}
	addr, err := s.memberAddr(node)
	if err != nil {
		return nil, tenurev1.ToStatus(fmt.Errorf("drain %s: %w", node, err))
	}
	s.log.Info("forwarding drain", "node", node, "addr", addr)
	err = s.forward(ctx, addr, func(ctx context.Context, c tenurev1.TenureClient) error {
		_, err := c.Drain(ctx, &tenurev1.DrainRequest{Node: node})
		return err
	})
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	return &tenurev1.DrainReply{}, nil
}

// memberAddr returns the gRPC address of a member this node sees.
func (s *Server) memberAddr(id string) (string, error) {
	for _, m := range s.node.Members() {
		if m.NodeID != id {
			continue
		}
		if m.GRPCAddr == "" {
			return "", status.Errorf(codes.FailedPrecondition, "member %s advertises no gRPC address", id)
		}
		return m.GRPCAddr, nil
	}
	return "", fmt.Errorf("%w: %s is not a member in %s's view", shard.ErrUnknownNode, id, s.node.ID())
}

// startDrain runs Node.Drain in the background, once.
func (s *Server) startDrain(by string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed
	}
	if s.drainStarted {
		return nil
	}
	s.drainStarted = true
	close(s.draining)
	s.wg.Add(1)
	s.log.Info("draining this node", "requested_by", by)
	go func() {
		defer s.wg.Done()
		defer close(s.drained)
		// Drain stops the node when it is done. Close cancels it: shards
		// not handed off by then are released at the voters.
		if err := s.node.Drain(s.drainCtx); err != nil {
			s.log.Error("drain", "err", err)
			return
		}
		s.log.Info("drained")
	}()
	return nil
}

// Transfer hands a shard to another node on the shard's leader: here if
// this node leads it, else forwarded to the leader this node knows. It
// returns when the handoff is done or failed.
func (s *Server) Transfer(ctx context.Context, req *tenurev1.TransferRequest) (*tenurev1.TransferReply, error) {
	if err := s.authorize(ctx, "Transfer"); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	to := req.GetNode()
	if err := tenurev1.CheckNodeID("TransferRequest.node", to); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	e, err := s.node.Table().Shard(int64(req.GetShard()))
	if err != nil {
		return nil, tenurev1.ToStatus(fmt.Errorf("TransferRequest.shard: %w", err))
	}
	// The node's own lease decides whether it leads: its table may lag
	// the lease by a tick right after a handoff made it the leader, and a
	// forwarded call that arrives then must not be bounced back.
	_, leads := s.node.Leases()[req.GetShard()]
	redirect := &shard.NotLeaderError{Shard: req.GetShard(), Leader: e.Leader, Addr: e.Addr, Epoch: e.Epoch}
	switch {
	case leads || e.Leader == s.node.ID():
		s.log.Info("transferring shard", "shard", req.GetShard(), "to", to, "requested_by", forwardedBy(ctx))
		if err := s.node.Transfer(ctx, req.GetShard(), to); err != nil {
			return nil, tenurev1.ToStatus(err)
		}
		return &tenurev1.TransferReply{}, nil
	case e.State == shard.Unled || e.Leader == "":
		// Nobody to hand it off: the caller retries once a leader
		// appears, at the desired owner's address if known.
		redirect.Leader = ""
		return nil, tenurev1.ToStatus(redirect)
	case e.Leader == to:
		return &tenurev1.TransferReply{}, nil
	case forwardedBy(ctx) != "" || e.Addr == "":
		return nil, tenurev1.ToStatus(redirect)
	}
	err = s.forward(ctx, e.Addr, func(ctx context.Context, c tenurev1.TenureClient) error {
		_, err := c.Transfer(ctx, &tenurev1.TransferRequest{Shard: req.GetShard(), Node: to})
		return err
	})
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	return &tenurev1.TransferReply{}, nil
}

// PauseRebalance pauses automatic rebalancing cluster-wide (it spreads by
// gossip from this node).
func (s *Server) PauseRebalance(ctx context.Context, _ *tenurev1.PauseRebalanceRequest) (*tenurev1.PauseRebalanceReply, error) {
	if err := s.authorize(ctx, "PauseRebalance"); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	if err := s.node.PauseRebalance(ctx); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	s.log.Info("rebalancing paused")
	return &tenurev1.PauseRebalanceReply{}, nil
}

// ResumeRebalance undoes PauseRebalance cluster-wide.
func (s *Server) ResumeRebalance(ctx context.Context, _ *tenurev1.ResumeRebalanceRequest) (*tenurev1.ResumeRebalanceReply, error) {
	if err := s.authorize(ctx, "ResumeRebalance"); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	if err := s.node.ResumeRebalance(ctx); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	s.log.Info("rebalancing resumed")
	return &tenurev1.ResumeRebalanceReply{}, nil
}

// Plan is the rebalancer's dry run from this node's view. It is an
// administrative call: it runs the planner, which takes milliseconds even
// at 1000 nodes only while the node's ring is cached.
func (s *Server) Plan(ctx context.Context, req *tenurev1.PlanRequest) (*tenurev1.PlanReply, error) {
	if err := s.authorize(ctx, "Plan"); err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	limit, err := tenurev1.PlanLimit(req)
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	moves, err := s.node.Plan()
	if err != nil {
		return nil, tenurev1.ToStatus(err)
	}
	rep := &tenurev1.PlanReply{Total: uint32(len(moves)), Paused: s.node.RebalancePaused()}
	for _, m := range moves[:min(len(moves), limit)] {
		rep.Moves = append(rep.Moves, &tenurev1.Move{Shard: m.Shard, From: m.From, To: m.To})
	}
	return rep, nil
}
