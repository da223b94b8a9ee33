package membership_test

import (
	"strings"
	"testing"

	"github.com/tenurehq/tenure/membership"
)

func TestConfigValidateNamesTheField(t *testing.T) {
	valid := func() membership.Config {
		return membership.Config{NodeID: "node-1", Shards: 64, BindAddr: "127.0.0.1:0"}
	}
	tests := []struct {
		name   string
		modify func(*membership.Config)
		want   string
	}{
		{"empty node ID", func(c *membership.Config) { c.NodeID = "" }, "NodeID"},
		{"node ID with space", func(c *membership.Config) { c.NodeID = "node 1" }, "NodeID"},
		{"node ID too long", func(c *membership.Config) { c.NodeID = strings.Repeat("n", 65) }, "NodeID"},
		{"no shards", func(c *membership.Config) { c.Shards = 0 }, "Shards"},
		{"bind without port", func(c *membership.Config) { c.BindAddr = "127.0.0.1" }, "BindAddr"},
		{"bad port", func(c *membership.Config) { c.BindAddr = "127.0.0.1:99999" }, "BindAddr"},
		{"advertise a name", func(c *membership.Config) { c.AdvertiseAddr = "example.com:7946" }, "AdvertiseAddr"},
		{"bad seed", func(c *membership.Config) { c.Seeds = []string{"10.0.0.1:7946", "nope"} }, "Seeds[1]"},
		{"short key", func(c *membership.Config) { c.SecretKeys = [][]byte{make([]byte, 10)} }, "SecretKeys[0]"},
		{"negative weight", func(c *membership.Config) { c.Weight = -2 }, "Weight"},
		{"unknown profile", func(c *membership.Config) { c.Profile = 9 }, "Profile"},
		{"fast rejoin", func(c *membership.Config) { c.RejoinInterval = 1 }, "RejoinInterval"},
		{"metadata too large", func(c *membership.Config) { c.GRPCAddr = strings.Repeat("a", 500) + ":1" }, "metadata too large"},
	}
	if err := valid().Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.modify(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

func TestParseProfile(t *testing.T) {
	for _, p := range []membership.Profile{membership.LAN, membership.WAN, membership.Local} {
		got, err := membership.ParseProfile(p.String())
		if err != nil || got != p {
			t.Errorf("ParseProfile(%q) = %v, %v", p.String(), got, err)
		}
	}
	if _, err := membership.ParseProfile("fast"); err == nil {
		t.Error(`ParseProfile("fast") succeeded`)
	}
}
