//go:build e2edocker

package dockere2e

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tenurehq/tenure/e2e/docker/check"
)

// member is one node service of compose.yaml.
type member struct {
	id   string
	host int // last octet of its address
}

// The cluster of compose.yaml: n1, n2 and n3 are the voters.
var members = []member{{"n1", 11}, {"n2", 12}, {"n3", 13}, {"n4", 14}, {"n5", 15}}

const (
	storeHost = 20
	shards    = 64 // TENURE_SHARDS in compose.yaml
	// leaseDuration is TENURE_LEASE_DURATION in compose.yaml.
	leaseDuration = time.Second
	// keepAliveInterval is how often a node renews its sessions (LD/4).
	keepAliveInterval = leaseDuration / 4
)

// failoverBound is the longest a shard may go without a leader, as the
// checker sees it, while a voter majority and an eligible node are
// connected:
//
//	LD            a leader that vanishes at t (crash, pause, cut-off) holds
//	              its lease until at most t + LD by its own clock, and the
//	              voters expire its session at most LD after its last
//	              keep-alive reached them;
//	+ LD/4        they report the expiry to the desired owner in the reply
//	              to its next keep-alive (one every LD/4), and it asks for
//	              the shard: one voter round, fsynced, a few milliseconds;
//	+ LD/4        a lost race (two nodes that disagree for a moment about
//	              the owner, as after a heal) costs a randomised back-off
//	              of at most LD/4 before the next attempt;
//	+ 250 ms      the checker's resolution: a vanished leader's claims end
//	              at its last answer to a poll (one every 250 ms);
//	+ LD          scheduling: five nodes, the ledger store (some 600
//	              writes a second), the checker and Docker share 2 cores
//	              with whatever else runs there; requests to a voter that
//	              was cut off wait out their timeout (LD/2).
//
// That is 2.75 s at LD = 1 s; the suite measures 0.9–1.8 s. After a heal
// the bound runs from the heal, when the voter majority is back.
const failoverBound = 2*leaseDuration + keepAliveInterval + leaseDuration/4 + check.DefaultPollInterval

// clusterOptions vary the cluster a test starts.
type clusterOptions struct {
	// store starts the ledger store service too.
	store bool
	// override is a compose file merged over compose.yaml (planted bugs).
	override string
}

// cluster is one compose project of compose.yaml, followed by a Checker.
type cluster struct {
	t       *testing.T
	project string
	net     string // the first three octets of its /24
	files   []string
	ids     map[string]string // service → container ID
	network string            // the Docker network's name
	ck      *check.Checker

	mu      sync.Mutex
	state   map[string]string    // member → "killed", "stopped", "paused", "cut"; absent: up
	changed map[string]time.Time // member → when its state last changed
}

