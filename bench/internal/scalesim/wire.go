package scalesim

import (
	"bytes"
	"compress/lzw"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/membership"
	peerv1 "github.com/tenurehq/tenure/proto/peer/v1"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/shard"
)

// Message sizes. Bytes are what a process hands its transport: IP, UDP and
// TCP headers are left out (add 28 B per UDP packet, 40–52 B per TCP
// segment).
//
// Voter and handoff RPCs are sized exactly with their protobuf encoding
// (proto/voter/v1 and proto/peer/v1 conversions), plus an estimate of
// gRPC's framing on an established HTTP/2 connection: a request costs a
// 5 B length prefix, a 9 B DATA frame header and a HEADERS frame of about
// 35 B (HPACK-indexed method, path, authority and content type after the
// first call, a literal grpc-timeout); a reply the prefix, a DATA frame, a
// HEADERS frame of about 11 B and a trailers frame of about 12 B.
//
// Leadership gossip is sized exactly: shard.LeadershipMessages encodes the
// claims as a Node does, then memberlist's packet framing is applied as
// SendBestEffort does: a 1 B user-message type, LZW compression when it
// makes the packet smaller (compress/lzw with memberlist's parameters, in
// a msgpack envelope of 14 B), and a 5 B CRC header.
//
// memberlist's own messages (pings, acks, alive, suspect and dead
// broadcasts, push/pull state) are estimated from their msgpack layout:
// field names as keys, as memberlist encodes them, with 32-bit fields at
// their widest, node names of the simulation's length and the node
// metadata as membership.Meta encodes it. They are not compressed (they
// are too small to shrink), except push/pull state, which memberlist
// compresses and which is counted uncompressed, an upper bound.
const (
	grpcRequestOverhead = 5 + 9 + 35
	grpcReplyOverhead   = 5 + 9 + 11 + 12
	memberlistCRC       = 5
	lzwEnvelope         = 14
	// compoundOverhead is memberlist's compound packet: a type byte and a
	// count, then 2 B per message length.
	compoundHeader   = 2
	compoundPerEntry = 2
	udpBufferSize    = 1400 // memberlist's UDPBufferSize
)

// cluster is the cluster name carried by every voter and peer RPC.
const cluster = membership.DefaultCluster

// voterSet stands for any cluster's lease.VoterSetID: a full 64-bit value,
// as a hash usually is, so that its varint takes the most bytes it can.
const voterSet = ^uint64(0)

func voterRequestBytes(r lease.Request) int {
	pb := voterv1.RequestToPB(cluster, r)
	pb.VoterSet = voterSet
	return proto.Size(pb) + grpcRequestOverhead
}

func voterReplyBytes(r lease.Reply) int {
	return proto.Size(voterv1.ReplyToPB(cluster, r)) + grpcReplyOverhead
}

func prepareBytes(s uint32, e uint64, from, to string, toInc uint64, draining bool, timeout time.Duration) (req, rep int) {
	q := &peerv1.PrepareRequest{Cluster: cluster, Shard: s, Epoch: e, From: from, To: to, ToIncarnation: toInc,
		FromDraining: draining, TimeoutMs: uint32(timeout / time.Millisecond)}
	// The reply carries the target's minimum epoch: size it at a typical
	// small epoch.
	return proto.Size(q) + grpcRequestOverhead, proto.Size(&peerv1.PrepareReply{MinEpoch: e + 1}) + grpcReplyOverhead
}

func leadBytes(c lease.Change, from, to string, toInc uint64) (req, rep int) {
	q := &peerv1.LeadRequest{Cluster: cluster, Shard: c.Shard, Epoch: c.Epoch, From: from, To: to,
		ToIncarnation: toInc, Generations: c.Gens, Aborted: c.Kind == lease.TransferFailed}
	return proto.Size(q) + grpcRequestOverhead, proto.Size(&peerv1.LeadReply{}) + grpcReplyOverhead
}

// claimPackets returns the memberlist packets (one per message) that carry
// claims from node to each peer, and their total size.
func claimPackets(node, addr string, claims []shard.LeadershipClaim) (packets, size int) {
	for _, m := range shard.LeadershipMessages(node, addr, claims) {
		packets++
		size += userPacketBytes(m)
	}
	return packets, size
}

