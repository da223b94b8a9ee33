// Package voterv1 is the wire form of the voter protocol: the Voter gRPC
// service generated from voter.proto, and the conversions between its
// messages and lease.Request and lease.Reply.
//
// The ToPB functions take values this process built and trust them. The
// FromPB functions take messages that arrived from the network and validate
// them before anything reaches the lease state machine: every error they
// return wraps ErrInvalid and is a *FieldError naming the offending field.
// A client calls a voter with
//
//	pb, err := voterv1.NewVoterClient(conn).Call(ctx, voterv1.RequestToPB(cluster, req))
//	if err != nil { ... }
//	voterCluster, rep, err := voterv1.ReplyFromPB(pb)
//
// and a server's Call method starts with RequestFromPB, refuses a request of
// another cluster, and answers with ReplyToPB.
package voterv1

import (
	"fmt"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/proto/internal/wirecheck"
)

// Limits on what a FromPB function accepts. They bound the memory and the
// work one message can cost the receiver; honest peers stay far below them.
const (
	// MaxOps is the most operations a request may carry, and so the most
	// results a reply may carry.
	MaxOps = 1 << 16
	// MaxHeld is the most records a reply may list as held by the sender:
	// one per shard of the largest cluster (shard.MaxShards).
	MaxHeld = 1 << 20
	// MaxExpired is the most expired sessions a reply may list.
	MaxExpired = 1 << 16
	// MaxStringLen is the longest a string field (a cluster name, a NodeID,
	// a voter ID) may be, in bytes.
	MaxStringLen = 256
	// MaxMismatchLen is the longest a reply's mismatch text may be, in
	// bytes: it names the values that disagree, and may name the sender.
	MaxMismatchLen = 1024
)

// ErrInvalid is wrapped by every error RequestFromPB and ReplyFromPB return.
var ErrInvalid = wirecheck.ErrInvalid

// FieldError says which field of a received message is invalid and why.
// errors.Is(err, ErrInvalid) holds for every *FieldError.
type FieldError = wirecheck.FieldError

var invalid = wirecheck.Invalid

// checkString enforces MaxStringLen and, if required, non-emptiness.
func checkString(field, s string, required bool) *FieldError {
	return wirecheck.String(field, s, required, MaxStringLen)
}

var checkCount = wirecheck.Count

// RequestToPB returns the wire form of r sent by a node of cluster.
func RequestToPB(cluster string, r lease.Request) *CallRequest {
	m := &CallRequest{
		Cluster:         cluster,
		From:            r.From,
		Inc:             r.Inc,
		Seq:             r.Seq,
		NoticesSince:    int64(r.NoticesSince),
		LeaseDurationNs: int64(r.LeaseDuration),
		Nonce:           r.Nonce,
		HeldSince:       r.HeldSince,
	}
	if len(r.Ops) > 0 {
		m.Ops = make([]*Op, len(r.Ops))
		for i, op := range r.Ops {
			m.Ops[i] = opToPB(op)
		}
	}
	return m
}

