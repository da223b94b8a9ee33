package shard

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the node's Prometheus metrics, registered with
// Config.Registerer (or with nothing, when it is nil).
type metrics struct {
	leases prometheus.Gauge
	unled  prometheus.Gauge
	// notConverging counts shards planned to this node and unled by it at
	// two convergence checks in a row (Node.checkConverging).
	notConverging prometheus.Gauge
	transitions   *prometheus.CounterVec
	voterRTT      *prometheus.HistogramVec
	voterErrors   *prometheus.CounterVec
	// voterCommits: commits of this node's voter store (on a voter only).
	voterCommits prometheus.Histogram
	members      *prometheus.GaugeVec
	// handoffs counts handoffs this node ran as the source, by outcome:
	// done, failed_prepare, failed_slot, failed_quiesce, failed_target,
	// failed_transfer.
	handoffs       *prometheus.CounterVec
	handoffSeconds prometheus.Histogram
	// failoverSeconds: from a shard's leader failing in this node's view
	// to this node leading it.
	failoverSeconds prometheus.Histogram
	// answered says, per configured voter, whether the node's latest
	// request to it was answered. Built once in newMetrics, never resized.
	answered map[string]*atomic.Bool
}

func newMetrics(reg prometheus.Registerer, node string, voters []string) (*metrics, error) {
	labels := prometheus.Labels{"node": node}
	m := &metrics{
		answered: make(map[string]*atomic.Bool, len(voters)),
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tenure", Name: "leases_held", ConstLabels: labels,
			Help: "Shards this node leads now.",
		}),
		unled: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tenure", Name: "shards_unled", ConstLabels: labels,
			Help: "Shards without a known leader in this node's table.",
		}),
		notConverging: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "tenure", Name: "shards_not_converging", ConstLabels: labels,
			Help: "Shards the plan gives this node that it has not led at two checks 10 s apart (0 once it leads them).",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenure", Name: "lease_transitions_total", ConstLabels: labels,
			Help: "Leadership transitions of this node, by event (acquired, renewed, released) and reason.",
		}, []string{"event", "reason"}),
		voterRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "tenure", Name: "voter_request_seconds", ConstLabels: labels,
			Help:    "Round-trip time of answered voter requests (keep-alive plus batched operations), including the voter's fsync.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"voter"}),
		voterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenure", Name: "voter_request_failures_total", ConstLabels: labels,
			Help: "Voter requests that failed or timed out (keep-alives included).",
		}, []string{"voter"}),
		voterCommits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tenure", Name: "voter_commit_seconds", ConstLabels: labels,
			Help:    "Duration of this node's voter store commits (one bbolt transaction with its fsyncs, carrying the records of every request that arrived during the previous commit). Replies wait for it: a slow disk shows here, network and CPU delays only in voter_request_seconds.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "tenure", Name: "members", ConstLabels: labels,
			Help: "Live members in this node's gossip view, by state.",
		}, []string{"state"}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "tenure", Name: "handoffs_total", ConstLabels: labels,
			Help: "Graceful handoffs this node ran as the source, by outcome (done, failed_prepare, failed_slot, failed_quiesce, failed_target, failed_transfer).",
		}, []string{"outcome"}),
		handoffSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tenure", Name: "handoff_seconds", ConstLabels: labels,
			Help:    "Duration of completed handoffs run by this node, from start (prepare) to the target told to lead.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		failoverSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "tenure", Name: "failover_seconds", ConstLabels: labels,
			Help:    "Failovers won by this node: from the moment its view showed the shard's leader failed (gossip, or a majority of voters reporting the leader's session expired) to leading the shard.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
	}
	for _, v := range voters {
		m.answered[v] = new(atomic.Bool)
	}
	if reg == nil {
		return m, nil
	}
	reachable := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "tenure", Name: "voters_reachable", ConstLabels: labels,
		Help: "Voters that answered this node's latest request (keep-alives included); fewer than a majority means no lease can be granted or renewed.",
	}, func() float64 { return float64(m.votersReachable()) })
	configured := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "tenure", Name: "voters", ConstLabels: labels,
		Help: "Voters configured: a lease needs tenure_voters / 2 + 1 of them (integer division) to answer.",
	}, func() float64 { return float64(len(m.answered)) })
	for _, c := range []prometheus.Collector{reachable, configured, m.leases, m.unled, m.notConverging, m.transitions, m.voterRTT, m.voterErrors, m.voterCommits, m.members, m.handoffs, m.handoffSeconds, m.failoverSeconds} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) voterCall(voter string, took time.Duration, err error) {
	if a := m.answered[voter]; a != nil {
		a.Store(err == nil)
	}
	if err != nil {
		m.voterErrors.WithLabelValues(voter).Inc()
		return
	}
	m.voterRTT.WithLabelValues(voter).Observe(took.Seconds())
}

// voterAnswered reports whether the latest request to voter was answered.
func (m *metrics) voterAnswered(voter string) bool {
	a := m.answered[voter]
	return a != nil && a.Load()
}

// votersReachable counts the voters that answered the latest request.
func (m *metrics) votersReachable() int {
	n := 0
	for _, a := range m.answered {
		if a.Load() {
			n++
		}
	}
	return n
}

// voterCommit observes a commit of this node's voter store.
func (m *metrics) voterCommit(_ int, took time.Duration) {
	m.voterCommits.Observe(took.Seconds())
}
