package lease_test

import (
	"errors"
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// The voter rules of docs/design.md §2.3, one table row per
// rule. Every row runs a script of requests against one voter (ID "v1",
// LeaseDuration 10 s, Boot 1) and compares the reply to the last request
// in full. The script persists the records each Handle returns, as a
// driver would, so a restart step brings the voter back from exactly what
// it promised.

const ld = 10 * time.Second

// gen is the generation a voter with boot counter boot hands out as its
// seq-th new session.
func gen(boot, seq uint32) uint64 { return uint64(boot)<<32 | uint64(seq) }

// vstep is one step of a voter script: a request from a node, or a restart
// of the voter from its persisted records.
type vstep struct {
	at      time.Duration
	restart bool
	from    string
	inc     uint64
	ops     []lease.Op
}

func ka(at time.Duration, from string, inc uint64, ops ...lease.Op) vstep {
	return vstep{at: at, from: from, inc: inc, ops: ops}
}

func restartAt(at time.Duration) vstep { return vstep{at: at, restart: true} }

func grant(s uint32, e uint64) lease.Op { return lease.Op{Kind: lease.OpGrant, Shard: s, Epoch: e} }

func release(s uint32, e uint64) lease.Op {
	return lease.Op{Kind: lease.OpRelease, Shard: s, Epoch: e}
}

func transfer(s uint32, e uint64, to string, toInc uint64) lease.Op {
	return lease.Op{Kind: lease.OpTransfer, Shard: s, Epoch: e, To: to, ToInc: toInc}
}

func rec(e uint64, holder string, g uint64) lease.Record {
	return lease.Record{Epoch: e, Holder: holder, HolderGen: g}
}

func released(e uint64, holder string, g uint64) lease.Record {
	return lease.Record{Epoch: e, Holder: holder, HolderGen: g, Released: true}
}

func accepted(r lease.Record, g uint64) lease.Result {
	return lease.Result{Refusal: lease.Accepted, Record: r, Gen: g}
}

func refused(why lease.Refusal, r lease.Record) lease.Result {
	return lease.Result{Refusal: why, Record: r}
}

func held(s uint32, r lease.Record) lease.ShardRecord { return lease.ShardRecord{Shard: s, Record: r} }

// voterRun is a voter driven by a script, with the store its driver keeps.
type voterRun struct {
	v     *lease.Voter
	boot  uint32
	store map[uint32]lease.Record
	seq   uint64
	// notices is each node's last NoticesAt, echoed as NoticesSince.
	notices map[string]lease.Time
}

func newVoterRun(t *testing.T) *voterRun {
	t.Helper()
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: ld, Boot: 1}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return &voterRun{v: v, boot: 1, store: map[uint32]lease.Record{}, notices: map[string]lease.Time{}}
}

// do runs one step and returns the reply and the records to persist, which
// it persists.
func (r *voterRun) do(t *testing.T, s vstep) (lease.Reply, []lease.ShardRecord) {
	t.Helper()
	now := lease.Time(s.at)
	if s.restart {
		r.boot++
		v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: ld, Boot: r.boot, Restarted: true},
			maps.Clone(r.store), now)
		if err != nil {
			t.Fatal(err)
		}
		r.v = v
		return lease.Reply{}, nil
	}
	r.seq++
	rep, dirty := r.v.Handle(lease.Request{From: s.from, Inc: s.inc, Seq: r.seq, Ops: s.ops, NoticesSince: r.notices[s.from]}, now)
	if !rep.Stale {
		r.notices[s.from] = rep.NoticesAt // as a holder echoes it
	}
	for _, d := range dirty {
		r.store[d.Shard] = d.Record
	}
	return rep, dirty
}

