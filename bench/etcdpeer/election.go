package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// root is the key prefix of every election; election k campaigns under
// prefix(k).
const root = "/tenure-bench/election/"

func prefix(k int) string { return fmt.Sprintf("%s%d/", root, k) }

// harness is one embedded member and the candidates campaigning on it. Its
// methods are called from one goroutine (the driver); the campaign
// goroutines talk to it only through elected and failed.
type harness struct {
	o          options
	member     *embed.Etcd
	endpoint   string
	dataDir    string
	grantedTTL int64
	admin      *clientv3.Client // counts the campaigners' keys
	rng        *rand.Rand
	logLevel   zap.AtomicLevel
	settled    int // times settle waited

	cands   []*candidate
	elected chan *win
	leaders []*win // per election, the last win seen; nil while unled

	failOnce sync.Once
	failed   chan struct{} // closed on a campaign's unexpected error
	failErr  error
}

// candidate is one campaigner: a client of its own and one session lease
// for all its elections, as a Tenure node has one session with the voters.
type candidate struct {
	name string
	cli  *clientv3.Client
	sess *concurrency.Session
	wg   sync.WaitGroup // its campaign goroutines
	// joined is when the driver last had it join each election's queue.
	joined map[int]time.Time
}

// win is a Campaign that returned: cand leads election from at.
type win struct {
	election int
	cand     *candidate
	at       time.Time
	e        *concurrency.Election
	resume   chan struct{} // closed by the driver after Resign: campaign again
}

// start starts the member and the candidates, and returns once every
// election has a leader and every candidate is queued in every election.
// Candidate k mod N campaigns first in election k, so that leadership is
// spread over the candidates as Tenure spreads shards over nodes.
func start(o options) (_ *harness, err error) {
	h := &harness{o: o, rng: rand.New(rand.NewPCG(o.seed, 1)), failed: make(chan struct{}),
		elected: make(chan *win, 2*o.candidates*o.elections), leaders: make([]*win, o.elections)}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	if h.dataDir, err = os.MkdirTemp("", "etcdpeer-"); err != nil {
		return nil, err
	}
	if err := h.startMember(); err != nil {
		return nil, err
	}
	if h.admin, err = h.newClient(); err != nil {
		return nil, err
	}
	for i := range o.candidates {
		c, err := h.newCandidate(fmt.Sprintf("candidate-%d", i+1))
		if err != nil {
			return nil, err
		}
		h.cands = append(h.cands, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ttl, err := h.admin.TimeToLive(ctx, h.cands[0].sess.Lease())
	if err != nil {
		return nil, fmt.Errorf("session lease: %w", err)
	}
	h.grantedTTL = ttl.GrantedTTL
	for k := range o.elections {
		for j := range o.candidates {
			c := h.cands[(k+j)%o.candidates]
			h.join(c, k)
			if err := h.waitKeys(prefix(k), j+1); err != nil {
				return nil, err
			}
		}
	}
	all := map[int]bool{}
	for k := range o.elections {
		all[k] = true
	}
	if _, err := h.await(all, nil, time.Minute); err != nil {
		return nil, fmt.Errorf("first leaders: %w", err)
	}
	return h, nil
}

func (h *harness) startMember() error {
	cfg := embed.NewConfig()
	cfg.Name = "etcdpeer"
	cfg.Dir = h.dataDir
	cfg.TickMs, cfg.ElectionMs = h.o.heartbeatMS, h.o.electionMS
	// Errors go to stderr while the member serves; its complaints about
	// closed listeners while it shuts down (see close) do not.
	h.logLevel = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	if h.o.verbose {
		h.logLevel.SetLevel(zapcore.WarnLevel)
	}
	lcfg := zap.NewProductionConfig()
	lcfg.Level = h.logLevel
	lcfg.Sampling = nil
	lg, err := lcfg.Build()
	if err != nil {
		return err
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	client, err := loopbackURL()
	if err != nil {
		return err
	}
	peer, err := loopbackURL()
	if err != nil {
		return err
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	m, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start the member: %w", err)
	}
	h.member = m
	select {
	case <-m.Server.ReadyNotify():
	case err := <-m.Err():
		return fmt.Errorf("member: %w", err)
	case <-time.After(time.Minute):
		return errors.New("the member was not ready within a minute")
	}
	h.endpoint = client.Host
	return nil
}

// loopbackURL returns an http URL on a free loopback port.
func loopbackURL() (*url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return nil, err
	}
	return &url.URL{Scheme: "http", Host: addr}, nil
}

func (h *harness) newClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{h.endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
}

func (h *harness) newCandidate(name string) (*candidate, error) {
	cli, err := h.newClient()
	if err != nil {
		return nil, err
	}
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(h.o.ttl))
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("%s: session: %w", name, err)
	}
	return &candidate{name: name, cli: cli, sess: sess, joined: map[int]time.Time{}}, nil
}

