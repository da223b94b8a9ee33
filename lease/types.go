package lease

import (
	"errors"
	"fmt"
	"time"
)

// Time is a reading of one process's monotonic clock in nanoseconds since an
// arbitrary origin. Readings of different processes are not comparable:
// the protocol never sends a Time to another process.
type Time int64

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return t + Time(d) }

// Sub returns t−u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(t - u) }

// Record is a voter's state for one shard, persisted before any reply that
// depends on it.
type Record struct {
	// Epoch is the highest epoch the voter has accepted for the shard.
	Epoch uint64
	// Holder is the node the epoch was granted or transferred to.
	Holder string
	// HolderGen is the holder's session generation at this voter when the
	// record was written; the record protects the holder while that
	// generation is live.
	HolderGen uint64
	// Released says the holder gave the shard up.
	Released bool
}

// ShardRecord is a Record with its shard.
type ShardRecord struct {
	Shard uint32
	Record
}

// Token is what a leader attaches to every side effect: resources accept a
// write for a shard only with an epoch at least the highest they have seen.
type Token struct {
	Shard uint32
	Epoch uint64
}

func (t Token) String() string { return fmt.Sprintf("shard %d epoch %d", t.Shard, t.Epoch) }

// OpKind names a voter operation.
type OpKind uint8

// The operations a request can carry besides its keep-alive.
const (
	OpGrant OpKind = iota + 1
	OpRelease
	OpTransfer
)