func TestVoter(t *testing.T) {
	var (
		g11, g12, g13 = gen(1, 1), gen(1, 2), gen(1, 3)
		g21           = gen(2, 1)
	)
	const ns = time.Nanosecond
	tests := []struct {
		name string
		give []vstep
		// want is the reply to the last step. Voter, Seq and each
		// Result's Op are filled in from the request.
		want lease.Reply
		// wantDirty is what the last step asks the driver to persist.
		wantDirty []lease.ShardRecord
		// wantRecords, when set, are the voter's records afterwards.
		wantRecords map[uint32]lease.Record
	}{
		// KeepAlive(n, inc).
		{
			name: "keep-alive/first from a node starts a session",
			give: []vstep{ka(0, "n1", 1)},
			want: lease.Reply{Gen: g11},
		},
		{
			name: "keep-alive/within the lease keeps the gen",
			give: []vstep{ka(0, "n1", 1), ka(ld-ns, "n1", 1)},
			want: lease.Reply{Gen: g11},
		},
		{
			name: "keep-alive/the lease runs from the latest keep-alive",
			give: []vstep{ka(0, "n1", 1), ka(6*time.Second, "n1", 1), ka(6*time.Second+ld-ns, "n1", 1)},
			want: lease.Reply{Gen: g11},
		},
		{
			name: "keep-alive/at LD after the last one starts a new gen",
			give: []vstep{ka(0, "n1", 1), ka(ld, "n1", 1)},
			want: lease.Reply{Gen: g12},
		},
		{
			name:        "keep-alive/older incarnation is ignored and told it is stale",
			give:        []vstep{ka(0, "n1", 2), ka(time.Second, "n1", 1, grant(7, 1))},
			want:        lease.Reply{Stale: true, IncLive: true},
			wantRecords: map[uint32]lease.Record{7: {}},
		},
		{
			name:        "keep-alive/older incarnation hears that the newer one's session expired",
			give:        []vstep{ka(0, "n1", 2), ka(ld, "n1", 1)},
			want:        lease.Reply{Stale: true},
			wantRecords: map[uint32]lease.Record{},
		},
		{
			name: "keep-alive/older incarnation does not refresh the session",
			give: []vstep{ka(0, "n1", 2), ka(9*time.Second, "n1", 1), ka(ld, "n1", 2)},
			want: lease.Reply{Gen: g12},
		},
		{
			name: "keep-alive/newer incarnation starts a new gen",
			give: []vstep{ka(0, "n1", 1), ka(time.Second, "n1", 2)},
			want: lease.Reply{Gen: g12},
		},
		{
			name: "keep-alive/old incarnation's gen keeps protecting its records",
			give: []vstep{
				ka(0, "n1", 1, grant(7, 1)),
				ka(5*time.Second, "n1", 2),
				ka(8*time.Second, "n1", 2),
				ka(ld-ns, "n2", 1, grant(7, 2)),
			},
			want: lease.Reply{Gen: g13, Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 2)}}},
		},
		{
			name: "keep-alive/old incarnation's gen expires by time alone",
			give: []vstep{
				ka(0, "n1", 1, grant(7, 1)),
				ka(5*time.Second, "n1", 2),
				ka(8*time.Second, "n1", 2),
				ka(ld, "n2", 1, grant(7, 2)),
			},
			want: lease.Reply{
				Gen:     g13,
				Results: []lease.Result{accepted(rec(2, "n2", g13), g13)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", g13))},
				Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 2)}},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", g13))},
		},
		{
			name: "keep-alive/gens are not reused after a restart with a higher boot",
			give: []vstep{ka(0, "n1", 1), restartAt(time.Second), ka(2*time.Second, "n1", 1)},
			want: lease.Reply{Gen: g21},
		},

		// Grant(s, e, n, inc).
		{
			name:      "grant/first grant of a shard",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1))},
			want:      lease.Reply{Gen: g11, Results: []lease.Result{accepted(rec(1, "n1", g11), g11)}, Held: []lease.ShardRecord{held(7, rec(1, "n1", g11))}},
			wantDirty: []lease.ShardRecord{held(7, rec(1, "n1", g11))},
		},
		{
			name:        "grant/epoch 0 is never granted",
			give:        []vstep{ka(0, "n1", 1, grant(7, 0))},
			want:        lease.Reply{Gen: g11, Results: []lease.Result{refused(lease.RefusedEpoch, lease.Record{})}},
			wantRecords: map[uint32]lease.Record{7: {}},
		},
		{
			name: "grant/equal epoch is refused",
			give: []vstep{ka(0, "n1", 1, grant(7, 3), release(7, 3)), ka(time.Second, "n2", 1, grant(7, 3))},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedEpoch, released(3, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}}},
		},
		{
			name: "grant/equal epoch is refused even to the holder",
			give: []vstep{ka(0, "n1", 1, grant(7, 3)), ka(time.Second, "n1", 1, grant(7, 3))},
			want: lease.Reply{
				Gen:     g11,
				Results: []lease.Result{refused(lease.RefusedEpoch, rec(3, "n1", g11))},
				Held:    []lease.ShardRecord{held(7, rec(3, "n1", g11))},
			},
		},
		{
			name: "grant/lower epoch is refused even over a released record",
			give: []vstep{ka(0, "n1", 1, grant(7, 5), release(7, 5)), ka(time.Second, "n2", 1, grant(7, 4))},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedEpoch, released(5, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}}},
		},
		{
			name: "grant/released record goes to another node at once",
			give: []vstep{
				ka(0, "n1", 1, grant(7, 1)),
				ka(time.Second, "n1", 1, release(7, 1)),
				ka(2*time.Second, "n2", 1, grant(7, 2)),
			},
			want: lease.Reply{
				Gen:     g12,
				Results: []lease.Result{accepted(rec(2, "n2", g12), g12)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", g12))},
				Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", g12))},
		},
		{
			name: "grant/live other holder is refused with its record",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(ld-ns, "n2", 1, grant(7, 2))},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}}},
		},
		{
			name: "grant/holder's keep-alives keep its record protected",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(9*time.Second, "n1", 1), ka(15*time.Second, "n2", 1, grant(7, 2))},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}}},
		},
		{
			name: "grant/dead holder's record is granted",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(ld, "n2", 1, grant(7, 2))},
			want: lease.Reply{
				Gen:     g12,
				Results: []lease.Result{accepted(rec(2, "n2", g12), g12)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", g12))},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", g12))},
		},
		{
			name: "grant/holder back with a new gen no longer protects the old one",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(ld, "n1", 1), ka(ld, "n2", 1, grant(7, 2))},
			want: lease.Reply{
				Gen:     g13,
				Results: []lease.Result{accepted(rec(2, "n2", g13), g13)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", g13))},
				Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 2)}},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", g13))},
		},
		{
			name: "grant/same holder with the same gen re-grants itself a higher epoch",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 1, grant(7, 2))},
			want: lease.Reply{
				Gen:     g11,
				Results: []lease.Result{accepted(rec(2, "n1", g11), g11)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n1", g11))},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n1", g11))},
		},
		{
			name: "grant/same node under a new incarnation is refused while the old gen lives",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 2, grant(7, 2))},
			want: lease.Reply{
				Gen:     g12,
				Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))},
				Held:    []lease.ShardRecord{held(7, rec(1, "n1", g11))},
			},
		},
		{
			name: "grant/refused during the restart grace period",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), restartAt(time.Second), ka(time.Second+ld-ns, "n2", 1, grant(7, 2))},
			want: lease.Reply{Gen: g21, Results: []lease.Result{refused(lease.RefusedGrace, rec(1, "n1", g11))}},
		},
		{
			name: "grant/grace refuses a released record and its own holder too",
			give: []vstep{ka(0, "n1", 1, grant(7, 1), release(7, 1)), restartAt(time.Second), ka(2*time.Second, "n1", 1, grant(7, 2))},
			want: lease.Reply{Gen: g21, Results: []lease.Result{refused(lease.RefusedGrace, released(1, "n1", g11))}},
		},
		{
			name: "grant/accepted once the grace period is over",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), restartAt(time.Second), ka(time.Second+ld, "n2", 1, grant(7, 2))},
			want: lease.Reply{
				Gen:     g21,
				Results: []lease.Result{accepted(rec(2, "n2", g21), g21)},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", g21))},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", g21))},
		},
		{
			// The holder sees the gen change in the reply and must
			// re-grant; its keep-alives do not revive the gen its record
			// names.
			name: "grant/holder's keep-alives during grace do not revive its old gen",
			give: []vstep{
				ka(0, "n1", 1, grant(7, 1)),
				restartAt(time.Second),
				ka(5*time.Second, "n1", 1),
				ka(time.Second+ld, "n2", 1, grant(7, 2)),
			},
			want: lease.Reply{
				Gen:     gen(2, 2),
				Results: []lease.Result{accepted(rec(2, "n2", gen(2, 2)), gen(2, 2))},
				Held:    []lease.ShardRecord{held(7, rec(2, "n2", gen(2, 2)))},
				Started: []lease.NodeGen{{Node: "n1", Gen: gen(2, 1)}},
			},
			wantDirty: []lease.ShardRecord{held(7, rec(2, "n2", gen(2, 2)))},
		},

		// Release(s, e, n).
		{
			name:      "release/holder's current incarnation releases its epoch",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 1, release(7, 1))},
			want:      lease.Reply{Gen: g11, Results: []lease.Result{accepted(released(1, "n1", g11), 0)}},
			wantDirty: []lease.ShardRecord{held(7, released(1, "n1", g11))},
		},
		{
			name: "release/repeating it is accepted and persists nothing",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 1, release(7, 1)), ka(2*time.Second, "n1", 1, release(7, 1))},
			want: lease.Reply{Gen: g11, Results: []lease.Result{accepted(released(1, "n1", g11), 0)}},
		},
		{
			name: "release/another epoch is refused",
			give: []vstep{ka(0, "n1", 1, grant(7, 2)), ka(time.Second, "n1", 1, release(7, 1))},
			want: lease.Reply{
				Gen:     g11,
				Results: []lease.Result{refused(lease.RefusedEpoch, rec(2, "n1", g11))},
				Held:    []lease.ShardRecord{held(7, rec(2, "n1", g11))},
			},
		},
		{
			name: "release/another node is refused",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n2", 1, release(7, 1))},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedEpoch, rec(1, "n1", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 1)}}},
		},
		{
			name: "release/a shard never granted is refused",
			give: []vstep{ka(0, "n1", 1, release(7, 0))},
			want: lease.Reply{Gen: g11, Results: []lease.Result{refused(lease.RefusedEpoch, lease.Record{})}},
		},
		{
			name:        "release/an older incarnation is ignored",
			give:        []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 2), ka(2*time.Second, "n1", 1, release(7, 1))},
			want:        lease.Reply{Stale: true, IncLive: true},
			wantRecords: map[uint32]lease.Record{7: rec(1, "n1", g11)},
		},
		{
			// A new process under the same NodeID must not end the
			// protection of the old one while the old gen is live: the
			// old process still leads by its own clock.
			name:      "release/a new incarnation cannot release a record of its predecessor's live gen",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 2, release(7, 1))},
			want:      lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))}, Held: []lease.ShardRecord{held(7, rec(1, "n1", g11))}},
			wantDirty: nil,
		},
		{
			name:      "release/a new incarnation releases its predecessor's record once that gen expired",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 2), ka(ld, "n1", 2, release(7, 1))},
			want:      lease.Reply{Gen: g12, Results: []lease.Result{accepted(released(1, "n1", g11), 0)}, Expired: nil},
			wantDirty: []lease.ShardRecord{held(7, released(1, "n1", g11))},
		},
		{
			name:      "release/a node releases the record of its own expired session",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1)), ka(ld, "n1", 1, release(7, 1))},
			want:      lease.Reply{Gen: g12, Results: []lease.Result{accepted(released(1, "n1", g11), 0)}},
			wantDirty: []lease.ShardRecord{held(7, released(1, "n1", g11))},
		},
		{
			name:      "release/refused in grace when it names an older gen (every gen is live then)",
			give:      []vstep{ka(0, "n1", 1, grant(7, 1)), restartAt(time.Second), ka(2*time.Second, "n1", 1, release(7, 1))},
			want:      lease.Reply{Gen: gen(2, 1), Results: []lease.Result{refused(lease.RefusedHeld, rec(1, "n1", g11))}, Held: []lease.ShardRecord{held(7, rec(1, "n1", g11))}},
			wantDirty: nil,
		},

		// Transfer(s, (e, n) → (d, inc_d)).
		{
			name: "transfer/names the target's gen at e+1",
			give: []vstep{
				ka(0, "n2", 1),
				ka(time.Second, "n1", 1, grant(7, 4)),
				ka(2*time.Second, "n1", 1, transfer(7, 4, "n2", 1)),
			},
			want:      lease.Reply{Gen: g12, Results: []lease.Result{accepted(rec(5, "n2", g11), g11)}},
			wantDirty: []lease.ShardRecord{held(7, rec(5, "n2", g11))},
		},
		{
			name: "transfer/a new incarnation cannot hand off its predecessor's record",
			give: []vstep{
				ka(0, "n2", 1),
				ka(time.Second, "n1", 1, grant(7, 4)),
				ka(2*time.Second, "n1", 2, transfer(7, 4, "n2", 1)),
			},
			want:      lease.Reply{Gen: g13, Results: []lease.Result{refused(lease.RefusedHeld, rec(4, "n1", g12))}, Held: []lease.ShardRecord{held(7, rec(4, "n1", g12))}},
			wantDirty: nil,
		},
		{
			name:      "grant/the last epoch is never granted: nothing could follow it",
			give:      []vstep{ka(0, "n1", 1, grant(7, math.MaxUint64))},
			want:      lease.Reply{Gen: g11, Results: []lease.Result{refused(lease.RefusedEpoch, lease.Record{})}},
			wantDirty: nil,
		},
		{
			name: "transfer/another epoch is refused",
			give: []vstep{ka(0, "n2", 1), ka(time.Second, "n1", 1, grant(7, 4)), ka(2*time.Second, "n1", 1, transfer(7, 3, "n2", 1))},
			want: lease.Reply{
				Gen:     g12,
				Results: []lease.Result{refused(lease.RefusedEpoch, rec(4, "n1", g12))},
				Held:    []lease.ShardRecord{held(7, rec(4, "n1", g12))},
			},
		},
		{
			name: "transfer/a node other than the holder is refused",
			give: []vstep{ka(0, "n2", 1), ka(time.Second, "n1", 1, grant(7, 4)), ka(2*time.Second, "n3", 1, transfer(7, 4, "n2", 1))},
			want: lease.Reply{Gen: g13, Results: []lease.Result{refused(lease.RefusedEpoch, rec(4, "n1", g12))}, Started: []lease.NodeGen{{Node: "n1", Gen: gen(1, 2)}, {Node: "n2", Gen: gen(1, 1)}}},
		},
		{
			name: "transfer/target without a session is refused",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(time.Second, "n1", 1, transfer(7, 1, "n2", 1))},
			want: lease.Reply{
				Gen:     g11,
				Results: []lease.Result{refused(lease.RefusedTarget, rec(1, "n1", g11))},
				Held:    []lease.ShardRecord{held(7, rec(1, "n1", g11))},
			},
		},
		{
			name: "transfer/target whose session expired is refused",
			give: []vstep{ka(0, "n2", 1), ka(time.Second, "n1", 1, grant(7, 1)), ka(ld, "n1", 1, transfer(7, 1, "n2", 1))},
			want: lease.Reply{
				Gen:     g12,
				Results: []lease.Result{refused(lease.RefusedTarget, rec(1, "n1", g12))},
				Held:    []lease.ShardRecord{held(7, rec(1, "n1", g12))},
				Expired: []lease.NodeGen{{Node: "n2", Gen: g11}},
			},
		},
		{
			name: "transfer/target live under another incarnation is refused",
			give: []vstep{ka(0, "n2", 2), ka(time.Second, "n1", 1, grant(7, 1)), ka(2*time.Second, "n1", 1, transfer(7, 1, "n2", 1), transfer(7, 1, "n2", 3))},
			want: lease.Reply{
				Gen: g12,
				Results: []lease.Result{
					refused(lease.RefusedTarget, rec(1, "n1", g12)),
					refused(lease.RefusedTarget, rec(1, "n1", g12)),
				},
				Held: []lease.ShardRecord{held(7, rec(1, "n1", g12))},
			},
		},
		{
			// The holder counts this refusal as acceptance: the record
			// names the target at e+1.
			name: "transfer/a retry after acceptance is refused with the record naming the target",
			give: []vstep{
				ka(0, "n2", 1),
				ka(time.Second, "n1", 1, grant(7, 4)),
				ka(2*time.Second, "n1", 1, transfer(7, 4, "n2", 1)),
				ka(3*time.Second, "n1", 1, transfer(7, 4, "n2", 1)),
			},
			want: lease.Reply{Gen: g12, Results: []lease.Result{refused(lease.RefusedEpoch, rec(5, "n2", g11))}},
		},
		{
			name: "transfer/an older incarnation of the sender is ignored",
			give: []vstep{
				ka(0, "n2", 1),
				ka(time.Second, "n1", 1, grant(7, 4)),
				ka(2*time.Second, "n1", 2),
				ka(3*time.Second, "n1", 1, transfer(7, 4, "n2", 1)),
			},
			want:        lease.Reply{Stale: true, IncLive: true},
			wantRecords: map[uint32]lease.Record{7: rec(4, "n1", g12)},
		},

		// Held: the records naming the sender.
		{
			name: "held/lists the sender's unreleased records by shard",
			give: []vstep{
				ka(0, "n1", 1, grant(9, 1), grant(2, 1), grant(5, 3)),
				ka(0, "n2", 1, grant(4, 1)),
				ka(time.Second, "n1", 1, release(5, 3)),
				ka(2*time.Second, "n1", 1),
			},
			want: lease.Reply{Gen: g11, Held: []lease.ShardRecord{held(2, rec(1, "n1", g11)), held(9, rec(1, "n1", g11))}},
		},
		{
			// The node learns of it and releases what it does not lead.
			name: "held/a record of the sender's expired gen is still listed",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), ka(ld, "n1", 1)},
			want: lease.Reply{Gen: g12, Held: []lease.ShardRecord{held(7, rec(1, "n1", g11))}},
		},
		{
			name: "held/a transferred record moves to the target's list",
			give: []vstep{
				ka(0, "n2", 1),
				ka(time.Second, "n1", 1, grant(7, 4)),
				ka(2*time.Second, "n1", 1, transfer(7, 4, "n2", 1)),
				ka(3*time.Second, "n2", 1),
			},
			want: lease.Reply{Gen: g11, Held: []lease.ShardRecord{held(7, rec(5, "n2", g11))}, Started: []lease.NodeGen{{Node: "n1", Gen: g12}}},
		},
		{
			name: "held/records loaded from the store are listed",
			give: []vstep{ka(0, "n1", 1, grant(7, 1)), restartAt(time.Second), ka(2*time.Second, "n1", 1)},
			want: lease.Reply{Gen: g21, Held: []lease.ShardRecord{held(7, rec(1, "n1", g11))}},
		},

		// Expired and Started: session news since the sender's previous
		// keep-alive.
		{
			name: "notices/a node's first keep-alive lists every live session",
			give: []vstep{ka(0, "n2", 1), ka(time.Second, "n1", 1)},
			want: lease.Reply{Gen: g12, Started: []lease.NodeGen{{Node: "n2", Gen: gen(1, 1)}}},
		},
		{
			name: "notices/sessions begun since the previous keep-alive are listed",
			give: []vstep{ka(0, "n1", 1), ka(time.Second, "n3", 1), ka(time.Second, "n2", 1), ka(2*time.Second, "n1", 1)},
			want: lease.Reply{Gen: g11, Started: []lease.NodeGen{{Node: "n2", Gen: g13}, {Node: "n3", Gen: g12}}},
		},
		{
			name: "notices/each start is listed once",
			give: []vstep{ka(0, "n1", 1), ka(time.Second, "n2", 1), ka(time.Second, "n1", 1), ka(2*time.Second, "n1", 1)},
			want: lease.Reply{Gen: g11},
		},
		{
			name: "notices/sessions that expired since the previous keep-alive are listed",
			give: []vstep{ka(0, "n1", 1), ka(time.Second, "n2", 1), ka(5*time.Second, "n1", 1), ka(time.Second+ld, "n1", 1)},
			want: lease.Reply{Gen: g11, Expired: []lease.NodeGen{{Node: "n2", Gen: g12}}},
		},
		{
			name: "notices/each expiry is listed once",
			give: []vstep{
				ka(0, "n1", 1), ka(time.Second, "n2", 1), ka(5*time.Second, "n1", 1),
				ka(time.Second+ld, "n1", 1), ka(2*time.Second+ld, "n1", 1),
			},
			want: lease.Reply{Gen: g11},
		},
		{
			name: "notices/the sender's own session is never listed",
			give: []vstep{ka(0, "n1", 1), ka(ld, "n1", 1)},
			want: lease.Reply{Gen: g12},
		},
		{
			name: "notices/a replaced incarnation's gen is listed when it expires by time",
			give: []vstep{
				ka(0, "n2", 1), ka(time.Second, "n1", 1), ka(3*time.Second, "n2", 2),
				ka(9*time.Second, "n1", 1), ka(ld, "n1", 1),
			},
			want: lease.Reply{Gen: g12, Expired: []lease.NodeGen{{Node: "n2", Gen: g11}}},
		},
		{
			name: "notices/an expiry is listed even if the node came back before the next keep-alive",
			give: []vstep{
				ka(0, "n2", 1), ka(time.Second, "n1", 1), ka(9*time.Second, "n1", 1),
				ka(12*time.Second, "n2", 1), ka(13*time.Second, "n1", 1),
			},
			want: lease.Reply{Gen: g12, Expired: []lease.NodeGen{{Node: "n2", Gen: g11}}, Started: []lease.NodeGen{{Node: "n2", Gen: g13}}},
		},
		{
			name: "notices/a replaced incarnation's expiry is listed even after its node's next keep-alive",
			give: []vstep{
				ka(0, "n2", 1), ka(time.Second, "n1", 1), ka(3*time.Second, "n2", 2),
				ka(9*time.Second, "n1", 1), ka(12*time.Second, "n2", 2), ka(13*time.Second, "n1", 1),
			},
			want: lease.Reply{Gen: g12, Expired: []lease.NodeGen{{Node: "n2", Gen: g11}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newVoterRun(t)
			for _, s := range tt.give[:len(tt.give)-1] {
				r.do(t, s)
			}
			last := tt.give[len(tt.give)-1]
			got, gotDirty := r.do(t, last)

			want := tt.want
			want.Voter, want.Seq = "v1", r.seq
			if want.Inc == 0 {
				// The highest incarnation of the sender the voter has
				// seen since it last restarted.
				for _, s := range tt.give {
					if s.restart {
						want.Inc = 0
					} else if s.from == last.from {
						want.Inc = max(want.Inc, s.inc)
					}
				}
			}
			if !got.Stale {
				want.NoticesAt = lease.Time(last.at) // the voter's clock at the request
			}
			want.AllStarted = got.AllStarted // TestVoterListsAllLiveSessionsWhenItForgotTheSender
			want.HeldVer = got.HeldVer       // TestVoterHeldChanges
			want.Results = slices.Clone(want.Results)
			for i := range want.Results {
				if i < len(last.ops) {
					want.Results[i].Op = last.ops[i]
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("reply\n got %+v\nwant %+v", got, want)
			}
			if !reflect.DeepEqual(gotDirty, tt.wantDirty) {
				t.Errorf("records to persist\n got %+v\nwant %+v", gotDirty, tt.wantDirty)
			}
			for s, w := range tt.wantRecords {
				if g := r.v.Record(s); g != w {
					t.Errorf("Record(%d) = %+v, want %+v", s, g, w)
				}
			}
			// What the voter holds is exactly what it asked to persist.
			for s, w := range r.store {
				if g := r.v.Record(s); g != w {
					t.Errorf("Record(%d) = %+v, but the driver persisted %+v", s, g, w)
				}
			}
		})
	}
}