// join starts c's campaign in election k.
func (h *harness) join(c *candidate, k int) {
	c.joined[k] = time.Now()
	c.wg.Add(1)
	go h.campaign(c, k)
}

// campaign runs c in election k until c's client closes: it campaigns,
// reports the win, waits for the driver to have it resign, and campaigns
// again (at the end of the queue).
func (h *harness) campaign(c *candidate, k int) {
	defer c.wg.Done()
	ctx := c.cli.Ctx() // cancelled by Close: a crash leaves the key to the lease
	for {
		e := concurrency.NewElection(c.sess, prefix(k))
		if err := e.Campaign(ctx, c.name); err != nil {
			if ctx.Err() == nil {
				h.fail(fmt.Errorf("%s in election %d: %w", c.name, k, err))
			}
			return
		}
		w := &win{election: k, cand: c, at: time.Now(), e: e, resume: make(chan struct{})}
		select {
		case h.elected <- w:
		case <-ctx.Done():
			return
		}
		select {
		case <-w.resume:
		case <-ctx.Done():
			return
		}
	}
}

func (h *harness) fail(err error) {
	h.failOnce.Do(func() { h.failErr = err; close(h.failed) })
}

// crash closes c's client without revoking its session: its keep-alives
// stop, its keys stay until the member expires the lease, and its campaigns
// end without resigning.
func (c *candidate) crash() {
	c.cli.Close()
	c.wg.Wait()
}

// await reads wins until every election in want has been won by a
// candidate other than not, and returns the last of those wins' times.
func (h *harness) await(want map[int]bool, not *candidate, limit time.Duration) (time.Time, error) {
	var last time.Time
	timeout := time.After(limit)
	for len(want) > 0 {
		select {
		case w := <-h.elected:
			h.leaders[w.election] = w
			if want[w.election] && w.cand != not {
				delete(want, w.election)
				if w.at.After(last) {
					last = w.at
				}
			}
		case <-h.failed:
			return last, h.failErr
		case <-timeout:
			return last, fmt.Errorf("%d election(s) without a new leader after %v", len(want), limit)
		}
	}
	return last, nil
}

// waitKeys polls until pfx holds n keys: n campaigners are queued.
func (h *harness) waitKeys(pfx string, n int) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := h.admin.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return err
		}
		if resp.Count == int64(n) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s holds %d keys, want %d, after a minute", pfx, resp.Count, n)
		}
		select {
		case <-h.failed:
			return h.failErr
		case <-time.After(time.Millisecond):
		}
	}
}