// newCluster starts a cluster, waits until it is steady and starts the
// availability checks. Everything it creates is removed when the test
// ends, whatever the outcome.
func newCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	cl := &cluster{
		t:       t,
		project: projectName(t.Name()),
		files:   []string{"compose.yaml"},
		ids:     map[string]string{},
		state:   map[string]string{},
		changed: map[string]time.Time{},
	}
	if opts.override != "" {
		path := filepath.Join(t.TempDir(), "override.yaml")
		if err := os.WriteFile(path, []byte(opts.override), 0o644); err != nil {
			t.Fatal(err)
		}
		cl.files = append(cl.files, path)
	}
	t.Cleanup(cl.cleanup)
	live.add(cl)

	var services []string
	began := time.Now()
	if opts.store {
		// The store first: it referees the whole run.
		cl.up([]string{"store"})
		cl.waitFor("the ledger store to answer", 30*time.Second, func() (bool, string) {
			err := getJSON("http://"+cl.addr("store", 8090)+"/audit", &audit{})
			return err == nil, fmt.Sprint(err)
		})
		services = append(services, "store")
	}
	var nodeServices []string
	for _, m := range members {
		nodeServices = append(nodeServices, m.id)
	}
	cl.up(nodeServices)
	services = append(services, nodeServices...)
	for _, s := range services {
		out, err := cl.compose("ps", "-q", s)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("container of service %s: %v %s", s, err, out)
		}
		cl.ids[s] = strings.TrimSpace(out)
	}
	out, err := docker("inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}", cl.ids["n1"])
	if err != nil {
		t.Fatal(err)
	}
	cl.network = strings.TrimSpace(out)
	t.Logf("cluster %s up on %s.0/24 (network %s) in %v", cl.project, cl.net, cl.network, time.Since(began).Round(100*time.Millisecond))

	var nodes []check.Node
	for _, m := range members {
		nodes = append(nodes, check.Node{ID: m.id, GRPCAddr: cl.addr(m.id, 7000), HTTPAddr: cl.addr(m.id, 7080)})
	}
	cl.ck, err = check.New(check.Config{Nodes: nodes, Shards: shards, Bound: failoverBound,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	cl.ck.Start()
	took := cl.waitSteady("the cluster to start", 60*time.Second)
	t.Logf("cluster steady %v after the containers started", took.Round(100*time.Millisecond))
	cl.ck.Expect(true, "steady")
	return cl
}

// projectName returns a compose project name for test: the run's ID and
// the test's name, in the characters every compose version accepts.
func projectName(test string) string {
	name := "tenuree2e" + suite.run + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r - 'A' + 'a'
		}
		return -1
	}, test)
	return name[:min(len(name), 60)]
}

// up runs compose up. The first call picks the project's /24: it tries
// other networks while Docker reports an overlap with an existing one.
func (cl *cluster) up(services []string) {
	cl.t.Helper()
	args := append([]string{"up", "-d", "--no-build"}, services...)
	if cl.net != "" {
		if out, err := cl.compose(args...); err != nil {
			cl.t.Fatalf("compose up: %v\n%s", err, out)
		}
		return
	}
	var last string
	for range 8 {
		cl.net = fmt.Sprintf("10.147.%d", 30+rand.IntN(220))
		out, err := cl.compose(args...)
		if err == nil {
			return
		}
		last = fmt.Sprintf("%v\n%s", err, out)
		if !strings.Contains(strings.ToLower(out), "overlap") {
			break
		}
		cl.compose("down", "-v", "--remove-orphans", "-t", "1")
	}
	cl.t.Fatalf("compose up: %s", last)
}

// compose runs the compose command on the project.
func (cl *cluster) compose(args ...string) (string, error) {
	argv := append([]string(nil), suite.compose[1:]...)
	argv = append(argv, "-p", cl.project)
	for _, f := range cl.files {
		argv = append(argv, "-f", f)
	}
	argv = append(argv, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.compose[0], argv...)
	cmd.Env = append(os.Environ(),
		"TENURE_NET="+cl.net,
		"TENURE_NODE_IMAGE="+suite.nodeImage,
		"TENURE_STORE_IMAGE="+suite.storeImage,
		"TENURE_GOSSIP_KEY="+gossipKey,
		"TENURE_NODE_LOG=info",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", suite.compose[0], strings.Join(argv, " "), err)
	}
	return string(out), nil
}

// gossipKey encrypts the suite's gossip: a fresh key per run.
var gossipKey = func() string {
	b := make([]byte, 32)
	cryptorand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}()

// docker runs the docker CLI.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cleanup stops the checker and removes the project's containers,
// network and volumes; on failure it logs the end of every container's
// log first.
func (cl *cluster) cleanup() {
	if cl.ck != nil {
		cl.ck.Stop()
	}
	if cl.t.Failed() {
		for _, s := range slices.Sorted(maps.Keys(cl.ids)) {
			out, _ := exec.Command("docker", "logs", "--tail", "60", cl.ids[s]).CombinedOutput()
			cl.t.Logf("--- last lines of %s's log ---\n%s", s, out)
		}
	}
	if err := cl.teardown(); err != nil {
		cl.t.Error(err)
	}
	live.remove(cl)
}