// TestVoterGensNeverRepeat runs sessions through a voter that restarts
// several times, starting new gens every way the rules allow (first
// keep-alive, expiry, newer incarnation, restart), and requires every gen
// it hands out to be new.
func TestVoterGensNeverRepeat(t *testing.T) {
	const boots, rounds = 4, 5
	r := newVoterRun(t)
	seen := map[uint64]string{}
	at := time.Duration(0)
	nodes := []string{"n1", "n2", "n3"}
	for boot := range boots {
		for round := range rounds {
			// Odd rounds repeat the incarnation and find the session
			// expired; even rounds bring a newer incarnation.
			inc := uint64(1 + boot*rounds + round/2)
			for _, n := range nodes {
				at += time.Millisecond
				rep, _ := r.do(t, ka(at, n, inc))
				switch who, dup := seen[rep.Gen]; {
				case rep.Stale || rep.Gen == 0:
					t.Fatalf("boot %d round %d: %s got %+v", boot, round, n, rep)
				case dup:
					t.Fatalf("boot %d round %d: gen %#x handed to %s again, first to %s", boot, round, rep.Gen, n, who)
				}
				seen[rep.Gen] = n
			}
			at += ld
		}
		r.do(t, restartAt(at))
	}
	if want := boots * rounds * len(nodes); len(seen) != want {
		t.Fatalf("%d distinct gens, want %d", len(seen), want)
	}
}

