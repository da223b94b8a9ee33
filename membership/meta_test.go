package membership_test

import (
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
	for n := range len(b) {
		if _, err := membership.DecodeMeta(b[:n]); err == nil {
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