// settle waits, if need be, until the candidate next in line in election
// k joined the queue (or last saw its predecessor change) at least -settle
// ago. Campaign watches for its predecessor's delete from the revision it
// read, so etcd places the watch among its unsynced watchers, which it
// catches up every 100 ms, at most 512 at a time; a delete before that is
// delivered at the next catch-up. Moves in quick succession on one
// election would measure that period rather than the handoff. With many
// elections, a crash re-creates more than 512 watchers: raise -settle.
func (h *harness) settle(k int) error {
	if h.o.settle <= 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := h.admin.Get(ctx, prefix(k), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend), clientv3.WithLimit(2))
	if err != nil {
		return err
	}
	if len(resp.Kvs) < 2 {
		return nil
	}
	name := string(resp.Kvs[1].Value)
	i := slices.IndexFunc(h.cands, func(c *candidate) bool { return c.name == name })
	if i < 0 {
		return fmt.Errorf("election %d: unknown candidate %q next in line", k, name)
	}
	if wait := h.o.settle - time.Since(h.cands[i].joined[k]); wait > 0 {
		h.settled++
		time.Sleep(wait)
	}
	return nil
}

// led returns the elections c leads now.
func (h *harness) led(c *candidate) map[int]bool {
	out := map[int]bool{}
	for k, w := range h.leaders {
		if w != nil && w.cand == c {
			out[k] = true
		}
	}
	return out
}

// failover crashes leaders one after another. Victims rotate over the
// candidates, skipping those that lead nothing; a crashed candidate is
// replaced by a new one (a new client and session) that joins the end of
// every queue before the next crash, as a crashed Tenure node restarts.
func (h *harness) failover(reps int, out io.Writer) (failoverStats, error) {
	fo := failoverStats{Reps: reps}
	var runs []time.Duration
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	defer w.Flush() // the reps so far, if one fails
	fmt.Fprintln(w, "rep\tcrashed\telections\tfailover\t")
	next := 0
	for rep := range reps {
		var slot int
		var led map[int]bool
		for range h.cands {
			slot, next = next, (next+1)%len(h.cands)
			if led = h.led(h.cands[slot]); len(led) > 0 {
				break
			}
		}
		if len(led) == 0 {
			return fo, fmt.Errorf("rep %d: no candidate leads anything", rep)
		}
		victim := h.cands[slot]
		for k := range led {
			if err := h.settle(k); err != nil {
				return fo, fmt.Errorf("rep %d: %w", rep, err)
			}
		}
		// Crash at a random phase of the victim's keep-alives (the client
		// sends one every 500 ms at a 1 s TTL): the failover depends on
		// how much of the lease was left.
		time.Sleep(time.Duration(h.rng.Int64N(int64(500 * time.Millisecond))))
		began := time.Now()
		crashed := make(chan struct{})
		go func() { victim.crash(); close(crashed) }()
		last, err := h.await(maps.Clone(led), victim, time.Minute)
		<-crashed
		if err != nil {
			return fo, fmt.Errorf("rep %d: %w", rep, err)
		}
		took := last.Sub(began)
		// The expired lease deleted the victim's keys in every election,
		// and whoever was behind one of them now watches a new
		// predecessor: a new, unsynced watcher (see settle).
		for _, c := range h.cands {
			for k := range h.o.elections {
				if c != victim && c.joined[k].Before(last) {
					c.joined[k] = last
				}
			}
		}
		runs = append(runs, took)
		fo.Led += len(led)
		fmt.Fprintf(w, "%d\t%s\t%d\t%v\t\n", rep+1, victim.name, len(led), took.Round(time.Millisecond))
		c, err := h.newCandidate(victim.name)
		if err != nil {
			return fo, err
		}
		h.cands[slot] = c
		for k := range h.o.elections {
			h.join(c, k)
		}
		if err := h.waitKeys(root, h.o.candidates*h.o.elections); err != nil {
			return fo, fmt.Errorf("rep %d: %w", rep, err)
		}
	}
	w.Flush()
	slices.Sort(runs)
	fo.P50MS, fo.P99MS = msOf(percentile(runs, 50)), msOf(percentile(runs, 99))
	fo.MinMS, fo.MaxMS = msOf(runs[0]), msOf(runs[len(runs)-1])
	for _, r := range runs {
		fo.RunsMS = append(fo.RunsMS, msOf(r))
	}
	fmt.Fprintf(out, "etcd failover p50 %.0f ms, p99 %.0f ms, max %.0f ms over %d crashes (%d elections)\n",
		fo.P50MS, fo.P99MS, fo.MaxMS, len(runs), fo.Led)
	return fo, nil
}

