package rebalance

import (
	"cmp"
	"container/heap"
	"slices"

	"github.com/tenurehq/tenure/shard"
)

// Move is one change of leader: Shard goes from From to To. From is the
// leader Plan was given — "" for a shard nobody leads, or a node that is no
// longer an eligible member (it left, failed, is draining or has weight 0).
// To is always an eligible member.
type Move struct {
	Shard    uint32
	From, To string
}

// Plan returns the target leader of every shard and the moves that get
// there from current, where current[s] is the node that leads shard s now
// ("" if none) and members are the active members. Members with Weight 0
// own nothing; the others are eligible, each with the load range Bounds
// gives it.
//
// Plan moves as few shards as the bounds allow: every shard whose leader is
// not eligible, plus, from members above their Max, exactly the excess,
// plus, when members below their Min cannot be filled from those, the
// fewest extra shards from the most loaded members (by load per unit of
// weight) that stay at or above their own Min. Nothing else moves: after a
// leave only the leaver's shards move, and after a join the joiner is
// lifted to its Min and members over their new Max shed the excess.
//
// Which shards move, and where, follows the ring (shard.Assign over members
// with p.Ring): a shard that must move goes to its preferred owner on the
// ring when that member must receive, or may and is below its fair share;
// otherwise it goes to the receiving member with the lowest load per unit
// of weight. A member that must shed gives up first the shards the ring
// prefers on a receiving member, then those it prefers elsewhere, lowest
// shard first. The ring ignores weights, which is why it only guides
// placement up to the fair share.
//
// Moves are ordered by urgency — shards whose leader is not eligible first,
// then the rebalancing moves — and by shard within each group; with
// p.MaxMoves > 0 only the first MaxMoves are returned. target always agrees
// with the moves returned: target[s] is the move's To for a moved shard,
// current[s] when that is eligible, and "" otherwise. Calling Plan again
// with target makes no moves when the returned moves were not capped; when
// they were, the calls that follow finish the plan with the same total
// number of moves.
//
// With no eligible member every shard is left without a leader: target is
// all "" and there are no moves. That is not an error.
//
// Plan is deterministic: the same arguments, in any member order, give the
// same result. It does not retain or modify its arguments.
func Plan(p Policy, shards int, current []string, members []shard.Member) (target []string, moves []Move, err error) {
	p = p.withDefaults()
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	if shards < 1 || shards > shard.MaxShards {
		return nil, nil, invalid("shards", "must be in [1, %d], got %d", shard.MaxShards, shards)
	}
	if p.Ring.Shards != 0 && p.Ring.Shards != shards {
		return nil, nil, invalid("Policy.Ring.Shards", "is %d, but Plan was given %d shards", p.Ring.Shards, shards)
	}
	if len(current) != shards {
		return nil, nil, invalid("current", "has %d entries for %d shards", len(current), shards)
	}
	bs, err := bounds(p, shards, members)
	if err != nil {
		return nil, nil, err
	}

	// The eligible members, by ID. index is only looked up, never ranged
	// over, so map order cannot leak into the plan.
	var nodes []*node
	index := make(map[string]int32, len(bs))
	for _, b := range bs {
		if b.Weight > 0 {
			index[b.ID] = int32(len(nodes))
			nodes = append(nodes, &node{id: b.ID, weight: int64(b.Weight), min: b.Min, max: b.Max, fair: b.ceil})
		}
	}
	target = make([]string, shards)
	if len(nodes) == 0 {
		return target, nil, nil
	}
	var pool []uint32 // shards that move, ascending once complete
	for s, id := range current {
		if i, ok := index[id]; ok {
			nodes[i].held = append(nodes[i].held, uint32(s))
			target[s] = id
		} else {
			pool = append(pool, uint32(s))
		}
	}
	orphans := len(pool)
	ring := p.Ring
	ring.Shards = shards
	a, err := shard.Assign(ring, members)
	if err != nil {
		return nil, nil, invalid("members", "cannot be hashed onto the ring: %v", err)
	}
	pref := make([]int32, shards) // preferred owner of each shard, index into nodes
	for s := range pref {
		pref[s] = -1
		if m, ok := a.Owner(shard.ID(s)); ok {
			if j, ok := index[m.ID]; ok {
				pref[s] = j
			}
		}
	}

	spare := counts(nodes, shards)

	// Members over their target shed, ring-preferred-elsewhere shards first.
	receiving := func(j int32) bool {
		return j >= 0 && (nodes[j].need > 0 || spare > 0 && nodes[j].room > 0)
	}
	for i, n := range nodes {
		shed := len(n.held) - n.keep
		if shed <= 0 {
			continue
		}
		rank := func(s uint32) int {
			switch j := pref[s]; {
			case j != int32(i) && receiving(j):
				return 0
			case j != int32(i):
				return 1
			default:
				return 2
			}
		}
		cands := slices.Clone(n.held) // ascending, and the sort is stable
		slices.SortStableFunc(cands, func(a, b uint32) int { return cmp.Compare(rank(a), rank(b)) })
		pool = append(pool, cands[:shed]...)
	}
	slices.Sort(pool)

	// Place the pool: first every shard whose ring owner must receive,
	// then every shard whose ring owner may and is still below its fair
	// share, then the rest on the lightest members. The ring ignores
	// weights, so letting it fill members up to their max would leave the
	// light members at their caps and the heavy ones at their floors.
	to := make([]int32, len(pool))
	for k, s := range pool {
		to[k] = -1
		if j := pref[s]; j >= 0 && nodes[j].need > 0 {
			to[k] = j
			nodes[j].need--
			nodes[j].got++
		}
	}
	for k, s := range pool {
		if j := pref[s]; to[k] < 0 && spare > 0 && j >= 0 && nodes[j].room > 0 && nodes[j].max-nodes[j].room < nodes[j].fair {
			to[k] = j
			nodes[j].room--
			nodes[j].got++
			spare--
		}
	}
	needy := newQueue(nodes, false, func(n *node) bool { return n.need > 0 })
	var roomy *queue // built once the needs are met, as loads change until then
	for k := range pool {
		if to[k] >= 0 {
			continue
		}
		if needy.Len() > 0 {
			j := heap.Pop(needy).(int32)
			n := nodes[j]
			n.need--
			n.got++
			if n.need > 0 {
				heap.Push(needy, j)
			}
			to[k] = j
			continue
		}
		if roomy == nil {
			roomy = newQueue(nodes, false, func(n *node) bool { return n.room > 0 })
		}
		if spare == 0 || roomy.Len() == 0 {
			// The pool holds exactly the needs plus the spare shards.
			panic("rebalance: a moving shard has nowhere to go")
		}
		j := heap.Pop(roomy).(int32)
		n := nodes[j]
		n.room--
		n.got++
		spare--
		if n.room > 0 {
			heap.Push(roomy, j)
		}
		to[k] = j
	}

	moves = make([]Move, len(pool))
	for k, s := range pool {
		moves[k] = Move{Shard: s, From: current[s], To: nodes[to[k]].id}
	}
	if orphans > 0 && orphans < len(moves) {
		// Shards without an eligible leader first, each group by shard.
		slices.SortStableFunc(moves, func(x, y Move) int {
			_, xa := index[x.From]
			_, ya := index[y.From]
			switch {
			case xa == ya:
				return 0
			case ya:
				return -1
			default:
				return 1
			}
		})
	}
	if p.MaxMoves > 0 && len(moves) > p.MaxMoves {
		moves = moves[:p.MaxMoves:p.MaxMoves]
	}
	for _, m := range moves {
		target[m.Shard] = m.To
	}
	if len(moves) == 0 {
		moves = nil
	}
	return target, moves, nil
}

