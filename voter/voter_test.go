package voter_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tenurehq/tenure/lease"
	voterv1 "github.com/tenurehq/tenure/proto/voter/v1"
	"github.com/tenurehq/tenure/voter"
	"github.com/tenurehq/tenure/voterstore"
)

// A grant survives a restart, and the restarted voter grants nothing for a
// lease duration, because it forgot the sessions that protect its records.
// After that, a record protects its holder only while the holder keeps a
// session alive at the new boot.
func TestRestartKeepsRecordsAndWaitsOutGrace(t *testing.T) {
	clock := &fakeClock{}
	dir := t.TempDir()
	h := serveNew(t, dir, clock)
	if h.srv.Restarted() {
		t.Fatal("Restarted() after Init = true, want false")
	}
	rep := h.call(t, request("n1", grant(7, 1), grant(8, 1)))
	g1 := rep.Gen
	held7 := lease.Record{Epoch: 1, Holder: "n1", HolderGen: g1}
	held8 := lease.Record{Epoch: 1, Holder: "n1", HolderGen: g1}
	wantResult(t, "first grant of shard 7", rep.Results[0], lease.Accepted, held7)
	wantResult(t, "first grant of shard 8", rep.Results[1], lease.Accepted, held8)
	h.stop(t)

	clock.Advance(time.Second)
	h = serve(t, testConfig(t, dir, clock, false))
	if !h.srv.Restarted() {
		t.Fatal("Restarted() after reopening = false, want true")
	}
	if got := h.srv.Record(7); got != held7 {
		t.Fatalf("Record(7) after restart = %+v, want %+v", got, held7)
	}

	// In the grace period nobody is granted anything, not even the holder.
	rep = h.call(t, request("n2", grant(7, 2)))
	wantResult(t, "rival's grant at the start of the grace period", rep.Results[0], lease.RefusedGrace, held7)
	clock.Advance(ld - 1)
	rep = h.call(t, request("n1", grant(7, 2)))
	wantResult(t, "holder's grant at the end of the grace period", rep.Results[0], lease.RefusedGrace, held7)
	g1b := rep.Gen
	if g1b == g1 {
		t.Fatalf("holder's gen after the restart = %d, the gen of the previous boot", g1b)
	}

	clock.Advance(1) // the grace period is over
	// The holder saw its gen change and re-grants shard 7 at its new gen.
	rep = h.call(t, request("n1", grant(7, 2)))
	held7 = lease.Record{Epoch: 2, Holder: "n1", HolderGen: g1b}
	wantResult(t, "holder's re-grant after the grace period", rep.Results[0], lease.Accepted, held7)
	// Shard 8 still names a gen of the previous boot, which no session has
	// any more: it protects nobody.
	rep = h.call(t, request("n2", grant(8, 2)))
	wantResult(t, "rival's grant of a shard recorded at a dead gen", rep.Results[0], lease.Accepted,
		lease.Record{Epoch: 2, Holder: "n2", HolderGen: rep.Gen})

	// Shard 7 is protected while n1's session lives: LD after its last
	// keep-alive, which was the re-grant.
	clock.Advance(ld - 1)
	rep = h.call(t, request("n2", grant(7, 3)))
	wantResult(t, "rival's grant while the holder's session is live", rep.Results[0], lease.RefusedHeld, held7)
	clock.Advance(1)
	rep = h.call(t, request("n2", grant(7, 3)))
	wantResult(t, "rival's grant once the holder's session expired", rep.Results[0], lease.Accepted,
		lease.Record{Epoch: 3, Holder: "n2", HolderGen: rep.Gen})
}

// A voter on a store Init has just created grants nothing for a lease
// duration either: it cannot tell a cluster's first start from a lost store
// re-initialised, after which holders may still count on what an earlier
// process under its ID answered.
func TestNewStoreStartsInGrace(t *testing.T) {
	clock := &fakeClock{}
	h := serve(t, testConfig(t, t.TempDir(), clock, true))
	if h.srv.Restarted() {
		t.Fatal("Restarted() after Init = true, want false")
	}
	rep := h.call(t, request("n1", grant(1, 1)))
	wantResult(t, "grant at the start of a new voter's grace period", rep.Results[0], lease.RefusedGrace, lease.Record{})
	clock.Advance(ld - 1)
	rep = h.call(t, request("n1", grant(1, 1)))
	wantResult(t, "grant at the end of the grace period", rep.Results[0], lease.RefusedGrace, lease.Record{})
	clock.Advance(1)
	rep = h.call(t, request("n1", grant(1, 1)))
	wantResult(t, "grant after the grace period", rep.Results[0], lease.Accepted, lease.Record{Epoch: 1, Holder: "n1", HolderGen: rep.Gen})
}