// handoff has the leader of a random election resign, one move after
// another. The gap is from the Resign call to the next campaigner's
// Campaign returning; the resigned candidate campaigns again (at the end of
// the queue) once the next one leads.
func (h *harness) handoff(moves int, out io.Writer) (handoffStats, error) {
	ho := handoffStats{Moves: moves, Seed: h.o.seed, SettleMS: msOf(h.o.settle)}
	settledBefore := h.settled
	var gaps, resigns, notifies []time.Duration
	for m := range moves {
		k := h.rng.IntN(h.o.elections)
		old := h.leaders[k]
		if old == nil {
			return ho, fmt.Errorf("move %d: election %d has no leader", m, k)
		}
		if err := h.settle(k); err != nil {
			return ho, fmt.Errorf("move %d: %w", m, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		began := time.Now()
		err := old.e.Resign(ctx)
		resigned := time.Now()
		cancel()
		if err != nil {
			ho.Failed++
			return ho, fmt.Errorf("move %d: resign: %w", m, err)
		}
		h.leaders[k] = nil
		last, err := h.await(map[int]bool{k: true}, old.cand, 10*time.Second)
		if err != nil {
			return ho, fmt.Errorf("move %d: %w", m, err)
		}
		gaps = append(gaps, last.Sub(began))
		resigns = append(resigns, resigned.Sub(began))
		notifies = append(notifies, last.Sub(resigned))
		old.cand.joined[k] = time.Now()
		close(old.resume)
		if err := h.waitKeys(prefix(k), h.o.candidates); err != nil {
			return ho, fmt.Errorf("move %d: %w", m, err)
		}
	}
	slices.Sort(gaps)
	slices.Sort(resigns)
	slices.Sort(notifies)
	ho.NotifyP50MS, ho.NotifyP99MS, ho.NotifyMaxMS = msOf(percentile(notifies, 50)), msOf(percentile(notifies, 99)), msOf(notifies[len(notifies)-1])
	ho.GapP50MS, ho.GapP99MS, ho.GapMaxMS = msOf(percentile(gaps, 50)), msOf(percentile(gaps, 99)), msOf(gaps[len(gaps)-1])
	ho.ResignP50MS, ho.ResignP99MS = msOf(percentile(resigns, 50)), msOf(percentile(resigns, 99))
	for _, g := range gaps {
		ho.GapsMS = append(ho.GapsMS, msOf(g))
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "measure\tp50\tp99\tmax\t")
	fmt.Fprintf(w, "gap (Resign sent → next Campaign returns)\t%.2f ms\t%.2f ms\t%.2f ms\t\n", ho.GapP50MS, ho.GapP99MS, ho.GapMaxMS)
	fmt.Fprintf(w, "Resign call (one fsynced delete)\t%.2f ms\t%.2f ms\t\t\n", ho.ResignP50MS, ho.ResignP99MS)
	fmt.Fprintf(w, "Resign returned → next Campaign returns\t%.2f ms\t%.2f ms\t%.2f ms\t\n", ho.NotifyP50MS, ho.NotifyP99MS, ho.NotifyMaxMS)
	w.Flush()
	ho.Settled = h.settled - settledBefore
	fmt.Fprintf(out, "%d moves, %d failed; %d waited for the next in line to have been queued %v (-settle)\n",
		moves, ho.Failed, ho.Settled, h.o.settle)
	return ho, nil
}

// close stops the candidates (crash-like: nothing is revoked), the admin
// client and the member, and removes the data directory.
func (h *harness) close() {
	for _, c := range h.cands {
		c.crash()
	}
	if h.admin != nil {
		h.admin.Close()
	}
	if h.member != nil {
		h.logLevel.SetLevel(zapcore.FatalLevel)
		h.member.Close()
	}
	if h.dataDir != "" {
		os.RemoveAll(h.dataDir)
	}
}