// node is an eligible member during one Plan call.
type node struct {
	id       string
	weight   int64
	min, max int      // from Bounds
	fair     int      // ⌈fair share⌉
	held     []uint32 // the shards it leads now, ascending
	keep     int      // its count once forced moves are done: within [min, max]
	need     int      // shards it must still receive to reach keep
	room     int      // shards it may receive beyond keep, from the spare ones; 0 if it sheds
	got      int      // shards placed on it so far
}

// load is the number of shards n will lead once the moves placed so far
// are done. Only receivers are asked, and they shed nothing.
func (n *node) load() int64 { return int64(len(n.held) + n.got) }

// counts sets keep, need and room on every node and returns the number of
// spare shards: moving shards beyond those the needs take, which may go to
// any member with room.
//
// With keep = clamp(held, min, max) every node moves only what its own
// bounds force. If the keeps add up to P that is the plan; if they fall
// short, the spare shards go where there is room, which costs no extra
// move; if they exceed P, the floors of the underloaded nodes cannot all
// be met from the forced moves, and the most loaded nodes above their min
// give up one shard at a time — each such move is unavoidable, so the plan
// still moves the fewest shards possible:
//
//	moves = (shards without an eligible leader) + Σ max(0, held − max) + max(0, Σ keep − P)
func counts(nodes []*node, shards int) (spare int) {
	sum := 0
	for _, n := range nodes {
		n.keep = min(max(len(n.held), n.min), n.max)
		sum += n.keep
	}
	if sum > shards {
		donors := newQueue(nodes, true, func(n *node) bool { return n.keep > n.min })
		for ; sum > shards; sum-- {
			j := heap.Pop(donors).(int32)
			n := nodes[j]
			n.keep--
			if n.keep > n.min {
				heap.Push(donors, j)
			}
		}
	}
	for _, n := range nodes {
		switch h := len(n.held); {
		case n.keep > h:
			n.need = n.keep - h
			n.room = n.max - n.keep
		case n.keep == h:
			n.room = n.max - n.keep
		}
	}
	return shards - sum
}

