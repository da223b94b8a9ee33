package membership_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard/shardtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const converge = 15 * time.Second

func config(id string, seeds ...string) membership.Config {
	return membership.Config{
		NodeID: id, Cluster: "test", Shards: 64, BindAddr: "127.0.0.1:0", VoterSet: 0xfeed,
		Seeds: seeds, Profile: membership.Local, Logger: shardtest.Logger(),
	}
}

func start(t *testing.T, cfg membership.Config) *membership.Membership {
	t.Helper()
	m, err := membership.Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(m.Stop)
	return m
}

// drain consumes m's events in the background so memberlist is never held
// up, and returns them through a channel for tests that inspect them.
func names(ms []membership.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.NodeID)
	}
	return out
}

func sees(m *membership.Membership, ids ...string) bool {
	got := names(m.Members())
	if len(got) != len(ids) {
		return false
	}
	for i := range ids {
		if got[i] != ids[i] {
			return false
		}
	}
	return true
}

func TestEventsArriveInOrder(t *testing.T) {
	a := start(t, config("a"))
	events := make(chan membership.Event, 100)
	go func() {
		for ev := range a.Events() {
			events <- ev
		}
		close(events)
	}()
	b := start(t, config("b", a.Addr()))
	c := start(t, config("c", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b", "c") }, "a sees a, b, c")

	if err := b.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Stop()
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "c") }, "a drops b")
	c.Stop() // a crash: no Leave

	want := map[string][]membership.EventType{
		"a": {membership.Joined},
		"b": {membership.Joined, membership.Left},
		"c": {membership.Joined, membership.Failed},
	}
	got := map[string][]membership.EventType{}
	deadline := time.After(converge)
	for len(got["b"]) < 2 || len(got["c"]) < 2 {
		select {
		case ev := <-events:
			if ev.Type != membership.Updated {
				got[ev.Member.NodeID] = append(got[ev.Member.NodeID], ev.Type)
			}
		case <-deadline:
			t.Fatalf("events so far %v, want %v", got, want)
		}
	}
	for id, w := range want {
		if strings.Join(typeNames(got[id]), ",") != strings.Join(typeNames(w), ",") {
			t.Errorf("events for %s = %v, want %v", id, got[id], w)
		}
	}
	a.Stop()
	for range events { // Stop closes the channel
	}
}

func typeNames(ts []membership.EventType) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.String())
	}
	return out
}

// A slow consumer must not stall gossip: events queue while nobody reads.
func TestUnreadEventsDoNotBlockGossip(t *testing.T) {
	a := start(t, config("a"))
	var others []*membership.Membership
	for _, id := range []string{"b", "c", "d", "e"} {
		others = append(others, start(t, config(id, a.Addr())))
	}
	// Nobody reads a's events, yet a keeps up with membership.
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b", "c", "d", "e") }, "a sees all five")
	others[0].Stop()
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "c", "d", "e") }, "a drops b")
}

func TestJoinRefusesIncompatibleNode(t *testing.T) {
	a := start(t, config("a"))
	b := start(t, config("b", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b") }, "a and b converge")
	tests := []struct {
		name   string
		modify func(*membership.Config)
		want   string
	}{
		{"other cluster", func(c *membership.Config) { c.Cluster = "other" }, `cluster is "test" there, "other" here`},
		{"other shard count", func(c *membership.Config) { c.Shards = 128 }, "shards is 64 there, 128 here"},
		{"other voter set", func(c *membership.Config) { c.VoterSet = 0xbeef }, "voter set is 000000000000feed there, 000000000000beef here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config("x", a.Addr())
			tt.modify(&cfg)
			m, err := membership.Start(cfg)
			if err == nil {
				m.Stop()
				t.Fatal("Start succeeded; want a refusal")
			}
			if !errors.Is(err, membership.ErrIncompatible) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start error = %v, want ErrIncompatible saying %q", err, tt.want)
			}
		})
	}
	// A compatible node joining now proves gossip went on; the refused
	// ones must not be in anyone's view.
	c := start(t, config("c", b.Addr()))
	for _, m := range []*membership.Membership{a, b, c} {
		shardtest.Eventually(t, converge, func() bool { return sees(m, "a", "b", "c") }, "views are exactly a, b, c")
	}
}

