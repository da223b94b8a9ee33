package membership

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// ProtocolVersion is the version of Tenure's node-to-node protocol. A node
// refuses peers that speak another version.
const ProtocolVersion = 1

// MaxMetaBytes is the largest encoded Meta memberlist carries. memberlist
// panics on larger metadata, so Tenure checks the size itself.
const MaxMetaBytes = memberlist.MetaMaxSize

// metaFormat is the first byte of an encoded Meta. Fields are appended in a
// fixed order; a decoder ignores bytes after the fields it knows, so a later
// release can add fields at the end without a format change.
const metaFormat = 1

// State is a member's lifecycle state as it advertises it.
type State uint8

// The member states. Only Active members enter the desired assignment.
const (
	// Joining: alive, not yet eligible for shards.
	Joining State = 1
	// Active: eligible for shards.
	Active State = 2
	// Draining: handing its shards off before it stops.
	Draining State = 3
	// Leaving: announced just before a graceful leave, so that peers can
	// tell a departure from a failure (memberlist does not say which).
	Leaving State = 4
)

func (s State) String() string {
	switch s {
	case Joining:
		return "joining"
	case Active:
		return "active"
	case Draining:
		return "draining"
	case Leaving:
		return "leaving"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Meta is what every node advertises about itself through gossip.
type Meta struct {
	// NodeID is the node's stable name, also its memberlist name.
	NodeID string
	// BootID is new on every start of the process. Without it a restart with
	// the same name and address is invisible to peers.
	BootID string
	// GRPCAddr is the host:port of the node's gRPC service.
	GRPCAddr string
	// Zone is the node's failure domain.
	Zone string
	// Cluster is the cluster name; peers with another name are refused.
	Cluster string
	// Weight is the node's relative capacity; 0 means it owns no shards.
	Weight uint32
	// Shards is the cluster's shard count P; peers with another P are refused.
	Shards uint32
	// Protocol is the node's ProtocolVersion; peers with another are refused.
	Protocol uint32
	// State is the node's lifecycle state.
	State State
	// Voter says whether the node is one of the configured voters.
	Voter bool
	// Incarnation orders the processes that have run under NodeID: a
	// restart advertises a larger one. Voters refuse a transfer to any
	// but a target's current incarnation. 0 when unknown (older nodes).
	Incarnation uint64
	// VoterSet is lease.VoterSetID of the voters the node is configured
	// with; peers configured with another set are refused, because nodes
	// that count majorities over different voters could both lead a shard.
	// 0 when not given.
	VoterSet uint64
}

// ErrMetaTooLarge is returned when a node's encoded Meta exceeds MaxMetaBytes.
var ErrMetaTooLarge = errors.New("node metadata too large")

// errMetaMalformed is wrapped by every decoding error.
var errMetaMalformed = errors.New("malformed node metadata")

// Encode returns the wire form of m, or an error wrapping ErrMetaTooLarge
// that gives the size and the field lengths to shorten.
func (m Meta) Encode() ([]byte, error) {
	b := make([]byte, 0, 64+len(m.NodeID)+len(m.BootID)+len(m.GRPCAddr)+len(m.Zone)+len(m.Cluster))
	b = append(b, metaFormat)
	for _, s := range []string{m.NodeID, m.BootID, m.GRPCAddr, m.Zone, m.Cluster} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(m.Weight))
	b = binary.AppendUvarint(b, uint64(m.Shards))
	b = binary.AppendUvarint(b, uint64(m.Protocol))
	var voter byte
	if m.Voter {
		voter = 1
	}
	b = append(b, byte(m.State), voter)
	b = binary.AppendUvarint(b, m.Incarnation) // added after format 1 shipped: optional on decode
	b = binary.AppendUvarint(b, m.VoterSet)    // likewise
	if len(b) > MaxMetaBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d (NodeID %d, GRPCAddr %d, Zone %d, Cluster %d bytes)",
			ErrMetaTooLarge, len(b), MaxMetaBytes, len(m.NodeID), len(m.GRPCAddr), len(m.Zone), len(m.Cluster))
	}
	return b, nil
}

// DecodeMeta parses the wire form written by Encode. It never panics and
// rejects truncated input; bytes after the known fields are ignored.
func DecodeMeta(b []byte) (Meta, error) {
	d := metaDecoder{b: b}
	if format := d.byte(); d.err == nil && format != metaFormat {
		return Meta{}, fmt.Errorf("%w: format %d, this node reads %d", errMetaMalformed, format, metaFormat)
	}
	m := Meta{
		NodeID:   d.string(),
		BootID:   d.string(),
		GRPCAddr: d.string(),
		Zone:     d.string(),
		Cluster:  d.string(),
		Weight:   d.uint32(),
		Shards:   d.uint32(),
		Protocol: d.uint32(),
		State:    State(d.byte()),
		Voter:    d.byte() == 1,
	}
	if d.err == nil && len(d.b) > 0 {
		m.Incarnation = d.uvarint("incarnation")
	}
	if d.err == nil && len(d.b) > 0 {
		m.VoterSet = d.uvarint("voter set")
	}
	if d.err != nil {
		return Meta{}, d.err
	}
	if m.State < Joining || m.State > Leaving {
		return Meta{}, fmt.Errorf("%w: unknown state %d", errMetaMalformed, m.State)
	}
	return m, nil
}

// metaDecoder reads fields in order and remembers the first error, after
// which every read returns a zero value.
type metaDecoder struct {
	b   []byte
	err error
}

func (d *metaDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errMetaMalformed, what)
	}
}

func (d *metaDecoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *metaDecoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *metaDecoder) uint32() uint32 {
	v := d.uvarint("integer")
	if v > 1<<32-1 {
		if d.err == nil {
			d.err = fmt.Errorf("%w: integer %d out of range", errMetaMalformed, v)
		}
		return 0
	}
	return uint32(v)
}

func (d *metaDecoder) string() string {
	n := d.uvarint("string length")
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("string")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
