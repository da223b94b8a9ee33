package voterstore

import (
	"encoding/binary"
	"fmt"

	"github.com/tenurehq/tenure/lease"
)

// recordVersion is the first byte of every encoded record. A change of
// layout takes a new version, and decoders refuse versions they do not know
// rather than guess.
const recordVersion = 1

// appendRecord appends the encoding of r to b:
//
//	version   1 byte (recordVersion)
//	epoch     uvarint
//	holderGen uvarint
//	released  1 byte, 0 or 1
//	holder    uvarint length, then the bytes
func appendRecord(b []byte, r lease.Record) []byte {
	b = append(b, recordVersion)
	b = binary.AppendUvarint(b, r.Epoch)
	b = binary.AppendUvarint(b, r.HolderGen)
	if r.Released {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Holder)))
	return append(b, r.Holder...)
}

// decodeRecord decodes a value written by appendRecord. It rejects anything
// else, trailing bytes included, with an error that wraps ErrCorrupt. The
// returned record does not alias b, so b may point into bbolt's memory map.
func decodeRecord(b []byte) (lease.Record, error) {
	var r lease.Record
	if len(b) == 0 {
		return r, fmt.Errorf("empty value: %w", ErrCorrupt)
	}
	if b[0] != recordVersion {
		return r, fmt.Errorf("record version %d, want %d: %w", b[0], recordVersion, ErrCorrupt)
	}
	b = b[1:]
	var n int
	if r.Epoch, n = binary.Uvarint(b); n <= 0 {
		return r, fmt.Errorf("malformed epoch: %w", ErrCorrupt)
	}
	b = b[n:]
	if r.HolderGen, n = binary.Uvarint(b); n <= 0 {
		return r, fmt.Errorf("malformed holder generation: %w", ErrCorrupt)
	}
	b = b[n:]
	if len(b) == 0 {
		return r, fmt.Errorf("missing released flag: %w", ErrCorrupt)
	}
	switch b[0] {
	case 0:
	case 1:
		r.Released = true
	default:
		return r, fmt.Errorf("released flag %d, want 0 or 1: %w", b[0], ErrCorrupt)
	}
	b = b[1:]
	hl, n := binary.Uvarint(b)
	if n <= 0 {
		return r, fmt.Errorf("malformed holder length: %w", ErrCorrupt)
	}
	b = b[n:]
	if hl != uint64(len(b)) {
		return r, fmt.Errorf("holder length %d but %d bytes follow: %w", hl, len(b), ErrCorrupt)
	}
	r.Holder = string(b)
	return r, nil
}

// shardKey is the key of shard's record: big-endian, so that bbolt's byte
// order is shard order.
func shardKey(shard uint32) []byte {
	return binary.BigEndian.AppendUint32(make([]byte, 0, 4), shard)
}