// A grant whose epoch is not above the record's is refused, and the
// refusal carries the record.
func TestGrantRefusesEpochNotAbove(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	rep := h.call(t, request("n1", grant(3, 5)))
	held := lease.Record{Epoch: 5, Holder: "n1", HolderGen: rep.Gen}
	wantResult(t, "first grant", rep.Results[0], lease.Accepted, held)

	for _, tt := range []struct {
		name  string
		from  string
		epoch uint64
	}{
		{name: "equal epoch from another node", from: "n2", epoch: 5},
		{name: "lower epoch from another node", from: "n2", epoch: 4},
		{name: "epoch zero", from: "n2", epoch: 0},
		{name: "equal epoch from the holder", from: "n1", epoch: 5},
		{name: "lower epoch from the holder", from: "n1", epoch: 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := h.call(t, request(tt.from, grant(3, tt.epoch)))
			wantResult(t, "grant", rep.Results[0], lease.RefusedEpoch, held)
		})
	}
	if got := h.srv.Record(3); got != held {
		t.Errorf("Record(3) = %+v, want %+v", got, held)
	}
}

// Requests of another cluster and malformed requests are refused with
// codes that say whether resending can help, and change nothing.
func TestCallRefusesBadRequests(t *testing.T) {
	// Out of its grace period, so that a request that got through would
	// be granted.
	h := serveNew(t, t.TempDir(), &fakeClock{})
	grantPB := &voterv1.Op{Kind: voterv1.OpKind_OP_KIND_GRANT, Shard: 1, Epoch: 1}
	for _, tt := range []struct {
		name     string
		give     *voterv1.CallRequest
		wantCode codes.Code
		wantIn   []string // substrings of the status message
	}{
		{
			name:     "another cluster",
			give:     &voterv1.CallRequest{Cluster: "staging", From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB}},
			wantCode: codes.FailedPrecondition,
			wantIn:   []string{`"prod"`, `"staging"`},
		},
		{
			name:     "no cluster",
			give:     &voterv1.CallRequest{From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB}},
			wantCode: codes.FailedPrecondition,
			wantIn:   []string{`"prod"`, `""`},
		},
		{
			name: "another voter set",
			give: &voterv1.CallRequest{Cluster: cluster, From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB},
				VoterSet: lease.VoterSetID([]string{voterID, "v0", "v8"})},
			wantCode: codes.FailedPrecondition,
			wantIn:   []string{"voter set", `"n1"`, fmt.Sprintf("%016x", lease.VoterSetID(testVoters))},
		},
		{
			name: "a longer lease duration",
			give: &voterv1.CallRequest{Cluster: cluster, From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB},
				LeaseDurationNs: int64(2 * ld)},
			wantCode: codes.FailedPrecondition,
			wantIn:   []string{"lease duration", `"n1"`, `"` + voterID + `"`, (2 * ld).String(), ld.String()},
		},
		{
			name: "a shorter lease duration",
			give: &voterv1.CallRequest{Cluster: cluster, From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB},
				LeaseDurationNs: int64(ld - 1)},
			wantCode: codes.FailedPrecondition,
			wantIn:   []string{"lease duration", `"n1"`, (ld - 1).String(), ld.String()},
		},
		{
			name: "a negative lease duration",
			give: &voterv1.CallRequest{Cluster: cluster, From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB},
				LeaseDurationNs: -int64(ld)},
			wantCode: codes.InvalidArgument,
			wantIn:   []string{"CallRequest.lease_duration_ns"},
		},
		{
			name:     "empty from",
			give:     &voterv1.CallRequest{Cluster: cluster, Inc: 1, Ops: []*voterv1.Op{grantPB}},
			wantCode: codes.InvalidArgument,
			wantIn:   []string{"CallRequest.from"},
		},
		{
			name:     "op without kind",
			give:     &voterv1.CallRequest{Cluster: cluster, From: "n1", Inc: 1, Ops: []*voterv1.Op{grantPB, {Shard: 1, Epoch: 2}}},
			wantCode: codes.InvalidArgument,
			wantIn:   []string{"CallRequest.ops[1].kind"},
		},
		{
			name:     "oversized from",
			give:     &voterv1.CallRequest{Cluster: cluster, From: strings.Repeat("n", voterv1.MaxStringLen+1), Inc: 1},
			wantCode: codes.InvalidArgument,
			wantIn:   []string{"CallRequest.from"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
			defer cancel()
			_, err := h.client.Call(ctx, tt.give)
			st := status.Convert(err)
			if st.Code() != tt.wantCode {
				t.Fatalf("code %v (%v), want %v", st.Code(), err, tt.wantCode)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(st.Message(), s) {
					t.Errorf("message %q does not contain %q", st.Message(), s)
				}
			}
		})
	}
	if got := h.srv.Record(1); got != (lease.Record{}) {
		t.Errorf("Record(1) after refused requests = %+v, want none", got)
	}

	t.Run("nil message", func(t *testing.T) {
		_, err := h.srv.Call(context.Background(), nil)
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "CallRequest") {
			t.Errorf("Call(nil) = %v, want InvalidArgument naming CallRequest", err)
		}
	})
	t.Run("caller gone while it waited for the lock", func(t *testing.T) {
		waiting, release := voter.HoldLock(h.srv)
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := h.srv.Call(ctx, voterv1.RequestToPB(cluster, request("n1", grant(1, 1))))
			done <- err
		}()
		<-waiting
		cancel()
		release()
		if err := <-done; status.Code(err) != codes.Canceled || !strings.Contains(err.Error(), "abandoned") {
			t.Errorf("Call whose caller left while it waited: %v, want Canceled, abandoned", err)
		}
		if got := h.srv.Record(1); got != (lease.Record{}) {
			t.Errorf("Record(1) after a request abandoned at the lock = %+v, want none", got)
		}
	})
	t.Run("too many waiting", func(t *testing.T) {
		voter.SetMaxWaiting(h.srv, 2)
		defer voter.SetMaxWaiting(h.srv, voter.MaxWaiting)
		waiting, release := voter.HoldLock(h.srv)
		defer release()
		done := make(chan error, 2)
		for i := range 2 {
			go func() {
				_, err := h.srv.Call(context.Background(), voterv1.RequestToPB(cluster, request(fmt.Sprintf("w%d", i))))
				done <- err
			}()
			<-waiting
		}
		_, err := h.srv.Call(context.Background(), voterv1.RequestToPB(cluster, request("n1", grant(1, 1))))
		if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "2 calls already wait") {
			t.Errorf("Call with 2 waiting at most 2: %v, want ResourceExhausted naming the count", err)
		}
		release()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("a call that waited: %v, want it answered", err)
			}
		}
		if got := h.srv.Record(1); got != (lease.Record{}) {
			t.Errorf("Record(1) after a shed request = %+v, want none", got)
		}
	})
	t.Run("caller gone", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := h.srv.Call(ctx, voterv1.RequestToPB(cluster, request("n1", grant(1, 1))))
		if got := status.Code(err); got != codes.Canceled {
			t.Errorf("Call with a canceled context: code %v (%v), want Canceled", got, err)
		}
		if got := h.srv.Record(1); got != (lease.Record{}) {
			t.Errorf("Record(1) after an abandoned request = %+v, want none", got)
		}
	})
}

