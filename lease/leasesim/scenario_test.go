package leasesim_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
	"github.com/tenurehq/tenure/lease/leasesim"
)

// The directed scenarios of docs/design.md §2.5: each broke an earlier draft of
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
	_, fails := sweep(t, 1, seeds(t, 40), driftConfig, 1)
	for _, f := range fails {
		t.Errorf("%v", f.err)
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

// new incarnation beside a live leader: n1 leads; from 995 ms on it hears
// nothing from the voters (its keep-alives still reach them), so it never
// learns of its replacement. At 1 s a second process with n1's NodeID
// starts — wanting nothing yet, as a starting shard.Node, or wanting the
// shard — and n2 becomes the desired owner. The voters list n1's records
// in the twin's Held lists (they are keyed by NodeID); the twin must
// neither count nor release them, and no voter may accept a release from
// a process other than the one whose live generation the record names. n2
// leads only once n1's generation has expired: never beside it.
func twinBesideLeader(twin, twinWants bool, modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 2, voters: 3, length: 4 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(995*ms, func() {
			for v := range 3 {
				s.Cut(s.Voter(v), 0)
			}
		})
		s.At(1000*ms, func() {
			if twin {
				// Process numbers are stable: the cuts above keep
				// isolating the first process, not the twin.
				s.Want(s.Twin(0), 0, twinWants)
			}
			s.Want(1, 0, true)
		})
	}}
}

// twinRelease is the review's bug: a Release that ignores the generation
// at the voter, and a holder that takes Held records of another process of
// its NodeID for its own.
func twinRelease(c *leasesim.Config) {
	c.VoterMu.ReleaseIgnoresGen = true
	c.NodeMu.AdoptOtherGens = true
}

var twinCases = []struct {
	name  string
	wants bool
}{
	{"twin wants nothing", false},
	{"twin wants the shard", true},
}

func TestScenarioTwinBesideLeader(t *testing.T) {
	for _, tt := range twinCases {
		t.Run(tt.name, func(t *testing.T) {
			s := mustPlay(t, twinBesideLeader(true, tt.wants, nil))
			h := s.History(0)
			if len(h) < 2 || h[0] != "n1@1" {
				t.Fatalf("history %v, want n1@1 and then a successor", h)
			}
			neverAfter(t, s, "n1", h[0])
			if l, _ := s.Leader(0); l < 1 {
				t.Fatalf("shard 0 led by process %d at the end, want n2 or the twin; history %v", l, h)
			}
		})
	}
}

func TestScenarioTwinReleaseIsCaught(t *testing.T) {
	for _, tt := range twinCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := play(t, twinBesideLeader(true, tt.wants, twinRelease))
			wantViolation(t, err)
		})
	}
}

// Without a twin the same mutations break nothing: the twin is what
// releases the live process's records.
func TestScenarioTwinReleaseNeedsTheTwin(t *testing.T) {
	mustPlay(t, twinBesideLeader(false, false, twinRelease))
}

// partial re-grant: n1 leads at epoch 1. v3 restarts while n1 cannot reach
// it; when n1 reaches it again it sees a new generation and re-grants at
// epoch 2. v1 accepts, v3 refuses (grace), v2's reply is slow (400 ms, more
// than the request timeout), so the attempt fails with a partial grant at
// v1 — whose only record for the shard now names epoch 2. Releasing it
// would leave v1 protecting nothing while n1 still counts it for epoch 1.
// The adversary watches v1: once it has accepted epoch 2 its replies to n1
// are lost, and if n1 releases epoch 2 there, n1 is cut off from v1 and v3
// altogether. n2 wants the shard from 2.05 s and is granted by {v1, v3}
// as soon as they allow it, which must not be while n1 leads.
func partialRegrant(t *testing.T, modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 2, voters: 3, length: 4 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(900*ms, func() { s.Cut(0, s.Voter(2)) })
		s.At(1000*ms, func() { s.CrashVoter(2) })
		s.At(1001*ms, func() { s.RestartVoter(2) })
		s.At(1500*ms, func() { s.Slow(s.Voter(1), 0, 400*ms) })
		s.At(1600*ms, s.Heal)
		phase := 0
		var poll func()
		poll = func() {
			r := s.VoterState(0).Record(0)
			switch {
			case phase == 0 && r.Epoch == 2 && r.Holder == "n1" && !r.Released:
				phase = 1
				s.At(s.Now()+30*ms, func() { s.Cut(s.Voter(0), 0) })
			case phase == 1 && r.Epoch == 2 && r.Holder == "n1" && r.Released:
				phase = 2
				t.Logf("%v: v1's record %+v: isolating n1 from v1 and v3", s.Now(), r)
				for _, v := range []int{0, 2} {
					s.Cut(0, s.Voter(v))
					s.Cut(s.Voter(v), 0)
				}
				return
			}
			if s.Now() < 3500*ms {
				s.At(s.Now()+ms/10, poll)
			}
		}
		s.At(1600*ms, poll)
		s.At(2050*ms, func() { s.Want(1, 0, true) })
	}}
}

func TestScenarioPartialRegrant(t *testing.T) {
	s := mustPlay(t, partialRegrant(t, nil))
	if h := s.History(0); len(h) == 0 || h[0] != "n1@1" {
		t.Fatalf("history %v, want n1@1 first", h)
	}
}

func TestScenarioPartialRegrantReleaseIsCaught(t *testing.T) {
	_, err := play(t, partialRegrant(t, func(c *leasesim.Config) { c.NodeMu.KeepVoteAfterRelease = true }))
	wantViolation(t, err)
}