func TestNodeWithoutGossipKeyCannotJoin(t *testing.T) {
	key := []byte("0123456789abcdef")
	withKey := func(id string, seeds ...string) membership.Config {
		c := config(id, seeds...)
		c.SecretKeys = [][]byte{key}
		return c
	}
	a := start(t, withKey("a"))
	start(t, withKey("b", a.Addr()))
	stranger := start(t, config("stranger", a.Addr()))
	wrongKey := config("wrong", a.Addr())
	wrongKey.SecretKeys = [][]byte{[]byte("fedcba9876543210")}
	wrong := start(t, wrongKey)
	if stranger.Joined() || wrong.Joined() {
		t.Fatalf("a node without the key joined (stranger %v, wrong key %v)", stranger.Joined(), wrong.Joined())
	}
	// A keyed node joining after them shows that gossip went on meanwhile.
	start(t, withKey("c", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b", "c") }, "a sees exactly a, b, c")
	if !sees(stranger, "stranger") || !sees(wrong, "wrong") {
		t.Fatalf("keyless nodes see %v and %v", names(stranger.Members()), names(wrong.Members()))
	}
}

func TestRestartUnderSameNameAtNewAddress(t *testing.T) {
	a := start(t, config("a"))
	start(t, config("b", a.Addr()))
	c := start(t, config("c", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b", "c") }, "converge")
	old := c.Addr()
	c.Stop()
	c2 := start(t, config("c", a.Addr()))
	if c2.Addr() == old {
		t.Skip("the OS gave the restarted node its old port; nothing to test")
	}
	began := time.Now()
	// memberlist alone refuses the new address as a conflict for ~40 s;
	// DeadNodeReclaimTime brings this down to detection plus a moment.
	shardtest.Eventually(t, 5*time.Second, func() bool {
		for _, m := range a.Members() {
			if m.NodeID == "c" && m.Addr == c2.Addr() {
				return true
			}
		}
		return false
	}, "a sees c at its new address %s", c2.Addr())
	t.Logf("restart at a new address accepted after %v", time.Since(began))
}

func TestRestartAtSameAddressIsVisible(t *testing.T) {
	a := start(t, config("a"))
	c := start(t, config("c", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "c") }, "converge")
	boot := func() string {
		for _, m := range a.Members() {
			if m.NodeID == "c" {
				return m.BootID
			}
		}
		return ""
	}
	first := boot()
	addr := c.Addr()
	c.Stop()
	cfg := config("c", a.Addr())
	cfg.BindAddr = addr
	c2, err := membership.Start(cfg)
	if err != nil {
		t.Skipf("port %s not free again: %v", addr, err)
	}
	t.Cleanup(c2.Stop)
	shardtest.Eventually(t, converge, func() bool { b := boot(); return b != "" && b != first },
		"a sees c's new boot ID")
}

func TestSetStatePropagates(t *testing.T) {
	a := start(t, config("a"))
	b := start(t, config("b", a.Addr()))
	shardtest.Eventually(t, converge, func() bool { return sees(a, "a", "b") }, "converge")
	ctx, cancel := context.WithTimeout(context.Background(), converge)
	defer cancel()
	if err := b.SetState(ctx, membership.Draining); err != nil {
		t.Fatal(err)
	}
	shardtest.Eventually(t, converge, func() bool {
		for _, m := range a.Members() {
			if m.NodeID == "b" {
				return m.State == membership.Draining
			}
		}
		return false
	}, "a sees b draining")
	b.Stop()
	if err := b.SetState(ctx, membership.Active); !errors.Is(err, membership.ErrStopped) {
		t.Fatalf("SetState after Stop = %v, want ErrStopped", err)
	}
}