// queue is a heap of node indices ordered by load per unit of weight,
// lightest first (heaviest first if heaviest is set), ties by ID. Donors
// are ordered by keep, receivers by load.
type queue struct {
	nodes    []*node
	idx      []int32
	heaviest bool
}

func newQueue(nodes []*node, heaviest bool, include func(*node) bool) *queue {
	q := &queue{nodes: nodes, heaviest: heaviest}
	for i, n := range nodes {
		if include(n) {
			q.idx = append(q.idx, int32(i))
		}
	}
	heap.Init(q)
	return q
}

func (q *queue) Len() int { return len(q.idx) }

func (q *queue) Less(i, j int) bool {
	a, b := q.nodes[q.idx[i]], q.nodes[q.idx[j]]
	var la, lb int64
	if q.heaviest {
		la, lb = int64(a.keep), int64(b.keep)
	} else {
		la, lb = a.load(), b.load()
	}
	// la/wa vs lb/wb, exact: loads ≤ 2^20 and weights ≤ 2^32.
	x, y := la*b.weight, lb*a.weight
	if x != y {
		return (x < y) != q.heaviest
	}
	return a.id < b.id
}

func (q *queue) Swap(i, j int) { q.idx[i], q.idx[j] = q.idx[j], q.idx[i] }

func (q *queue) Push(x any) { q.idx = append(q.idx, x.(int32)) }

func (q *queue) Pop() any {
	x := q.idx[len(q.idx)-1]
	q.idx = q.idx[:len(q.idx)-1]
	return x
}

// Target makes a Policy a shard.Planner: the target of Plan, for
// shard.Config.Planner.
func (p Policy) Target(shards int, current []string, members []shard.Member) ([]string, error) {
	target, _, err := Plan(p, shards, current, members)
	return target, err
}

var _ shard.Planner = Policy{}
