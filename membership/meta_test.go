package membership_test

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/tenurehq/tenure/membership"
)

func sampleMeta() membership.Meta {
	return membership.Meta{
		NodeID: "node-1", BootID: "0123456789abcdef0123456789abcdef", GRPCAddr: "10.1.2.3:7000",
		Zone: "eu-west-1a", Cluster: "payments", Weight: 3, Shards: 1024,
		Protocol: membership.ProtocolVersion, State: membership.Draining, Voter: true,
		Incarnation: 1763900000123456789, VoterSet: 0x9e3779b97f4a7c15,
	}
}

func TestMetaRoundTrip(t *testing.T) {
	want := sampleMeta()
	b, err := want.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := membership.DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	// Fields appended by a later release are ignored.
	if got, err := membership.DecodeMeta(append(b, 9, 9, 9)); err != nil || got != want {
		t.Fatalf("with trailing bytes: %+v, %v", got, err)
	}
}

// Metadata written before Incarnation or VoterSet existed still decodes.
func TestDecodeMetaWithoutIncarnation(t *testing.T) {
	m := sampleMeta()
	m.Incarnation, m.VoterSet = 0, 0
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := membership.DecodeMeta(b[:len(b)-2]) // drop both trailing uvarint 0s
	if err != nil || got != m {
		t.Fatalf("DecodeMeta of the format before incarnation = %+v, %v; want %+v", got, err, m)
	}
	m.Incarnation = 7
	b, err = m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err = membership.DecodeMeta(b[:len(b)-1]) // drop the voter set
	if err != nil || got != m {
		t.Fatalf("DecodeMeta of the format before voter set = %+v, %v; want %+v", got, err, m)
	}
}

func TestMetaTooLarge(t *testing.T) {
	m := sampleMeta()
	m.Zone = strings.Repeat("z", 500)
	_, err := m.Encode()
	if !errors.Is(err, membership.ErrMetaTooLarge) || !strings.Contains(err.Error(), "Zone 500") {
		t.Fatalf("Encode = %v, want ErrMetaTooLarge naming the zone length", err)
	}
}

func TestDecodeMetaRejectsTruncated(t *testing.T) {
	b, err := sampleMeta().Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The trailing incarnation and voter set are optional (older nodes do
	// not send them), so the two prefixes that end right before either
	// decode; every other truncation must not.
	noVoterSet := len(b) - len(binary.AppendUvarint(nil, sampleMeta().VoterSet))
	noIncarnation := noVoterSet - len(binary.AppendUvarint(nil, sampleMeta().Incarnation))
	for n := range len(b) {
		_, err := membership.DecodeMeta(b[:n])
		if n == noVoterSet || n == noIncarnation {
			if err != nil {
				t.Fatalf("DecodeMeta of %d bytes, an older format: %v", n, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("DecodeMeta accepted %d of %d bytes", n, len(b))
		}
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := sampleMeta().Encode()
	f.Add(b)
	f.Add([]byte{})
	f.Add([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := membership.DecodeMeta(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode (if small enough) and decode to
		// the same value.
		again, err := m.Encode()
		if err != nil {
			return
		}
		m2, err := membership.DecodeMeta(again)
		if err != nil || m2 != m {
			t.Fatalf("re-decode of %+v: %+v, %v", m, m2, err)
		}
	})
}
