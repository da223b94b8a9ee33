package membership

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

// The protocol version is a constant, so a mismatch cannot be produced by
// configuration; check is tested directly.
func TestCheckNamesTheMismatch(t *testing.T) {
	cfg := Config{NodeID: "a", Cluster: "c", Shards: 64}.withDefaults()
	m := &Membership{cfg: cfg}
	local := cfg.meta("boot")
	m.local.Store(&local)
	node := func(name string, modify func(*Meta)) *memberlist.Node {
		meta := local
		meta.NodeID = name
		modify(&meta)
		b, err := meta.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return &memberlist.Node{Name: name, Meta: b}
	}
	tests := []struct {
		name string
		give *memberlist.Node
		want string // "" = accepted
	}{
		{"compatible", node("b", func(*Meta) {}), ""},
		{"protocol", node("b", func(m *Meta) { m.Protocol = ProtocolVersion + 1 }), "protocol is 2 there, 1 here"},
		{"cluster", node("b", func(m *Meta) { m.Cluster = "x" }), `cluster is "x" there, "c" here`},
		{"shards", node("b", func(m *Meta) { m.Shards = 8 }), "shards is 8 there, 64 here"},
		{"name differs from node ID", &memberlist.Node{Name: "b", Meta: node("z", func(*Meta) {}).Meta}, "node ID"},
		{"no metadata", &memberlist.Node{Name: "b"}, "metadata"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.check(tt.give)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("check = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("check = %v, want ErrIncompatible saying %q", err, tt.want)
			}
		})
	}
}