func TestNewVoterValidates(t *testing.T) {
	tests := []struct {
		name string
		give lease.VoterConfig
	}{
		{name: "missing ID", give: lease.VoterConfig{LeaseDuration: ld}},
		{name: "zero lease", give: lease.VoterConfig{ID: "v1"}},
		{name: "negative lease", give: lease.VoterConfig{ID: "v1", LeaseDuration: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := lease.NewVoter(tt.give, nil, 0); !errors.Is(err, lease.ErrConfig) {
				t.Fatalf("NewVoter(%+v) error = %v, want ErrConfig", tt.give, err)
			}
		})
	}
}

// A node that lost the reply carrying a notice hears it again: it echoes
// the NoticesAt of the last reply it processed.
func TestVoterRepeatsNoticesOfALostReply(t *testing.T) {
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: time.Second, Boot: 1}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) lease.Time { return lease.Time(d) }
	v.Handle(lease.Request{From: "n2", Inc: 1, Seq: 1}, at(0))
	first, _ := v.Handle(lease.Request{From: "n1", Inc: 1, Seq: 1}, at(100*time.Millisecond))
	lost, _ := v.Handle(lease.Request{From: "n1", Inc: 1, Seq: 2, NoticesSince: first.NoticesAt}, at(1100*time.Millisecond))
	if len(lost.Expired) != 1 || lost.Expired[0].Node != "n2" {
		t.Fatalf("n2's expiry not reported: %+v", lost.Expired)
	}
	// That reply was lost: n1 still echoes the first one's NoticesAt.
	again, _ := v.Handle(lease.Request{From: "n1", Inc: 1, Seq: 3, NoticesSince: first.NoticesAt}, at(1300*time.Millisecond))
	if len(again.Expired) != 1 || again.Expired[0].Node != "n2" {
		t.Fatalf("n2's expiry not repeated after a lost reply: %+v", again.Expired)
	}
	// Once processed, it is not repeated.
	done, _ := v.Handle(lease.Request{From: "n1", Inc: 1, Seq: 4, NoticesSince: again.NoticesAt}, at(1500*time.Millisecond))
	if len(done.Expired) != 0 {
		t.Fatalf("expiry repeated after it was processed: %+v", done.Expired)
	}
}

