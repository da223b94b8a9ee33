package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// Work is what Do runs on a shard's leader: e names the leader to send the
// work to (e.Addr) and the epoch to fence it with (e.Epoch). Work returns
// the error of its call as it came (Do passes it through
// tenurev1.FromStatus): a service that answers tenurev1.ToStatus of a
// *shard.NotLeaderError redirects Do to the leader it names.
type Work func(ctx context.Context, e shard.Entry) error

// Do runs work for key's shard on the shard's leader. See DoShard.
func (c *Client) Do(ctx context.Context, key []byte, work Work) error {
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	return c.DoShard(ctx, uint32(shard.Of(key, c.Table().Shards())), work)
}

// DoShard runs work on shard s's leader, as the local table names it, until
// work succeeds, fails for good, or ctx ends:
//
//   - a "not leader" answer (errors.Is(err, shard.ErrNotLeader)) carrying a
//     leader of an epoch at least the table's is followed at once, once per
//     new leader; other redirects wait for the table to change or for a
//     backoff, whichever is first;
//   - errors a new leadership cures (UNAVAILABLE, a draining or stopped
//     node, a shard without a leader) are retried with backoff, with the
//     entry the table holds then;
//   - anything else is returned as work returned it, through
//     tenurev1.FromStatus.
//
// When ctx ends, DoShard returns the last error of work joined with the
// context's.
func (c *Client) DoShard(ctx context.Context, s uint32, work Work) error {
	if err := c.WaitReady(ctx); err != nil {
		return err
	}
	var (
		redirect *shard.NotLeaderError // the freshest redirect received
		tried    shard.Entry           // the entry of the previous attempt
		failures int
	)
	for attempt := 0; ; attempt++ {
		t := c.Table()
		e, err := t.Shard(int64(s))
		if err != nil {
			return err
		}
		// A redirect from a leader beats a table that has not heard of
		// the new leadership yet; the table wins once it catches up.
		if redirect != nil && redirect.Epoch >= e.Epoch && (redirect.Leader != "" || redirect.Addr != "") {
			e.Leader, e.Addr, e.Epoch = redirect.Leader, redirect.Addr, redirect.Epoch
			if e.Leader != "" {
				e.State = shard.Led
			}
		}
		changed := c.Changed()
		err = tenurev1.FromStatus(work(ctx, e))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, context.Cause(ctx))
		}
		var nle *shard.NotLeaderError
		switch {
		case errors.As(err, &nle):
			if redirect == nil || nle.Epoch >= redirect.Epoch {
				redirect = nle
			}
			// A leader not tried yet: go there now.
			if nle.Leader != "" && nle.Epoch >= e.Epoch && (nle.Leader != e.Leader || nle.Epoch != e.Epoch) && attempt < 16 {
				tried = e
				continue
			}
		case errors.Is(err, shard.ErrNotLeader), retryable(err):
		default:
			return err
		}
		tried = e
		failures++
		c.log.Debug("work on a shard's leader failed; retrying", "shard", s, "leader", tried.Leader, "epoch", tried.Epoch, "err", err)
		if !c.waitChange(ctx, changed, c.backoff(failures)) {
			return errors.Join(err, context.Cause(ctx))
		}
	}
}

// retryable reports whether err is one a new leadership or another node
// cures.
func retryable(err error) bool {
	if errors.Is(err, shard.ErrDraining) || errors.Is(err, shard.ErrNotStarted) {
		return true
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Aborted:
		return true
	}
	return false
}

// waitChange waits for the table to change, d to pass or ctx to end, and
// reports whether ctx is still live.
func (c *Client) waitChange(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-changed:
		return true
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// call runs f on a node, starting with the endpoint the client follows and
// moving to the next while the node is unreachable (UNAVAILABLE without a
// Tenure reason). The error comes through tenurev1.FromStatus.
func (c *Client) call(ctx context.Context, f func(context.Context, tenurev1.TenureClient) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	c.mu.Lock()
	first := c.endpoint
	c.mu.Unlock()
	var err error
	for k := range c.conns {
		i := (first + k) % len(c.conns)
		err = f(ctx, tenurev1.NewTenureClient(c.conns[i]))
		if err == nil {
			return nil
		}
		mapped := tenurev1.FromStatus(err)
		var te *tenurev1.Error
		if status.Code(err) != codes.Unavailable || errors.As(mapped, &te) || ctx.Err() != nil {
			return mapped
		}
		c.log.Debug("endpoint unavailable; trying the next", "endpoint", c.cfg.Endpoints[i], "err", err)
	}
	return fmt.Errorf("client: no endpoint answered: %w", tenurev1.FromStatus(err))
}