// logWindow logs what every member's log says went wrong between since
// and until: its warnings, errors and lease ends, at most logWindowLines
// of them (the first and the last half).
func (cl *cluster) logWindow(since, until time.Time) {
	for _, m := range members {
		out, err := docker("logs", "--since", unixArg(since), "--until", unixArg(until), cl.ids[m.id])
		if err != nil {
			cl.t.Logf("%s's log: %v", m.id, err)
			continue
		}
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "msg=transition event=released") {
				lines = append(lines, l)
			}
		}
		if n := len(lines); n > logWindowLines {
			lines = slices.Concat(lines[:logWindowLines/2], []string{fmt.Sprintf("... %d lines ...", n-logWindowLines)}, lines[n-logWindowLines/2:])
		}
		cl.t.Logf("--- %s's warnings, errors and lease ends %s – %s ---\n%s", m.id,
			since.Format("15:04:05.000"), until.Format("15:04:05.000"), strings.Join(lines, "\n"))
	}
}

const logWindowLines = 60

// unixArg formats t for docker logs --since and --until: seconds since
// the epoch, with nanoseconds.
func unixArg(t time.Time) string { return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()) }

// teardown removes the project's containers, network and volumes, and
// a burner an overload left behind.
func (cl *cluster) teardown() error {
	docker("rm", "-f", cl.burnerName()) // none, unless a run was cut short
	for _, id := range cl.ids {
		docker("unpause", id) // a paused container can be neither killed nor removed
	}
	cl.compose("kill")
	if out, err := cl.compose("down", "-v", "--remove-orphans", "-t", "1"); err != nil {
		return fmt.Errorf("compose down: %v\n%s", err, out)
	}
	return nil
}

func (cl *cluster) addr(id string, port int) string {
	return fmt.Sprintf("%s:%d", cl.ip(id), port)
}

func (cl *cluster) ip(id string) string {
	if id == "store" {
		return fmt.Sprintf("%s.%d", cl.net, storeHost)
	}
	for _, m := range members {
		if m.id == id {
			return fmt.Sprintf("%s.%d", cl.net, m.host)
		}
	}
	panic("unknown member " + id)
}

// The faults. Each records the member's state, which tells waitSteady
// which members must take part.

func (cl *cluster) set(id, state string) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if state == "" {
		delete(cl.state, id)
	} else {
		cl.state[id] = state
	}
	cl.changed[id] = time.Now()
}

func (cl *cluster) do(id, state string, args ...string) {
	cl.t.Helper()
	if _, err := docker(args...); err != nil {
		cl.t.Fatal(err)
	}
	cl.set(id, state)
	cl.t.Logf("%s docker %s %s", time.Now().Format("15:04:05.000"), strings.Join(args[:len(args)-1], " "), id)
}

func (cl *cluster) kill(id string) { cl.do(id, "killed", "kill", "-s", "KILL", cl.ids[id]) }

// start starts a stopped or killed container, once it has exited.
func (cl *cluster) start(id string) {
	cl.t.Helper()
	cl.waitFor(id+"'s container to exit", 30*time.Second, func() (bool, string) {
		out, err := docker("inspect", "-f", "{{.State.Running}}", cl.ids[id])
		return err == nil && strings.TrimSpace(out) == "false", fmt.Sprintf("running: %s %v", strings.TrimSpace(out), err)
	})
	cl.do(id, "", "start", cl.ids[id])
}

func (cl *cluster) pause(id string)   { cl.do(id, "paused", "pause", cl.ids[id]) }
func (cl *cluster) unpause(id string) { cl.do(id, "", "unpause", cl.ids[id]) }

// stop sends SIGTERM (the node drains) and waits for the exit.
func (cl *cluster) stop(id string) { cl.do(id, "stopped", "stop", "-t", "40", cl.ids[id]) }

func (cl *cluster) disconnect(id string) {
	cl.do(id, "cut", "network", "disconnect", cl.network, cl.ids[id])
}

