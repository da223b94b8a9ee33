package scalesim

import (
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/shard"
)

type evKind uint8

const (
	evTick           evKind = iota + 1 // a node's loop ticks
	evRound                            // a planning round (all nodes)
	evToVoter                          // a request reaches a voter
	evToNode                           // a voter's reply reaches a node
	evPrepare                          // source → target: prepare for a shard
	evPrepared                         // target → source: ready (ok) or refused
	evPrepareTimeout                   // the source gives up waiting for the target
	evLead                             // source → target: you lead (or: aborted)
	evLeadDone                         // the Lead call returned or timed out
	evClaims                           // leadership gossip reaches the peers
	evGossip                           // a node's memberlist gossip round
	evPacket                           // memberlist broadcasts reach a node
	evFn                               // a scripted action
)

// event is one thing that happens at a virtual instant. Fields are used
// per kind; node events carry the recipient's incarnation so that a
// message to a process that has since stopped is dropped.
type event struct {
	at   time.Duration
	seq  uint64
	kind evKind

	node, from int32
	inc        uint64
	voter      int32
	shard      uint32
	epoch      uint64
	hid        uint64 // a handoff's ID
	ok         bool   // evPrepared: the target is ready
	draining   bool   // evPrepare: the source drains
	gossip     bool   // an evFn of the gossip model
	req        lease.Request
	rep        lease.Reply
	chg        lease.Change
	claims     []shard.LeadershipClaim
	items      []int32
	fn         func()
}

// queue is a binary min-heap of events by (at, seq): events at the same
// instant run in the order they were scheduled, so a run replays exactly.
type queue []*event

func (q queue) less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}

func (q *queue) push(e *event) {
	*q = append(*q, e)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h.less(i, p) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *queue) pop() *event {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = nil
	h = h[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h) && h.less(l, m) {
			m = l
		}
		if r < len(h) && h.less(r, m) {
			m = r
		}
		if m == i {
			break
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
	*q = h
	return top
}
