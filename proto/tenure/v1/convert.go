// Package tenurev1 is the wire form of Tenure's public API: the Tenure gRPC
// service generated from tenure.proto, the conversions between its messages
// and the shard package's types, and (in status.go) the one mapping between
// Go errors and gRPC statuses.
//
// The ToPB functions take values this process built and trust them. The
// FromPB functions take messages that arrived from the network and validate
// them: every error they return wraps ErrInvalid and is a *FieldError
// naming the offending field. A client looks a key up with
//
//	pb, err := tenurev1.NewTenureClient(conn).Lookup(ctx, &tenurev1.LookupRequest{Key: key})
//	if err != nil {
//		err = tenurev1.FromStatus(err) // errors.Is(err, shard.ErrNotLeader), ...
//		...
//	}
//	entry, err := tenurev1.EntryFromPB(pb.GetEntry())
//
// and a server answers with EntryToPB and returns every error through
// ToStatus.
package tenurev1

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"strings"

	"github.com/tenurehq/tenure/proto/internal/wirecheck"
	"github.com/tenurehq/tenure/shard"
)

// MaxStringLen is the longest a string field of a received entry (a NodeID,
// an address) may be, in bytes. Honest peers stay far below it.
const MaxStringLen = 256

// ErrInvalid is wrapped by every error a FromPB function returns.
var ErrInvalid = wirecheck.ErrInvalid

// FieldError says which field of a received message is invalid and why.
// errors.Is(err, ErrInvalid) holds for every *FieldError.
type FieldError = wirecheck.FieldError

var invalid = wirecheck.Invalid

// checkString enforces MaxStringLen and, if required, non-emptiness.
func checkString(field, s string, required bool) *FieldError {
	return wirecheck.String(field, s, required, MaxStringLen)
}

// EntryToPB returns the wire form of e. A state outside shard's maps to
// SHARD_STATE_UNSPECIFIED, which every receiver rejects.
func EntryToPB(e shard.Entry) *ShardEntry {
	return &ShardEntry{
		Shard:   uint32(e.Shard),
		State:   StateToPB(e.State),
		Leader:  e.Leader,
		Address: e.Addr,
		Epoch:   e.Epoch,
		Desired: e.Desired,
	}
}

// EntryFromPB validates a received entry and returns its shard form. It
// rejects a nil message, a shard number of shard.MaxShards or more, an
// unspecified or unknown state, a led or moving shard without a leader or
// at epoch 0, and strings longer than MaxStringLen.
func EntryFromPB(m *ShardEntry) (shard.Entry, error) {
	if m == nil {
		return shard.Entry{}, invalid("ShardEntry", "nil message")
	}
	if m.Shard >= shard.MaxShards {
		return shard.Entry{}, invalid("ShardEntry.shard", "%d is not below the limit of %d shards", m.Shard, shard.MaxShards)
	}
	state, ok := stateFromPB(m.State)
	switch {
	case m.State == ShardState_SHARD_STATE_UNSPECIFIED:
		return shard.Entry{}, invalid("ShardEntry.state", "not set")
	case !ok:
		return shard.Entry{}, invalid("ShardEntry.state", "unknown state %d", int32(m.State))
	}
	led := state == shard.Led || state == shard.Moving
	if fe := checkString("ShardEntry.leader", m.Leader, led); fe != nil {
		return shard.Entry{}, fe
	}
	if led && m.Epoch == 0 {
		return shard.Entry{}, invalid("ShardEntry.epoch", "0 for a %v shard", state)
	}
	if fe := checkString("ShardEntry.address", m.Address, false); fe != nil {
		return shard.Entry{}, fe
	}
	if fe := checkString("ShardEntry.desired", m.Desired, false); fe != nil {
		return shard.Entry{}, fe
	}
	return shard.Entry{
		Shard:   shard.ID(m.Shard),
		State:   state,
		Epoch:   m.Epoch,
		Leader:  m.Leader,
		Desired: m.Desired,
		Addr:    m.Address,
	}, nil
}

// MaxNodeIDLen is the longest NodeID a node accepts (membership's rule:
// 1 to 64 characters from [A-Za-z0-9._-], starting with a letter or digit).
const MaxNodeIDLen = 64

// CheckNodeID validates a NodeID received in field of a request: a node
// answers a malformed ID with INVALID_ARGUMENT naming the field instead of
// looking it up. An empty ID is refused; a caller for whom the field is
// optional checks for "" first.
func CheckNodeID(field, id string) error {
	switch {
	case id == "":
		return invalid(field, "empty")
	case len(id) > MaxNodeIDLen:
		return invalid(field, "%d bytes exceed the limit of %d", len(id), MaxNodeIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return invalid(field, "%q is not a NodeID: 1 to %d characters from [A-Za-z0-9._-], starting with a letter or digit", id, MaxNodeIDLen)
		}
	}
	return nil
}

// StateFromPB validates a shard state received in field of a request.
func StateFromPB(field string, s ShardState) (shard.State, error) {
	st, ok := stateFromPB(s)
	switch {
	case s == ShardState_SHARD_STATE_UNSPECIFIED:
		return 0, invalid(field, "not set")
	case !ok:
		return 0, invalid(field, "unknown state %d", int32(s))
	}
	return st, nil
}