// A voter without its store refuses to start, and says what the operator
// may do about it.
func TestOpenRefusesMissingStore(t *testing.T) {
	dir := t.TempDir()
	_, err := voter.Open(testConfig(t, dir, &fakeClock{}, false))
	if !errors.Is(err, voterstore.ErrNoStore) {
		t.Fatalf("Open without a store or Init: %v, want an error wrapping voterstore.ErrNoStore", err)
	}
	t.Logf("Open: %v", err)
	for _, s := range []string{dir, "Config.Dir", "Config.Init", "majority of the other voters", "whole cluster"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}

	h := serve(t, testConfig(t, dir, &fakeClock{}, true))
	h.stop(t)
	if _, err := voter.Open(testConfig(t, dir, &fakeClock{}, true)); !errors.Is(err, voterstore.ErrExists) {
		t.Errorf("Open with Init over an existing store: %v, want an error wrapping voterstore.ErrExists", err)
	}
	other := testConfig(t, dir, &fakeClock{}, false)
	other.ID = "v0" // a voter of the same set, pointed at v1's directory
	if _, err := voter.Open(other); !errors.Is(err, voterstore.ErrWrongVoter) {
		t.Errorf("Open of another voter's store: %v, want an error wrapping voterstore.ErrWrongVoter", err)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := voter.Config{ID: voterID, Cluster: cluster, Dir: "/nonexistent", LeaseDuration: ld}
	for _, tt := range []struct {
		name      string
		give      func(*voter.Config)
		wantField string
	}{
		{name: "no ID", give: func(c *voter.Config) { c.ID = "" }, wantField: "Config.ID"},
		{name: "oversized ID", give: func(c *voter.Config) { c.ID = strings.Repeat("v", voterv1.MaxStringLen+1) }, wantField: "Config.ID"},
		{name: "no cluster", give: func(c *voter.Config) { c.Cluster = "" }, wantField: "Config.Cluster"},
		{name: "voters without this voter", give: func(c *voter.Config) { c.Voters = []string{"v0", "v9"} }, wantField: "Config.Voters"},
		{name: "no dir", give: func(c *voter.Config) { c.Dir = "" }, wantField: "Config.Dir"},
		{name: "no lease duration", give: func(c *voter.Config) { c.LeaseDuration = 0 }, wantField: "Config.LeaseDuration"},
		{name: "negative lease duration", give: func(c *voter.Config) { c.LeaseDuration = -time.Second }, wantField: "Config.LeaseDuration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.give(&cfg)
			for _, err := range []error{cfg.Validate(), func() error { _, err := voter.Open(cfg); return err }()} {
				if !errors.Is(err, voter.ErrConfig) || !strings.Contains(fmt.Sprint(err), tt.wantField) {
					t.Errorf("got %v, want an error wrapping ErrConfig naming %s", err, tt.wantField)
				}
			}
		})
	}
	if err := valid.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", valid, err)
	}
}

