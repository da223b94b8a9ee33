package faultnet_test

import (
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/tenurehq/tenure/membership/faultnet"
)

// startMember creates a memberlist node with fast failure detection on a
// faultnet transport. It is shut down, transport included, when the test
// ends.
func startMember(t *testing.T, n *faultnet.Network, name string) *memberlist.Memberlist {
	t.Helper()
	tr, err := n.Transport(name, "127.0.0.1", 0, nil)
	if err != nil {
		t.Fatalf("Transport(%q): %v", name, err)
	}
	cfg := memberlist.DefaultLocalConfig()
	cfg.Name = name
	cfg.Transport = tr
	cfg.ProbeInterval = 100 * time.Millisecond
	cfg.ProbeTimeout = 50 * time.Millisecond
	cfg.SuspicionMult = 2
	cfg.GossipInterval = 50 * time.Millisecond
	// Gossip alone may fail to revive a node that another node declared
	// dead at the same incarnation; frequent push/pull repairs that
	// quickly once links are healed.
	cfg.PushPullInterval = 200 * time.Millisecond
	cfg.LogOutput = io.Discard
	m, err := memberlist.Create(cfg)
	if err != nil {
		_ = tr.Shutdown()
		t.Fatalf("memberlist.Create(%q): %v", name, err)
	}
	t.Cleanup(func() {
		if err := m.Shutdown(); err != nil {
			t.Errorf("Shutdown(%q): %v", name, err)
		}
	})
	return m
}

func memberNames(m *memberlist.Memberlist) []string {
	var names []string
	for _, node := range m.Members() {
		names = append(names, node.Name)
	}
	slices.Sort(names)
	return names
}

// waitMembers waits until every list in ms sees exactly the members want.
func waitMembers(t *testing.T, want []string, ms ...*memberlist.Memberlist) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	for _, m := range ms {
		waitUntil(t, fmt.Sprintf("%s to see members %v", m.LocalNode().Name, want),
			func() bool { return slices.Equal(memberNames(m), want) },
			func() string { return fmt.Sprintf("it sees %v", memberNames(m)) })
	}
}

func TestMemberlistIsolatedNodeIsDropped(t *testing.T) {
	checkLeaks(t)
	n := faultnet.New()

	m1 := startMember(t, n, "node-1")
	m2 := startMember(t, n, "node-2")
	m3 := startMember(t, n, "node-3")
	all := []string{"node-1", "node-2", "node-3"}

	seed := m1.LocalNode().Address()
	for _, m := range []*memberlist.Memberlist{m2, m3} {
		if _, err := m.Join([]string{seed}); err != nil {
			t.Fatalf("%s: Join(%s): %v", m.LocalNode().Name, seed, err)
		}
	}
	waitMembers(t, all, m1, m2, m3)

	n.Isolate("node-3")
	waitMembers(t, []string{"node-1", "node-2"}, m1, m2)
	waitMembers(t, []string{"node-3"}, m3)
	if n.Dropped() == 0 {
		t.Fatal("Dropped() = 0 after the cluster noticed the isolation")
	}

	// After healing, node-3 rejoins and refutes its death.
	n.Heal()
	if _, err := m3.Join([]string{seed}); err != nil {
		t.Fatalf("node-3: rejoin: %v", err)
	}
	waitMembers(t, all, m1, m2, m3)
}