// RequestFromPB validates a received request and returns its sender's
// cluster and its lease form. It rejects a nil message, an empty or
// oversized sender, an oversized cluster or transfer target, a negative
// lease duration, more than MaxOps operations and an operation of unknown
// kind.
//
// The voter set (voter_set) is not part of lease.Request: a server reads it
// from m itself.
func RequestFromPB(m *CallRequest) (cluster string, r lease.Request, err error) {
	if m == nil {
		return "", lease.Request{}, invalid("CallRequest", "nil message")
	}
	if fe := checkString("CallRequest.cluster", m.Cluster, false); fe != nil {
		return "", lease.Request{}, fe
	}
	if fe := checkString("CallRequest.from", m.From, true); fe != nil {
		return "", lease.Request{}, fe
	}
	if m.LeaseDurationNs < 0 {
		return "", lease.Request{}, invalid("CallRequest.lease_duration_ns", "negative (%d)", m.LeaseDurationNs)
	}
	if fe := checkCount("CallRequest.ops", len(m.Ops), MaxOps); fe != nil {
		return "", lease.Request{}, fe
	}
	r = lease.Request{
		From:          m.From,
		Inc:           m.Inc,
		Seq:           m.Seq,
		NoticesSince:  lease.Time(m.NoticesSince),
		LeaseDuration: time.Duration(m.LeaseDurationNs),
		Nonce:         m.GetNonce(),
		HeldSince:     m.GetHeldSince(),
	}
	if len(m.Ops) > 0 {
		r.Ops = make([]lease.Op, len(m.Ops))
		for i, op := range m.Ops {
			var fe *FieldError
			if r.Ops[i], fe = opFromPB(op); fe != nil {
				return "", lease.Request{}, fe.In(fmt.Sprintf("CallRequest.ops[%d]", i))
			}
		}
	}
	return m.Cluster, r, nil
}

// ReplyToPB returns the wire form of r sent by a voter of cluster.
func ReplyToPB(cluster string, r lease.Reply) *CallReply {
	m := &CallReply{
		Cluster:    cluster,
		Voter:      r.Voter,
		Seq:        r.Seq,
		Stale:      r.Stale,
		Inc:        r.Inc,
		Mismatch:   r.Mismatch,
		Gen:        r.Gen,
		NoticesAt:  int64(r.NoticesAt),
		AllStarted: r.AllStarted,
		IncLive:    r.IncLive,
		HeldVer:    r.HeldVer,
		HeldDelta:  r.HeldDelta,
		HeldSince:  r.HeldSince,
	}
	if len(r.Results) > 0 {
		m.Results = make([]*Result, len(r.Results))
		for i, res := range r.Results {
			m.Results[i] = &Result{
				Op:      opToPB(res.Op),
				Refusal: refusalToPB(res.Refusal),
				Record:  recordToPB(res.Record),
				Gen:     res.Gen,
			}
		}
	}
	if len(r.Held) > 0 {
		m.Held = make([]*ShardRecord, len(r.Held))
		for i, sr := range r.Held {
			m.Held[i] = &ShardRecord{Shard: sr.Shard, Record: recordToPB(sr.Record)}
		}
	}
	m.Expired = nodeGensToPB(r.Expired)
	m.Started = nodeGensToPB(r.Started)
	return m
}

func nodeGensToPB(ngs []lease.NodeGen) []*NodeGen {
	if len(ngs) == 0 {
		return nil
	}
	out := make([]*NodeGen, len(ngs))
	for i, ng := range ngs {
		out[i] = &NodeGen{Node: ng.Node, Gen: ng.Gen}
	}
	return out
}

func nodeGensFromPB(field string, m []*NodeGen) ([]lease.NodeGen, *FieldError) {
	if len(m) == 0 {
		return nil, nil
	}
	out := make([]lease.NodeGen, len(m))
	for i, ng := range m {
		if fe := checkString("node", ng.GetNode(), true); fe != nil {
			return nil, fe.In(fmt.Sprintf("%s[%d]", field, i))
		}
		out[i] = lease.NodeGen{Node: ng.GetNode(), Gen: ng.GetGen()}
	}
	return out, nil
}