// userPacketBytes is the size of a SendBestEffort packet carrying msg.
func userPacketBytes(msg []byte) int {
	raw := 1 + len(msg)
	var buf bytes.Buffer
	w := lzw.NewWriter(&buf, lzw.LSB, 8)
	w.Write([]byte{8}) // memberlist's userMsg type byte
	w.Write(msg)
	w.Close()
	if c := lzwEnvelope + buf.Len(); c < raw {
		raw = c
	}
	return raw + memberlistCRC
}

// gossipSizes holds memberlist's message sizes for one cluster: node names
// of nameLen bytes and metadata of metaLen bytes.
type gossipSizes struct {
	ping, ack       int // a probe and its answer, whole packets
	alive           int // one alive broadcast (a join, or new metadata)
	dead, suspect   int // one dead or suspect broadcast
	nodeState       int // one node in a push/pull exchange
	pushPullHeader  int
	nameLen, metaLn int
}

func newGossipSizes(nameLen, metaLen int) gossipSizes {
	str := func(n int) int { // msgpack string or raw header + bytes
		switch {
		case n < 32:
			return 1 + n
		case n < 256:
			return 2 + n
		}
		return 3 + n
	}
	key := func(k string) int { return str(len(k)) }
	const u32, u16, ip4 = 5, 3, 1 + 4
	vsn := 1 + 6
	ping := 1 + 1 + key("SeqNo") + u32 + key("Node") + str(nameLen) + key("SourceAddr") + ip4 +
		key("SourcePort") + u16 + key("SourceNode") + str(nameLen)
	ack := 1 + 1 + key("SeqNo") + u32 + key("Payload") + 1
	alive := 1 + 1 + key("Incarnation") + u32 + key("Node") + str(nameLen) + key("Addr") + ip4 +
		key("Port") + u16 + key("Meta") + str(metaLen) + key("Vsn") + vsn
	dead := 1 + 1 + key("Incarnation") + u32 + key("Node") + str(nameLen) + key("From") + str(nameLen)
	state := 1 + key("Name") + str(nameLen) + key("Addr") + ip4 + key("Port") + u16 + key("Meta") + str(metaLen) +
		key("Incarnation") + u32 + key("State") + 1 + key("Vsn") + vsn
	header := 1 + 1 + key("Nodes") + u32 + key("UserStateLen") + u32 + key("Join") + 1
	return gossipSizes{
		ping: ping + memberlistCRC, ack: ack + memberlistCRC,
		alive: alive, dead: dead, suspect: dead, nodeState: state, pushPullHeader: header,
		nameLen: nameLen, metaLn: metaLen,
	}
}

// metaBytes is the size of a member's gossip metadata as membership
// encodes it.
func metaBytes(id string, shards int) (int, error) {
	m := membership.Meta{
		NodeID: id, BootID: "0123456789abcdef0123456789abcdef", GRPCAddr: "10.0.255.255:7000",
		Cluster: membership.DefaultCluster, Weight: 1, Shards: uint32(shards),
		Protocol: membership.ProtocolVersion, State: membership.Active,
		Incarnation: uint64(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()),
		VoterSet:    voterSet,
	}
	b, err := m.Encode()
	if err != nil {
		return 0, fmt.Errorf("scalesim: node metadata: %w", err)
	}
	return len(b), nil
}

// packBroadcasts splits broadcasts of the given sizes into memberlist
// packets of at most udpBufferSize bytes, as its gossip does: a lone
// message goes as is, several as a compound. It returns how many fit in
// the first packet and that packet's size.
func packBroadcasts(sizes []int) (n, size int) {
	avail := udpBufferSize - compoundHeader
	used := 0
	for _, s := range sizes {
		if used+s+compoundPerEntry > avail {
			break
		}
		used += s + compoundPerEntry
		n++
	}
	switch n {
	case 0:
		return 0, 0
	case 1:
		return 1, sizes[0] + memberlistCRC
	}
	return n, compoundHeader + used + memberlistCRC
}
