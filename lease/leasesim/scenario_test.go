package leasesim_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/lease/leasesim"
)

// The directed scenarios of DESIGN.md §2: each broke an earlier draft of
// the rules. They run as transcripts on the simulator (nodes n1.., voters
// v1..; one shard, 0) and check the safety invariants at every step.

const ms = time.Millisecond

type scenario struct {
	nodes, voters int
	length        time.Duration
	modify        func(*leasesim.Config)
	script        func(s *leasesim.Sim)
}

// play runs sc and returns the world for assertions. The checker's first
// violation is returned, not reported, so that tests of weakened rules can
// expect one.
func play(t *testing.T, sc scenario) (*leasesim.Sim, error) {
	t.Helper()
	cfg := leasesim.Config{
		Seed: 1, Nodes: sc.nodes, Voters: sc.voters, Shards: 1,
		FaultsFor: sc.length, Settle: time.Millisecond,
		Script: sc.script,
		Trace:  func(line string) { t.Log(line) },
	}
	if sc.modify != nil {
		sc.modify(&cfg)
	}
	s, err := leasesim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Run()
	return s, err
}

func mustPlay(t *testing.T, sc scenario) *leasesim.Sim {
	t.Helper()
	s, err := play(t, sc)
	if err != nil {
		t.Fatalf("checker: %v", err)
	}
	return s
}

func wantViolation(t *testing.T, err error) {
	t.Helper()
	var v *leasesim.Violation
	if !errors.As(err, &v) {
		t.Fatalf("the weakened rule went unnoticed (err = %v)", err)
	}
	t.Logf("weakened rule caught: %v", v)
}

// leader fails the test unless node i leads shard 0 at the end.
func leader(t *testing.T, s *leasesim.Sim, i int) {
	t.Helper()
	if l, e := s.Leader(0); l != i {
		t.Fatalf("shard 0 led by node index %d (epoch %d), want %d; history %v", l, e, i, s.History(0))
	}
}

func neverAfter(t *testing.T, s *leasesim.Sim, who string, first string) {
	t.Helper()
	h := s.History(0)
	seen := false
	for _, x := range h {
		if x == first {
			seen = true
			continue
		}
		if seen && strings.HasPrefix(x, who+"@") {
			t.Fatalf("%s led again after %s: history %v", who, first, h)
		}
	}
}

// gen reuse: a holder is cut off from two voters, which restart; a rival
// is granted by them; the partition heals and the old holder's keep-alives
// reach them again. Without the restart grace period the rival is granted
// while the old holder still counts those voters.
func genReuse(modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 2, voters: 3, length: 5 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(1000*ms, func() {
			for _, v := range []int{0, 1} {
				s.Cut(0, s.Voter(v))
				s.Cut(s.Voter(v), 0)
			}
		})
		s.At(1100*ms, func() { s.CrashVoter(0); s.CrashVoter(1) })
		s.At(1200*ms, func() { s.RestartVoter(0); s.RestartVoter(1) })
		s.At(1300*ms, func() { s.Want(0, 0, false); s.Want(1, 0, true) })
		s.At(3000*ms, s.Heal)
	}}
}

func TestScenarioGenReuse(t *testing.T) {
	s := mustPlay(t, genReuse(nil))
	leader(t, s, 1)
	if h := s.History(0); len(h) != 2 || !strings.HasPrefix(h[0], "n1@") || !strings.HasPrefix(h[1], "n2@") {
		t.Fatalf("history %v, want n1 then n2", h)
	}
}

func TestScenarioGenReuseWithoutGraceIsCaught(t *testing.T) {
	_, err := play(t, genReuse(func(c *leasesim.Config) { c.VoterMu.NoGrace = true }))
	wantViolation(t, err)
}

// transfer to an expired target: the transfer reaches voters before the
// target's first keep-alive, or after its session expired; a rival's grant
// follows at once. The voters refuse the transfer, the source has stopped
// leading when it sent it, and the rival gets the shard once the source's
// records are released.
func TestScenarioTransferToExpiredTarget(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *leasesim.Sim)
		at    time.Duration
	}{
		{"before its first keep-alive", func(s *leasesim.Sim) { s.Pause(1, 4*time.Second) }, 1000 * ms},
		{"after its session expired", func(s *leasesim.Sim) { s.At(500*ms, func() { s.Crash(1) }) }, 2500 * ms},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustPlay(t, scenario{nodes: 3, voters: 3, length: 6 * time.Second, script: func(s *leasesim.Sim) {
				s.Want(0, 0, true)
				tt.setup(s)
				s.At(tt.at, func() {
					if !s.Transfer(0, 0, 1) {
						t.Errorf("n1 did not lead shard 0 at %v", tt.at)
					}
					s.Want(2, 0, true)
				})
			}})
			leader(t, s, 2)
			for _, x := range s.History(0) {
				if strings.HasPrefix(x, "n2") {
					t.Fatalf("the expired target led: %v", s.History(0))
				}
			}
		})
	}
}