// Concurrent calls reach the disk in the order the voter handled them: after
// a burst of grants from many nodes on a few shards, the records a restarted
// voter loads are the ones it held in memory, never an older record written
// over a newer one.
//
// The clock moves a lease duration on every reading, so every session has
// expired by the next request and a grant is accepted iff its epoch is above
// the record's. Concurrent grants of one shard then succeed without waiting
// for each other's replies, which is when the order of their saves matters.
func TestConcurrentCallsPersistInVoterOrder(t *testing.T) {
	const (
		nodes  = 50
		rounds = 10
		shards = 4
	)
	clock := &fakeClock{step: ld}
	dir := t.TempDir()
	h := serve(t, testConfig(t, dir, clock, true))

	var (
		epochs [shards]atomic.Uint64
		mu     sync.Mutex
		top    [shards]uint64 // highest epoch accepted, as the nodes saw it
		wg     sync.WaitGroup
	)
	for i := range nodes {
		wg.Go(func() {
			from := fmt.Sprintf("n%d", i)
			for r := range rounds {
				if r%4 == 3 {
					// A keep-alive changes no record but must still wait for
					// the saves of the records its reply lists as held.
					if _, err := h.send(cluster, request(from)); err != nil {
						t.Errorf("keep-alive from %s: %v", from, err)
						return
					}
					continue
				}
				shard := uint32((i + r) % shards)
				e := epochs[shard].Add(1)
				rep, err := h.send(cluster, request(from, grant(shard, e)))
				if err != nil {
					t.Errorf("grant of shard %d epoch %d to %s: %v", shard, e, from, err)
					return
				}
				if res := rep.Results[0]; res.OK() {
					mu.Lock()
					top[shard] = max(top[shard], e)
					mu.Unlock()
				} else if res.Refusal != lease.RefusedEpoch || res.Record.Epoch < e {
					t.Errorf("grant of shard %d epoch %d to %s: %+v, want acceptance or a higher epoch", shard, e, from, res)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	var inMemory [shards]lease.Record
	for s := range uint32(shards) {
		inMemory[s] = h.srv.Record(s)
		if inMemory[s].Epoch != top[s] {
			t.Errorf("Record(%d).Epoch = %d, want %d, the highest epoch a node was granted", s, inMemory[s].Epoch, top[s])
		}
	}
	t.Logf("records before restart: %+v", inMemory)
	h.stop(t)

	h = serve(t, testConfig(t, dir, clock, false))
	for s := range uint32(shards) {
		if got := h.srv.Record(s); got != inMemory[s] {
			t.Errorf("Record(%d) after restart = %+v, want %+v as held before", s, got, inMemory[s])
		}
	}
}

// A rejection that reveals a record waits, like the grant that wrote it,
// until the record is durable: otherwise a rival could learn of a grant
// that a crash then erases.
func TestRejectionWaitsForEarlierSaves(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	entered, release := voter.HoldBarriers(h.srv)
	defer release()

	waitEntered := func(who string, done <-chan outcome) {
		t.Helper()
		select {
		case <-entered:
		case o := <-done:
			t.Fatalf("%s replied without waiting for the store: %+v, %v", who, o.rep, o.err)
		case <-time.After(callTimeout):
			t.Fatalf("%s never reached the store", who)
		}
	}

	granted := h.sendAsync(request("n1", grant(1, 1)))
	waitEntered("the grant", granted)
	refused := h.sendAsync(request("n2", grant(1, 1)))
	waitEntered("the rejection revealing the grant", refused)
	release()

	g, r := <-granted, <-refused
	if g.err != nil || r.err != nil {
		t.Fatalf("grant: %v; rejection: %v", g.err, r.err)
	}
	held := lease.Record{Epoch: 1, Holder: "n1", HolderGen: g.rep.Gen}
	wantResult(t, "grant", g.rep.Results[0], lease.Accepted, held)
	wantResult(t, "rival's grant", r.rep.Results[0], lease.RefusedEpoch, held)
}

// After a store failure the voter's memory is ahead of its disk: it answers
// nothing more, even though the store would take further saves.
func TestStoreFailureStopsVoter(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	h.call(t, request("n1", grant(1, 1)))

	voter.FailNextBarrier(h.srv, errors.New("fsync: input/output error"))
	for _, req := range []lease.Request{
		request("n1", grant(1, 2)),
		request("n1"), // a keep-alive that changes no record
		request("n2", grant(2, 1)),
	} {
		_, err := h.send(cluster, req)
		if got := status.Code(err); got != codes.Unavailable {
			t.Fatalf("call %+v after the failure: code %v (%v), want Unavailable", req, got, err)
		}
		t.Logf("call %+v: %v", req, err)
	}
	if got := h.srv.Record(2); got != (lease.Record{}) {
		t.Errorf("Record(2) = %+v, want none: a stopped voter handles nothing", got)
	}
}

// Calls racing with Close either succeed, with their records durable, or
// fail with Unavailable.
func TestCloseDuringCalls(t *testing.T) {
	const nodes = 8
	clock := &fakeClock{}
	dir := t.TempDir()
	h := serveNew(t, dir, clock)

	var (
		wg       sync.WaitGroup
		calls    atomic.Int64
		busy     = make(chan struct{})
		busyOnce sync.Once
		last     [nodes]uint64 // highest epoch granted to each node's shard
	)
	for i := range nodes {
		wg.Go(func() {
			for e := uint64(1); ; e++ {
				rep, err := h.send(cluster, request(fmt.Sprintf("n%d", i), grant(uint32(i), e)))
				if err != nil {
					if got := status.Code(err); got != codes.Unavailable {
						t.Errorf("node %d: code %v (%v), want Unavailable", i, got, err)
					}
					return
				}
				if !rep.Results[0].OK() {
					t.Errorf("node %d: grant of epoch %d refused: %+v", i, e, rep.Results[0])
					return
				}
				last[i] = e
				if calls.Add(1) == 4*nodes {
					busyOnce.Do(func() { close(busy) })
				}
			}
		})
	}
	select {
	case <-busy:
	case <-time.After(callTimeout):
		t.Fatal("calls did not get going")
	}
	if err := h.srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	wg.Wait()
	if err := h.srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	h.stop(t)

	h = serve(t, testConfig(t, dir, clock, false))
	for i := range uint32(nodes) {
		// A call whose reply was lost may have been applied: the record
		// may be ahead of the last reply, never behind it.
		if got := h.srv.Record(i); got.Epoch < last[i] {
			t.Errorf("Record(%d).Epoch after restart = %d, but epoch %d was granted", i, got.Epoch, last[i])
		}
	}
}

// A request from a node configured with the voter's own set, in any order,
// is served like one that names no set (an older node); only another set
// is refused (TestCallRefusesBadRequests).
func TestCallAcceptsSameVoterSet(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	for i, set := range []uint64{lease.VoterSetID([]string{"v9", "v0", voterID}), 0} {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		pb := voterv1.RequestToPB(cluster, request("n1", grant(uint32(i), 1)))
		pb.VoterSet = set
		m, err := h.client.Call(ctx, pb)
		cancel()
		if err != nil {
			t.Fatalf("voter set %016x: %v", set, err)
		}
		_, rep, err := voterv1.ReplyFromPB(m)
		if err != nil {
			t.Fatal(err)
		}
		wantResult(t, fmt.Sprintf("grant with voter set %016x", set), rep.Results[0], lease.Accepted, lease.Record{Epoch: 1, Holder: "n1", HolderGen: rep.Results[0].Record.HolderGen})
	}
}

// A voter restarted with another voter list refuses to open its store.
func TestOpenRefusesAnotherVoterSet(t *testing.T) {
	dir := t.TempDir()
	clock := &fakeClock{}
	srv, err := voter.Open(testConfig(t, dir, clock, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, dir, clock, false)
	cfg.Voters = []string{voterID, "v7", "v8"}
	if srv, err := voter.Open(cfg); !errors.Is(err, voterstore.ErrWrongVoterSet) {
		if srv != nil {
			srv.Close()
		}
		t.Fatalf("Open with another voter set: %v, want an error wrapping voterstore.ErrWrongVoterSet", err)
	}
}

// A node configured with the voter's own lease duration is served like one
// that names none (an older node).
func TestCallAcceptsSameLeaseDuration(t *testing.T) {
	h := serveNew(t, t.TempDir(), &fakeClock{})
	for i, d := range []time.Duration{ld, 0} {
		req := request("n1", grant(uint32(i), 1))
		req.LeaseDuration = d
		rep := h.call(t, req)
		wantResult(t, fmt.Sprintf("grant with lease duration %v", d), rep.Results[0], lease.Accepted,
			lease.Record{Epoch: 1, Holder: "n1", HolderGen: rep.Gen})
	}
}

// A node with another lease duration is refused on every keep-alive, but
// the voter warns about it once, not four times a second: once per sender
// and lease duration.
func TestLeaseDurationMismatchWarnsOncePerSender(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig(t, t.TempDir(), &fakeClock{}, true)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h := serve(t, cfg)
	for _, tt := range []struct {
		from string
		ld   time.Duration
	}{
		{"n1", 2 * ld}, {"n1", 2 * ld}, {"n2", ld / 2}, {"n1", 2 * ld}, {"n2", ld / 2}, {"n1", 3 * ld},
	} {
		req := request(tt.from)
		req.LeaseDuration = tt.ld
		if _, err := h.send(cluster, req); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("%s with lease duration %v: %v, want FailedPrecondition", tt.from, tt.ld, err)
		}
	}
	var warnings []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "another lease duration") {
			warnings = append(warnings, line)
		}
	}
	t.Logf("warnings:\n%s", strings.Join(warnings, "\n"))
	want := []string{"node=n1 node_lease_duration=20s", "node=n2 node_lease_duration=5s", "node=n1 node_lease_duration=30s"}
	if len(warnings) != len(want) {
		t.Fatalf("%d warnings, want %d: one per sender and lease duration", len(warnings), len(want))
	}
	for i, w := range want {
		if !strings.Contains(warnings[i], w) || !strings.Contains(warnings[i], "level=WARN") {
			t.Errorf("warning %d %q lacks %q", i, warnings[i], w)
		}
	}
}