// StateToPB returns the wire form of s; SHARD_STATE_UNSPECIFIED, which
// every receiver rejects, for a state outside shard's.
func StateToPB(s shard.State) ShardState {
	switch s {
	case shard.Led:
		return ShardState_SHARD_STATE_LED
	case shard.Unled:
		return ShardState_SHARD_STATE_UNLED
	case shard.Moving:
		return ShardState_SHARD_STATE_MOVING
	}
	return ShardState_SHARD_STATE_UNSPECIFIED
}

func stateFromPB(s ShardState) (shard.State, bool) {
	switch s {
	case ShardState_SHARD_STATE_LED:
		return shard.Led, true
	case ShardState_SHARD_STATE_UNLED:
		return shard.Unled, true
	case ShardState_SHARD_STATE_MOVING:
		return shard.Moving, true
	}
	return 0, false
}

// Pages of ListShards.
const (
	// MaxPageSize is the most entries a page carries.
	MaxPageSize = 10000
	// MaxPageBytes bounds the encoded entries of one page, well under
	// gRPC's default 4 MB message limit whatever the length of node IDs
	// and addresses: a page ends early rather than exceed it.
	MaxPageBytes = 2 << 20
	// MaxUnpagedBytes bounds a listing asked for without page_size (as
	// clients did before pages existed), answered whole in one reply: a
	// larger one is refused, not cut short.
	MaxUnpagedBytes = 3 << 20
)

// PageSize returns the page size req asks for: 0 for the whole listing in
// one reply (page_size 0 and no page_token), else at most MaxPageSize. A
// negative page_size is a *FieldError naming it.
func PageSize(req *ListShardsRequest) (int, error) {
	switch n := req.GetPageSize(); {
	case n < 0:
		return 0, invalid("ListShardsRequest.page_size", "%d is negative", n)
	case n == 0 && req.GetPageToken() == "":
		return 0, nil
	case n == 0:
		return MaxPageSize, nil
	default:
		return min(int(n), MaxPageSize), nil
	}
}

// ErrListingTooLarge is the error of a listing asked for whole (page_size
// 0) that would not fit in one reply.
func ErrListingTooLarge(bytes int) error {
	return invalid("ListShardsRequest.page_size", "0 asks for every matching shard in one reply, and they take more than %d bytes; ask for pages of at most %d", bytes, MaxPageSize)
}

// AllPages reads every page of the listing req describes, calling fetch
// once per page with req's page_token advanced. It stops with an error if
// a reply repeats the token it was asked with or carries a token on an
// empty page: such a listing would never end.
func AllPages(req *ListShardsRequest, fetch func(*ListShardsRequest) (*ListShardsReply, error)) ([]*ShardEntry, error) {
	var out []*ShardEntry
	for {
		rep, err := fetch(req)
		if err != nil {
			return nil, err
		}
		out = append(out, rep.GetEntries()...)
		next := rep.GetNextPageToken()
		if next == "" {
			return out, nil
		}
		if len(rep.GetEntries()) == 0 || next == req.GetPageToken() {
			return nil, fmt.Errorf("ListShards answered an empty page or the same page token again (%q): the listing would never end", next)
		}
		req.PageToken = next
	}
}

// pageTokenPrefix marks the tokens of this version of the encoding.
const pageTokenPrefix = "ls1."

// NextPageToken returns the token that continues the listing req asked
// for at shard next.
func NextPageToken(req *ListShardsRequest, next uint32) string {
	b := binary.AppendUvarint(nil, uint64(next))
	b = binary.BigEndian.AppendUint64(b, listFilter(req))
	return pageTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// PageStart returns the shard a listing resumes at: 0 without a token,
// else the one req.page_token names. A token that is not one of ours, or
// that was issued for other filters, is a *FieldError naming page_token.
func PageStart(req *ListShardsRequest) (uint32, error) {
	tok := req.GetPageToken()
	if tok == "" {
		return 0, nil
	}
	const field = "ListShardsRequest.page_token"
	raw, ok := strings.CutPrefix(tok, pageTokenPrefix)
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if !ok || err != nil {
		return 0, invalid(field, "%q is not a token from a ListShardsReply", tok)
	}
	next, n := binary.Uvarint(b)
	if n <= 0 || next > math.MaxUint32 || len(b) != n+8 {
		return 0, invalid(field, "%q is not a token from a ListShardsReply", tok)
	}
	if binary.BigEndian.Uint64(b[n:]) != listFilter(req) {
		return 0, invalid(field, "the token was issued for other filters (node, state); send the same filters with every page")
	}
	return uint32(next), nil
}

// listFilter fingerprints the filters of req, which every page of one
// listing must repeat.
func listFilter(req *ListShardsRequest) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%q/%v/%d", req.GetNode(), req.GetFilterState(), req.GetState())
	return h.Sum64()
}

// MaxPlanMoves is the most moves a PlanReply lists, and the limit of a
// PlanRequest that names none.
const MaxPlanMoves = 10000

// PlanLimit returns the number of moves req asks for, after the defaults,
// or a *FieldError naming limit.
func PlanLimit(req *PlanRequest) (int, error) {
	switch n := req.GetLimit(); {
	case n < 0:
		return 0, invalid("PlanRequest.limit", "%d is negative", n)
	case n == 0:
		return MaxPlanMoves, nil
	default:
		return min(int(n), MaxPlanMoves), nil
	}
}