// TestVoterListsAllLiveSessionsWhenItForgotTheSender: a reply lists every
// live session (AllStarted) to a sender that has heard nothing from this
// voter, and after the voter restarted; otherwise only the changes.
func TestVoterListsAllLiveSessionsWhenItForgotTheSender(t *testing.T) {
	store := map[uint32]lease.Record{}
	v, err := lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: ld, Boot: 1}, store, 1)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(v *lease.Voter, from string, since, at lease.Time) lease.Reply {
		rep, _ := v.Handle(lease.Request{From: from, Inc: 1, Seq: 1, NoticesSince: since}, at)
		return rep
	}
	ask(v, "n2", 0, 10)
	first := ask(v, "n1", 0, 20)
	if !first.AllStarted || len(first.Started) != 1 || first.Started[0].Node != "n2" {
		t.Fatalf("first reply to n1: AllStarted %v, Started %v; want every live session (n2)", first.AllStarted, first.Started)
	}
	if next := ask(v, "n1", first.NoticesAt, 30); next.AllStarted {
		t.Fatalf("second reply to n1 lists every session (Started %v); want only changes", next.Started)
	}
	// Restarted, the voter forgot every session: n1's next reply is whole
	// again, and n2, silent since, is not in it.
	v, err = lease.NewVoter(lease.VoterConfig{ID: "v1", LeaseDuration: ld, Boot: 2, Restarted: true}, store, 40)
	if err != nil {
		t.Fatal(err)
	}
	again := ask(v, "n1", 30, 50)
	if !again.AllStarted || len(again.Started) != 0 {
		t.Fatalf("first reply after the voter's restart: AllStarted %v, Started %v; want a whole, empty list", again.AllStarted, again.Started)
	}
}