// connect puts id back on the network at its own address.
func (cl *cluster) connect(id string) {
	cl.do(id, "", "network", "connect", "--ip", cl.ip(id), cl.network, cl.ids[id])
}

// exitCode returns the exit code of a stopped container.
func (cl *cluster) exitCode(id string) int {
	cl.t.Helper()
	out, err := docker("inspect", "-f", "{{.State.ExitCode}}", cl.ids[id])
	if err != nil {
		cl.t.Fatal(err)
	}
	var code int
	fmt.Sscan(strings.TrimSpace(out), &code)
	return code
}

// running returns the members that no fault holds, each with when its
// state last changed: views polled before then are out of date.
func (cl *cluster) running() map[string]time.Time {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := map[string]time.Time{}
	for _, m := range members {
		if cl.state[m.id] == "" {
			out[m.id] = cl.changed[m.id]
		}
	}
	return out
}

// steady reports whether every running member answers, is ready, leads
// shards and sees every other running member, nobody plans a move, and
// every shard is led; if not, it says what is missing.
func (cl *cluster) steady() (bool, string) {
	v := cl.ck.View()
	running := cl.running()
	var missing []string
	for _, id := range slices.Sorted(maps.Keys(running)) {
		nv := v.Nodes[id]
		switch {
		case !nv.Polled.After(running[id]):
			missing = append(missing, id+" not polled since it changed")
		case !nv.Reachable:
			missing = append(missing, id+" does not answer")
		case !nv.Ready || nv.Draining:
			missing = append(missing, id+" is not ready")
		case nv.Members != len(running):
			missing = append(missing, fmt.Sprintf("%s sees %d members", id, nv.Members))
		case nv.Leads == 0:
			missing = append(missing, id+" leads nothing")
		case nv.Pending > 0:
			missing = append(missing, fmt.Sprintf("%s plans %d moves", id, nv.Pending))
		}
	}
	if led := ledBy(v, running); led < shards {
		missing = append(missing, fmt.Sprintf("%d shards led", led))
	}
	return len(missing) == 0, strings.Join(missing, "; ")
}

// ledBy returns the number of shards led by the running members, counting
// only views polled since each member's last change.
func ledBy(v check.View, running map[string]time.Time) int {
	led := map[uint32]bool{}
	for id, since := range running {
		nv := v.Nodes[id]
		if !nv.Reachable || !nv.Polled.After(since) {
			continue
		}
		for s := range nv.Claims {
			led[s] = true
		}
	}
	return len(led)
}

// waitPolled waits until every running member has answered a poll sent
// after t.
func (cl *cluster) waitPolled(t time.Time) {
	cl.t.Helper()
	cl.waitFor("a poll of every running member", 30*time.Second, func() (bool, string) {
		v := cl.ck.View()
		var behind []string
		for _, id := range slices.Sorted(maps.Keys(cl.running())) {
			if nv := v.Nodes[id]; !nv.Reachable || !nv.Polled.After(t) {
				behind = append(behind, id)
			}
		}
		return len(behind) == 0, "not yet polled: " + strings.Join(behind, ", ")
	})
}

// waitSteady waits for steady and returns how long it took.
func (cl *cluster) waitSteady(what string, timeout time.Duration) time.Duration {
	cl.t.Helper()
	return cl.waitFor(what, timeout, cl.steady)
}

// allLed reports whether the running members lead every shard.
func (cl *cluster) allLed() (bool, string) {
	led := ledBy(cl.ck.View(), cl.running())
	return led == shards, fmt.Sprintf("%d of %d shards led by running members", led, shards)
}

// leads returns the number of shards id leads, as the checker sees it.
func (cl *cluster) leads(id string) int { return cl.ck.View().Nodes[id].Leads }

// waitFor polls cond every 50 ms until it holds, and fails the test with
// cond's last explanation after timeout.
func (cl *cluster) waitFor(what string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	cl.t.Helper()
	began := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return time.Since(began)
		}
		if time.Since(began) > timeout {
			cl.t.Fatalf("timed out after %v waiting for %s: %s", timeout, what, why)
		}
		<-tick.C
	}
}