// Without any release the mutation has nothing to keep counting.
func TestScenarioPartialRegrantWithoutReleaseNoOverlap(t *testing.T) {
	mustPlay(t, partialRegrant(t, func(c *leasesim.Config) {
		c.NodeMu.KeepVoteAfterRelease = true
		c.NodeMu.NoRelease = true
	}))
}

// stale incarnation: n1 runs as incarnation 2, which the voters remember;
// it crashes, and the next process starts with incarnation 1, read from a
// wall clock that stepped back. Every voter answers "stale". Nothing names
// the new process yet, so it takes an incarnation above the voters' and
// leads once the old process's generation has expired — instead of being
// stale for good.
func staleIncarnation(modify func(*leasesim.Config)) scenario {
	return scenario{nodes: 2, voters: 3, length: 5 * time.Second, modify: modify, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(300*ms, func() { s.Crash(0) })
		s.At(310*ms, func() { s.Restart(0) }) // incarnation 2
		s.At(1500*ms, func() { s.Crash(0) })
		s.At(1600*ms, func() { s.RestartWith(0, 1) })
	}}
}

func TestScenarioStaleIncarnation(t *testing.T) {
	s := mustPlay(t, staleIncarnation(nil))
	leader(t, s, 0)
	if inc := s.Holder(0).Inc(); inc <= 2 {
		t.Fatalf("the restarted process runs as incarnation %d, want above 2", inc)
	}
}

func TestScenarioStaleIncarnationKeptIsCaught(t *testing.T) {
	s, err := play(t, staleIncarnation(func(c *leasesim.Config) { c.NodeMu.KeepStaleInc = true }))
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := s.Leader(0); l >= 0 {
		t.Fatalf("with a stale incarnation kept the shard should stay unled; led by %d", l)
	}
	if !s.Holder(0).Superseded() {
		t.Fatal("the restarted process was never told it is stale")
	}
}

// stale incarnation, voters disagreeing: incarnation 2 of n1 reached every
// voter, 3 and 4 only v1 and v3 (v2 was cut off). The next process starts
// as incarnation 1, from a wall clock that stepped back, and hears v2's
// "stale, 2 seen" first. It must still end up above every incarnation the
// voters know, and lead.
func TestScenarioStaleIncarnationVotersDisagree(t *testing.T) {
	s := mustPlay(t, scenario{nodes: 1, voters: 3, length: 5 * time.Second, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(300*ms, func() { s.Crash(0) })
		s.At(310*ms, func() { s.Restart(0) }) // incarnation 2, at every voter
		s.At(600*ms, func() {
			s.Crash(0)
			s.Cut(0, s.Voter(1))
			s.Cut(s.Voter(1), 0)
		})
		s.At(610*ms, func() { s.Restart(0) }) // 3, at v1 and v3 only
		s.At(700*ms, func() { s.Crash(0) })
		s.At(710*ms, func() { s.Restart(0) }) // 4, at v1 and v3 only
		s.At(900*ms, func() {
			s.Crash(0)
			s.Heal()
			s.Slow(s.Voter(0), 0, 50*ms) // v2's answer comes first
			s.Slow(s.Voter(2), 0, 50*ms)
		})
		s.At(1000*ms, func() { s.RestartWith(0, 1) })
		s.At(1500*ms, func() {
			s.Slow(s.Voter(0), 0, 0)
			s.Slow(s.Voter(2), 0, 0)
		})
	}})
	if s.Holder(0).Superseded() {
		t.Fatalf("the restarted process (incarnation %d) is stale for good", s.Holder(0).Inc())
	}
	leader(t, s, 0)
}

// transfer during a re-grant: n1 leads at epoch 1; v3 restarts, so n1
// re-grants at epoch 2, and v1 and v2 accept. Before their replies are in,
// a planned handoff transfers the shard at epoch 1, the epoch n1 leads at.
// Every voter refuses: v1 and v2 record n1 at epoch 2 now, v3 an older
// session's epoch 1. The handoff must not fail for that: when it does, the
// target, which prepared for the shard, waits out its hold-off before
// acquiring it itself, and the planned move leaves the shard unled for
// longer than a crash failover would.
func TestScenarioTransferDuringRegrant(t *testing.T) {
	s := mustPlay(t, scenario{nodes: 2, voters: 3, length: 3 * time.Second, script: func(s *leasesim.Sim) {
		s.Want(0, 0, true)
		s.At(900*ms, func() { s.Cut(0, s.Voter(2)) })
		s.At(1000*ms, func() { s.CrashVoter(2) })
		s.At(1001*ms, func() { s.RestartVoter(2) })
		s.At(1500*ms, func() { s.Slow(s.Voter(1), 0, 400*ms) })
		s.At(1600*ms, s.Heal)
		s.At(1700*ms, func() { s.Slow(s.Voter(1), 0, 0) })
		// As shard.Node does, the transfer waits while the re-grant is in
		// flight (lease.ErrRegranting).
		var transfer func()
		transfer = func() {
			err := s.TransferErr(0, 0, 1)
			switch {
			case errors.Is(err, lease.ErrRegranting):
				s.At(s.Now()+10*ms, transfer)
			case err != nil:
				t.Errorf("transfer at %v: %v", s.Now(), err)
			default:
				s.Want(1, 0, true)
			}
		}
		s.At(1900*ms, transfer)
	}})
	if r := s.Result(); r.Handoffs != 1 {
		t.Fatalf("the handoff failed (%d transfers accepted); history %v", r.Handoffs, s.History(0))
	}
}