func (k OpKind) String() string {
	switch k {
	case OpGrant:
		return "grant"
	case OpRelease:
		return "release"
	case OpTransfer:
		return "transfer"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one shard operation in a batched request.
type Op struct {
	Kind  OpKind
	Shard uint32
	// Epoch: for a grant, the epoch asked for; for a release or transfer,
	// the epoch the sender holds.
	Epoch uint64
	// To and ToInc name a transfer's target and its incarnation.
	To    string
	ToInc uint64
	// ToEpoch is the epoch a transfer's target leads at: above Epoch, and
	// above every epoch the target gave up (its floor), which the target
	// names when it prepares. 0 means Epoch+1.
	ToEpoch uint64
}

// TransferEpoch is the epoch a transfer op makes its target lead at.
func (op Op) TransferEpoch() uint64 { return max(op.Epoch+1, op.ToEpoch) }

// Request is what a node sends a voter: always a keep-alive, plus any number
// of shard operations, applied in order after the keep-alive.
type Request struct {
	// From is the sender's NodeID and Inc its incarnation, which grows with
	// every start of the process.
	From string
	Inc  uint64
	// Nonce tells apart processes that send the same From and Inc (two
	// processes that each took an incarnation above the same stale one):
	// a voter orders sessions by (Inc, Nonce), so one of them is stale.
	// 0 means "not given" (older senders) and orders below every nonce.
	Nonce uint64
	// Seq identifies the request to its sender; replies echo it.
	Seq uint64
	Ops []Op
	// NoticesSince echoes the NoticesAt of the last reply the sender
	// processed from this voter (0 for none). The voter lists the session
	// changes after it, so the notices of a lost reply come again. With 0
	// the voter also lists every live session in Started: a node's first
	// reply tells it who is alive, not only who changed since.
	NoticesSince Time
	// LeaseDuration is the sender's LD. A voter refuses a request whose
	// LeaseDuration differs from its own (RefusedConfig in Reply.Mismatch):
	// a node that counts on a longer lease than the voters keep sessions
	// for would outlive its protection. 0 means "not given" and checks
	// nothing (older senders).
	LeaseDuration time.Duration
	// HeldSince is the HeldVer of the last Held list the sender applied
	// from its current session at this voter (0 for none). The voter then
	// lists only the records that changed after it (Reply.HeldDelta), so a
	// keep-alive of a node holding thousands of shards costs little.
	HeldSince uint64
}

// Refusal says why a voter rejected an operation.
type Refusal uint8

// The reasons a voter rejects an operation.
const (
	Accepted Refusal = iota
	// RefusedGrace: the voter restarted less than a lease ago.
	RefusedGrace
	// RefusedEpoch: the epoch is not above the voter's record (grant), or
	// the record is not the sender's epoch (release, transfer).
	RefusedEpoch
	// RefusedHeld: the record's holder is live and is not the sender.
	RefusedHeld
	// RefusedTarget: a transfer's target has no live session of that
	// incarnation.
	RefusedTarget
	// RefusedIncarnation: the sender is not the node's current incarnation.
	RefusedIncarnation
)

func (r Refusal) String() string {
	return [...]string{"accepted", "grace period", "epoch", "held by a live node", "target not live", "stale incarnation"}[r]
}

// Result is a voter's answer to one Op. A rejection carries the voter's
// record, so that the sender learns the epoch and the holder.
type Result struct {
	Op      Op
	Refusal Refusal
	Record  Record
	// Gen is the generation the new record names: the sender's for a
	// grant, the target's for a transfer.
	Gen uint64
}

// OK reports whether the operation was accepted.
func (r Result) OK() bool { return r.Refusal == Accepted }

// NodeGen names one session generation of one node.
type NodeGen struct {
	Node string
	Gen  uint64
}

// Reply is a voter's answer to a Request.
type Reply struct {
	// Voter is the replying voter's ID; Seq echoes the request.
	Voter string
	Seq   uint64
	// Stale says the sender's incarnation is older than one the voter has
	// seen: the request was ignored and the sender must stop.
	Stale bool
	// Inc is the highest incarnation the voter knows for the sender (on a
	// Stale reply, the newer one it saw). A process that no voter has yet
	// accepted takes an incarnation above it rather than stopping: its
	// own was read from a clock that stepped back.
	Inc uint64
	// IncLive, on a Stale reply, says the newer incarnation's session is
	// live at this voter. A process that led and hears of a newer
	// incarnation that is not live (it stopped, or never ran on: a disk
	// lost the counter's last write) ends every lease and then takes an
	// incarnation above it, as a restart would, rather than leave its
	// NodeID out of the cluster until someone restarts it.
	IncLive bool
	// Mismatch, when not empty, says the voter ignored the request because
	// the sender's configuration disagrees with its own (a different
	// LeaseDuration); it names both values.
	Mismatch string
	// Gen is the sender's current session generation at this voter.
	Gen uint64
	// Results answer the request's Ops, in order.
	Results []Result
	// Held lists every record that names the sender and is not released,
	// as of HeldVer. With HeldDelta it lists instead the current record of
	// every shard whose record named or names the sender and changed after
	// HeldSince: released ones, and ones naming another node, included.
	Held []ShardRecord
	// HeldVer is the voter's record version Held is as of. It grows with
	// every record change and never repeats, not even across the voter's
	// restarts (it starts at Boot<<32), so it orders a voter's replies.
	HeldVer uint64
	// HeldDelta says Held lists the changes after HeldSince only: the
	// sender asked for them, and the voter still remembered that far back.
	HeldDelta bool
	// HeldSince echoes the request's HeldSince when HeldDelta is set.
	HeldSince uint64
	// Expired lists the sessions that expired at this voter after the
	// request's NoticesSince (or its previous keep-alive, without one).
	Expired []NodeGen
	// Started lists the sessions that began at this voter in the same
	// window.
	Started []NodeGen
	// AllStarted says Started lists every live session at this voter, not
	// only those that began in the window: the sender's first request, any
	// request with NoticesSince 0 (a holder whose session changed asks so
	// until it applied such a list), or the first after the voter forgot
	// the sender. A member this voter used to report live and does not
	// list is no longer live there.
	AllStarted bool
	// NoticesAt is the voter's clock reading the notices run up to; the
	// sender echoes it as its next request's NoticesSince. It is opaque to
	// the sender: clocks of different processes are not comparable.
	NoticesAt Time
}

// Errors returned by constructors and drivers.
var (
	// ErrConfig is wrapped by every configuration error.
	ErrConfig = errors.New("invalid lease configuration")

	// ErrRegranting is wrapped by a Transfer refused because the holder
	// is re-granting the shard above the led epoch: some voters may
	// already record the higher epoch, and would refuse a Transfer of the
	// led one. The lease goes on; try again once the re-grant settles
	// (within a round trip to the voters, or the lease ends).
	ErrRegranting = errors.New("re-grant in flight")
)