// ReplyFromPB validates a received reply and returns its voter's cluster and
// its lease form. It rejects a nil message, an empty or oversized voter ID,
// oversized strings (a mismatch longer than MaxMismatchLen), more than MaxOps results, MaxHeld held records or
// MaxExpired expired or started sessions, a result of unknown operation kind or
// refusal, and an expired session without a node. An absent record reads as
// the zero record.
func ReplyFromPB(m *CallReply) (cluster string, r lease.Reply, err error) {
	if m == nil {
		return "", lease.Reply{}, invalid("CallReply", "nil message")
	}
	fe := checkString("CallReply.cluster", m.Cluster, false)
	if fe == nil {
		fe = checkString("CallReply.voter", m.Voter, true)
	}
	if fe == nil {
		fe = wirecheck.String("CallReply.mismatch", m.Mismatch, false, MaxMismatchLen)
	}
	if fe == nil {
		fe = checkCount("CallReply.results", len(m.Results), MaxOps)
	}
	if fe == nil {
		fe = checkCount("CallReply.held", len(m.Held), MaxHeld)
	}
	if fe == nil {
		fe = checkCount("CallReply.expired", len(m.Expired), MaxExpired)
	}
	if fe == nil {
		fe = checkCount("CallReply.started", len(m.Started), MaxExpired)
	}
	if fe != nil {
		return "", lease.Reply{}, fe
	}
	r = lease.Reply{
		Voter:      m.Voter,
		Seq:        m.Seq,
		Stale:      m.Stale,
		Inc:        m.Inc,
		Mismatch:   m.Mismatch,
		Gen:        m.Gen,
		NoticesAt:  lease.Time(m.NoticesAt),
		AllStarted: m.AllStarted,
		IncLive:    m.IncLive,
		HeldVer:    m.GetHeldVer(),
		HeldDelta:  m.GetHeldDelta(),
		HeldSince:  m.GetHeldSince(),
	}
	if len(m.Results) > 0 {
		r.Results = make([]lease.Result, len(m.Results))
		for i, res := range m.Results {
			if r.Results[i], fe = resultFromPB(res); fe != nil {
				return "", lease.Reply{}, fe.In(fmt.Sprintf("CallReply.results[%d]", i))
			}
		}
	}
	if len(m.Held) > 0 {
		r.Held = make([]lease.ShardRecord, len(m.Held))
		for i, sr := range m.Held {
			r.Held[i].Shard = sr.GetShard()
			if r.Held[i].Record, fe = recordFromPB(sr.GetRecord()); fe != nil {
				return "", lease.Reply{}, fe.In(fmt.Sprintf("CallReply.held[%d].record", i))
			}
		}
	}
	if r.Expired, fe = nodeGensFromPB("CallReply.expired", m.Expired); fe != nil {
		return "", lease.Reply{}, fe
	}
	if r.Started, fe = nodeGensFromPB("CallReply.started", m.Started); fe != nil {
		return "", lease.Reply{}, fe
	}
	return m.Cluster, r, nil
}

func opToPB(op lease.Op) *Op {
	return &Op{
		Kind:    opKindToPB(op.Kind),
		Shard:   op.Shard,
		Epoch:   op.Epoch,
		To:      op.To,
		ToInc:   op.ToInc,
		ToEpoch: op.ToEpoch,
	}
}

// opFromPB converts one operation. A nil op reads as the zero op, whose
// kind is unspecified and therefore rejected.
func opFromPB(m *Op) (lease.Op, *FieldError) {
	kind, ok := opKindFromPB(m.GetKind())
	switch {
	case m.GetKind() == OpKind_OP_KIND_UNSPECIFIED:
		return lease.Op{}, invalid("kind", "not set")
	case !ok:
		return lease.Op{}, invalid("kind", "unknown op kind %d", int32(m.GetKind()))
	}
	if fe := checkString("to", m.GetTo(), false); fe != nil {
		return lease.Op{}, fe
	}
	if m.GetToEpoch() != 0 && m.GetToEpoch() <= m.GetEpoch() {
		return lease.Op{}, invalid("to_epoch", "%d is not above epoch %d", m.GetToEpoch(), m.GetEpoch())
	}
	return lease.Op{
		Kind:    kind,
		Shard:   m.GetShard(),
		Epoch:   m.GetEpoch(),
		To:      m.GetTo(),
		ToInc:   m.GetToInc(),
		ToEpoch: m.GetToEpoch(),
	}, nil
}

