package shard

import (
	"slices"
	"testing"
)

func TestLeadershipMessagesDecodeAsNodesSendThem(t *testing.T) {
	var cs []LeadershipClaim
	for s := range uint32(150) {
		cs = append(cs, LeadershipClaim{Shard: s * 7, Epoch: uint64(s) + 1, Led: s%3 != 0})
	}
	tests := []struct {
		name     string
		claims   []LeadershipClaim
		wantMsgs int
	}{
		{name: "none", claims: nil, wantMsgs: 0},
		{name: "one", claims: cs[:1], wantMsgs: 1},
		{name: "a full chunk", claims: cs[:64], wantMsgs: 1},
		{name: "three chunks", claims: cs, wantMsgs: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs := LeadershipMessages("node-1", "10.0.0.1:7000", tt.claims)
			if len(msgs) != tt.wantMsgs {
				t.Fatalf("got %d messages, want %d", len(msgs), tt.wantMsgs)
			}
			var got []LeadershipClaim
			for _, m := range msgs {
				kind, node, addr, dec, err := decodeClaims(m)
				if err != nil || kind != kindDelta || node != "node-1" || addr != "10.0.0.1:7000" {
					t.Fatalf("decode: kind %d node %q addr %q err %v", kind, node, addr, err)
				}
				for _, c := range dec {
					got = append(got, LeadershipClaim{Shard: c.shard, Epoch: c.epoch, Led: c.led})
				}
			}
			if !slices.Equal(got, tt.claims) {
				t.Fatalf("claims changed on the way: got %v, want %v", got, tt.claims)
			}
			state := LeadershipState("node-1", "10.0.0.1:7000", tt.claims)
			if kind, _, _, dec, err := decodeClaims(state); err != nil || kind != kindFull || len(dec) != len(tt.claims) {
				t.Fatalf("state: kind %d, %d claims, err %v", kind, len(dec), err)
			}
		})
	}
}