// late Transfer: the source's transfer is delayed; the source has stopped
// leading when it sent it and does not resume when it times out; the
// transfer lands and the target, which wants the shard, leads with it.
func TestScenarioLateTransfer(t *testing.T) {
	s := mustPlay(t, scenario{nodes: 2, voters: 3, length: 6 * time.Second, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(1000*ms, func() {
			for v := range 3 {
				s.Slow(0, s.Voter(v), 1500*ms)
			}
			s.Transfer(0, 0, 1)
			s.Want(1, 0, true)
		})
		s.At(2600*ms, func() {
			for v := range 3 {
				s.Slow(0, s.Voter(v), 0)
			}
		})
	}})
	leader(t, s, 1)
	h := s.History(0)
	if len(h) == 0 {
		t.Fatal("nobody ever led")
	}
	neverAfter(t, s, "n1", h[0])
}

// stale lower epoch: a holder re-grants itself e+1 (a voter restarted),
// transfers e+1, and must never fall back to e, which a voter still
// records for it.
func TestScenarioStaleLowerEpoch(t *testing.T) {
	s := mustPlay(t, scenario{nodes: 2, voters: 3, length: 6 * time.Second, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(1000*ms, func() { s.CrashVoter(0) })
		s.At(1050*ms, func() { s.RestartVoter(0) })
		s.At(1800*ms, func() {
			s.Transfer(0, 0, 1)
			s.Want(1, 0, true)
		})
	}})
	leader(t, s, 1)
	h := s.History(0)
	if len(h) < 3 || h[0] != "n1@1" || h[1] != "n1@2" {
		t.Fatalf("history %v, want n1@1, then the re-grant n1@2, then n2", h)
	}
	neverAfter(t, s, "n1", h[1])
}

// new incarnation: a second process with the same NodeID starts while the
// first still holds the lease, and a delayed keep-alive of the old process
// arrives after the new one's. The old one stops, and the new one leads
// only once the old generation has expired.
func TestScenarioNewIncarnation(t *testing.T) {
	var twin int
	s := mustPlay(t, scenario{nodes: 2, voters: 3, length: 6 * time.Second, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(900*ms, func() { s.Slow(0, s.Voter(0), 1500*ms) })
		s.At(1000*ms, func() { twin = s.Twin(0) })
	}})
	if !s.Holder(0).Superseded() {
		t.Fatal("the old incarnation never learned it was superseded")
	}
	leader(t, s, twin)
	h := s.History(0)
	if len(h) != 2 || h[0] != "n1@1" || !strings.HasPrefix(h[1], "n1#2@") {
		t.Fatalf("history %v, want n1@1 then n1#2", h)
	}
}

// orphaned partial grants: three candidates each win one voter. Once the
// network heals and only one candidate wants the shard, it must get it: the
// others release their partial grants.
func orphans(modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 3, voters: 3, length: 8 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		for n := range 3 {
			s.Want(n, 0, true)
			for v := range 3 {
				if v != n {
					s.Cut(n, s.Voter(v))
					s.Cut(s.Voter(v), n)
				}
			}
		}
		s.At(2000*ms, func() {
			s.Heal()
			s.Want(1, 0, false)
			s.Want(2, 0, false)
		})
	}}
}

func TestScenarioOrphanedPartialGrants(t *testing.T) {
	s := mustPlay(t, orphans(nil))
	leader(t, s, 0)
	if h := s.History(0); len(h) != 1 {
		t.Fatalf("history %v, want only n1", h)
	}
}

func TestScenarioOrphanedPartialGrantsWithoutReleaseIsCaught(t *testing.T) {
	s, err := play(t, orphans(func(c *leasesim.Config) { c.NodeMu.NoRelease = true }))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Leader(0); l >= 0 {
		t.Fatalf("without releases the shard should stay unled; led by %d", l)
	}
}

// drift: clocks at opposite ends of ±ρ — nodes slow, voters fast — with a
// safety margin of 0. The drift bound alone must keep leases apart.
func driftConfig(seed uint64) leasesim.Config {
	cfg := variant(seed)
	cfg.MaxClockDrift = 0.05
	cfg.ExtremeDrift = true
	cfg.SafetyMargin = -1
	return cfg
}

func TestScenarioDrift(t *testing.T) {
	t.Parallel()
	n := seeds(t, 40)
	for seed := uint64(1); seed <= uint64(n); seed++ {
		if _, err := leasesim.Run(driftConfig(seed)); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

func TestScenarioDriftIgnoredIsCaught(t *testing.T) {
	for seed := uint64(1); seed <= 400; seed++ {
		cfg := driftConfig(seed)
		cfg.NodeMu = lease.HolderMutations{IgnoreDrift: true}
		if _, err := leasesim.Run(cfg); err != nil {
			wantViolation(t, err)
			return
		}
	}
	t.Fatal("400 seeds with drift ignored went unnoticed")
}