func resultFromPB(m *Result) (lease.Result, *FieldError) {
	op, fe := opFromPB(m.GetOp())
	if fe != nil {
		return lease.Result{}, fe.In("op")
	}
	refusal, ok := refusalFromPB(m.GetRefusal())
	switch {
	case m.GetRefusal() == Refusal_REFUSAL_UNSPECIFIED:
		return lease.Result{}, invalid("refusal", "not set")
	case !ok:
		return lease.Result{}, invalid("refusal", "unknown refusal %d", int32(m.GetRefusal()))
	}
	rec, fe := recordFromPB(m.GetRecord())
	if fe != nil {
		return lease.Result{}, fe.In("record")
	}
	return lease.Result{Op: op, Refusal: refusal, Record: rec, Gen: m.GetGen()}, nil
}

func recordToPB(r lease.Record) *Record {
	return &Record{Epoch: r.Epoch, Holder: r.Holder, HolderGen: r.HolderGen, Released: r.Released}
}

// recordFromPB converts a record; nil reads as the zero record.
func recordFromPB(m *Record) (lease.Record, *FieldError) {
	if fe := checkString("holder", m.GetHolder(), false); fe != nil {
		return lease.Record{}, fe
	}
	return lease.Record{
		Epoch:     m.GetEpoch(),
		Holder:    m.GetHolder(),
		HolderGen: m.GetHolderGen(),
		Released:  m.GetReleased(),
	}, nil
}

// opKindToPB maps a lease.OpKind to the wire. A kind outside the protocol
// maps to OP_KIND_UNSPECIFIED, which every receiver rejects.
func opKindToPB(k lease.OpKind) OpKind {
	switch k {
	case lease.OpGrant:
		return OpKind_OP_KIND_GRANT
	case lease.OpRelease:
		return OpKind_OP_KIND_RELEASE
	case lease.OpTransfer:
		return OpKind_OP_KIND_TRANSFER
	}
	return OpKind_OP_KIND_UNSPECIFIED
}

func opKindFromPB(k OpKind) (lease.OpKind, bool) {
	switch k {
	case OpKind_OP_KIND_GRANT:
		return lease.OpGrant, true
	case OpKind_OP_KIND_RELEASE:
		return lease.OpRelease, true
	case OpKind_OP_KIND_TRANSFER:
		return lease.OpTransfer, true
	}
	return 0, false
}

// refusalToPB maps a lease.Refusal to the wire. A value outside the
// protocol maps to REFUSAL_UNSPECIFIED, which every receiver rejects rather
// than read as an acceptance.
func refusalToPB(r lease.Refusal) Refusal {
	switch r {
	case lease.Accepted:
		return Refusal_REFUSAL_ACCEPTED
	case lease.RefusedGrace:
		return Refusal_REFUSAL_GRACE
	case lease.RefusedEpoch:
		return Refusal_REFUSAL_EPOCH
	case lease.RefusedHeld:
		return Refusal_REFUSAL_HELD
	case lease.RefusedTarget:
		return Refusal_REFUSAL_TARGET
	case lease.RefusedIncarnation:
		return Refusal_REFUSAL_INCARNATION
	}
	return Refusal_REFUSAL_UNSPECIFIED
}

func refusalFromPB(r Refusal) (lease.Refusal, bool) {
	switch r {
	case Refusal_REFUSAL_ACCEPTED:
		return lease.Accepted, true
	case Refusal_REFUSAL_GRACE:
		return lease.RefusedGrace, true
	case Refusal_REFUSAL_EPOCH:
		return lease.RefusedEpoch, true
	case Refusal_REFUSAL_HELD:
		return lease.RefusedHeld, true
	case Refusal_REFUSAL_TARGET:
		return lease.RefusedTarget, true
	case Refusal_REFUSAL_INCARNATION:
		return lease.RefusedIncarnation, true
	}
	return 0, false
}
