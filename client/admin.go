package client

import (
	"context"
	"fmt"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// The calls below ask a node, not the local table: they answer from the
// node's view and work before the first table arrived. Each tries the
// endpoint the client follows first, then the others while unreachable.
// Errors come through tenurev1.FromStatus: test them with errors.Is
// against shard.ErrUnknownNode, shard.ErrNotLeader, tenurev1.ErrInvalid,
// tenurev1.ErrUnauthenticated and the like.

// LookupRemote asks a node for the entries of keys, in order, from one
// snapshot of its table.
func (c *Client) LookupRemote(ctx context.Context, keys [][]byte) ([]shard.Entry, error) {
	var rep *tenurev1.BatchLookupReply
	err := c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) (err error) {
		rep, err = tc.BatchLookup(ctx, &tenurev1.BatchLookupRequest{Keys: keys})
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(rep.GetEntries()) != len(keys) {
		return nil, fmt.Errorf("client: BatchLookup answered %d entries for %d keys", len(rep.GetEntries()), len(keys))
	}
	return entriesFromPB(rep.GetEntries())
}

// ShardFilter selects shards for Shards. The zero value selects all.
type ShardFilter struct {
	// Node, when not empty, keeps the shards this node leads or should
	// lead.
	Node string
	// State is kept when ByState is set.
	State   shard.State
	ByState bool
}

// shardsPageSize is the page size Shards asks for (tests lower it).
var shardsPageSize int32 = tenurev1.MaxPageSize

// Shards asks a node for the entries of the shards f selects, in shard
// order, a page of tenurev1.MaxPageSize at a time. Pages are read from the
// table as it is when each is asked for.
func (c *Client) Shards(ctx context.Context, f ShardFilter) ([]shard.Entry, error) {
	req := &tenurev1.ListShardsRequest{Node: f.Node, FilterState: f.ByState, PageSize: shardsPageSize}
	if f.ByState {
		req.State = tenurev1.StateToPB(f.State)
	}
	entries, err := tenurev1.AllPages(req, func(req *tenurev1.ListShardsRequest) (rep *tenurev1.ListShardsReply, err error) {
		err = c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) (err error) {
			rep, err = tc.ListShards(ctx, req)
			return err
		})
		return rep, err
	})
	if err != nil {
		return nil, err
	}
	return entriesFromPB(entries)
}

// Shard asks a node for one shard's entry.
func (c *Client) Shard(ctx context.Context, s uint32) (shard.Entry, error) {
	var rep *tenurev1.ShardEntry
	err := c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) (err error) {
		rep, err = tc.GetShard(ctx, &tenurev1.GetShardRequest{Shard: s})
		return err
	})
	if err != nil {
		return shard.Entry{}, err
	}
	return tenurev1.EntryFromPB(rep)
}

// Cluster asks a node for the members, voters, configuration and health
// it sees.
func (c *Client) Cluster(ctx context.Context) (*tenurev1.ClusterReply, error) {
	var rep *tenurev1.ClusterReply
	err := c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) (err error) {
		rep, err = tc.Cluster(ctx, &tenurev1.ClusterRequest{})
		return err
	})
	return rep, err
}

// Members asks a node for the members it sees, ordered by NodeID.
func (c *Client) Members(ctx context.Context) ([]*tenurev1.Member, error) {
	rep, err := c.Cluster(ctx)
	if err != nil {
		return nil, err
	}
	return rep.GetMembers(), nil
}

// Drain asks the cluster to drain node: the node hands its shards off and
// stops. It returns once the drain has started.
func (c *Client) Drain(ctx context.Context, node string) error {
	return c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) error {
		_, err := tc.Drain(ctx, &tenurev1.DrainRequest{Node: node})
		return err
	})
}

// Transfer asks shard s's leader to hand it to node, and returns when the
// handoff is done or failed (a *shard.HandoffError).
func (c *Client) Transfer(ctx context.Context, s uint32, node string) error {
	return c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) error {
		_, err := tc.Transfer(ctx, &tenurev1.TransferRequest{Shard: s, Node: node})
		return err
	})
}

// Plan asks a node for its rebalancer's dry run: up to
// tenurev1.MaxPlanMoves of the moves its planner wants now, how many there
// are in all, and whether rebalancing is paused. An administrative call:
// with mTLS it needs a client certificate.
func (c *Client) Plan(ctx context.Context) (*tenurev1.PlanReply, error) {
	var rep *tenurev1.PlanReply
	err := c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) (err error) {
		rep, err = tc.Plan(ctx, &tenurev1.PlanRequest{})
		return err
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// PauseRebalance stops the cluster from moving shards between live
// members by plan.
func (c *Client) PauseRebalance(ctx context.Context) error {
	return c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) error {
		_, err := tc.PauseRebalance(ctx, &tenurev1.PauseRebalanceRequest{})
		return err
	})
}

// ResumeRebalance undoes PauseRebalance.
func (c *Client) ResumeRebalance(ctx context.Context) error {
	return c.call(ctx, func(ctx context.Context, tc tenurev1.TenureClient) error {
		_, err := tc.ResumeRebalance(ctx, &tenurev1.ResumeRebalanceRequest{})
		return err
	})
}

func entriesFromPB(ms []*tenurev1.ShardEntry) ([]shard.Entry, error) {
	out := make([]shard.Entry, len(ms))
	for i, m := range ms {
		e, err := tenurev1.EntryFromPB(m)
		if err != nil {
			return nil, fmt.Errorf("client: entry %d: %w", i, err)
		}
		out[i] = e
	}
	return out, nil
}