// testWriter sends a logger's lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// isolation is what the driver knows of members cut off from the voter
// majority: when each lost it, and the shards it led then.
type isolation struct {
	at  map[string]time.Time
	led map[string]map[uint32]uint64
}

// isolate disconnects ids, in order, and returns the isolation of those
// that lose the voter majority: each of ids when its own disconnect
// returned, and the rest of the cluster when the second voter's did.
func (cl *cluster) isolate(ids ...string) isolation {
	cl.t.Helper()
	view := cl.ck.View()
	iso := isolation{at: map[string]time.Time{}, led: map[string]map[uint32]uint64{}}
	voters := 0
	for _, id := range ids {
		cl.disconnect(id)
		iso.at[id], iso.led[id] = time.Now(), view.Nodes[id].Claims
		if id == "n1" || id == "n2" || id == "n3" {
			if voters++; voters == 2 {
				for _, m := range members {
					if !slices.Contains(ids, m.id) {
						iso.at[m.id], iso.led[m.id] = time.Now(), view.Nodes[m.id].Claims
					}
				}
			}
		}
	}
	return iso
}

// historyEntry is one transition of a node's /status history.
type historyEntry struct {
	Time   time.Time `json:"time"`
	Shard  uint32    `json:"shard"`
	Epoch  uint64    `json:"epoch"`
	Event  string    `json:"event"`
	Reason string    `json:"reason"`
}

// stoppedOnTheirOwn checks, from their own histories, that the members of
// iso stopped leading every shard they led within a lease of losing the
// voter majority (docs/design.md §2.6: a node cut off stops leading on its
// own), and acquired nothing before healed, when the heal began. Call it
// once they answer again. It returns the longest time from the cut to a
// release.
func (cl *cluster) stoppedOnTheirOwn(iso isolation, healed time.Time) time.Duration {
	cl.t.Helper()
	// The lease ends at most LD after the last keep-alive that reached a
	// voter, sent before the cut; the node notices on its next tick.
	const slack = 500 * time.Millisecond
	var longest time.Duration
	for _, id := range slices.Sorted(maps.Keys(iso.led)) {
		var st struct {
			Transitions []historyEntry `json:"transitions"`
		}
		if err := getJSON("http://"+cl.addr(id, 7080)+"/status?format=json", &st); err != nil {
			cl.t.Fatalf("%s's history: %v", id, err)
		}
		for s, e := range iso.led[id] {
			// The newest release before the heal (the history is newest
			// first), at the epoch held at the cut or a re-grant's above.
			i := slices.IndexFunc(st.Transitions, func(h historyEntry) bool {
				return h.Event == "released" && h.Shard == s && h.Epoch >= e && h.Time.Before(healed)
			})
			if i < 0 {
				cl.t.Errorf("%s never released shard %d (epoch %d), which it led when it lost the voter majority", id, s, e)
				continue
			}
			d := st.Transitions[i].Time.Sub(iso.at[id])
			longest = max(longest, d)
			if d > leaseDuration+slack {
				cl.t.Errorf("%s stopped leading shard %d (epoch %d, %s) %v after losing the voter majority; want within %v",
					id, s, e, st.Transitions[i].Reason, d.Round(time.Millisecond), leaseDuration+slack)
			}
		}
		for _, h := range st.Transitions {
			if h.Event != "released" && h.Time.After(iso.at[id]) && h.Time.Before(healed) {
				cl.t.Errorf("%s %s shard %d at epoch %d at %s, without a voter majority", id, h.Event, h.Shard, h.Epoch, h.Time.Format("15:04:05.000"))
			}
		}
	}
	cl.t.Logf("every node without the voter majority (%s) stopped leading on its own, at most %v after losing it",
		strings.Join(slices.Sorted(maps.Keys(iso.led)), ", "), longest.Round(time.Millisecond))
	return longest
}
