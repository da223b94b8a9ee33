package check

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Gap is a time during which no reachable node said it led Shard.
type Gap struct {
	Shard      uint32
	Start, End time.Time
	// Counted is the longest part of the gap that lies inside one period
	// in which the cluster was expected to be available: what the bound
	// applies to. A gap that began while the voters were cut off counts
	// from the heal.
	Counted time.Duration
	// Last is the claim whose end began the gap: the leader the checker
	// saw last. Zero for a gap from the start of the checks.
	Last Interval
}

// Length is the gap's whole duration.
func (g Gap) Length() time.Duration { return g.End.Sub(g.Start) }

// ScenarioResult sums up one scenario.
type ScenarioResult struct {
	Name       string
	Start, End time.Time
	// ShardsLeaderless counts the shards that had a gap during the
	// scenario (each gap counts in the scenario it overlaps most).
	ShardsLeaderless int
	// LongestGap is the longest such gap, whole; LongestCounted its part
	// that the bound applies to (they differ while voters are cut off).
	LongestGap, LongestCounted time.Duration
	// LongestOverlap is the longest time two reachable nodes both said
	// they led one shard (at different epochs, or it would be a double
	// leader), for overlaps that began during the scenario. It is not a
	// violation: a deposed leader's last table may reach the checker
	// after its successor's first. It shows how close leaderships came.
	LongestOverlap time.Duration
	// Faulted are the nodes of the scenario's EndRule.
	Faulted []string
	// Released are the ends of leases during the scenario, by their
	// nodes' clocks, in the order recorded. Ends counts them by reason on
	// nodes other than the faulted ones, EndsFaulted on the faulted ones.
	Released          []Release
	Ends, EndsFaulted map[string]int
	// Violations are those that happened during the scenario.
	Violations []Violation
}

// Report is what the Recorder concluded.
type Report struct {
	Bound      time.Duration
	From, To   time.Time // the span checked for availability
	Scenarios  []ScenarioResult
	Violations []Violation // every violation, in time order
	Gaps       []Gap       // every gap, by start
	// Tokens counts the distinct (shard, epoch) leaderships seen,
	// Acquisitions and Releases the history entries.
	Tokens, Acquisitions, Releases int
	Notes                          []string
}

// Count returns the number of violations of kind k.
func (r Report) Count(k Kind) int {
	n := 0
	for _, v := range r.Violations {
		if v.Kind == k {
			n++
		}
	}
	return n
}

// Report analyses everything recorded up to time to. Availability is
// judged from the first Expect on, against bound.
func (r *Recorder) Report(to time.Time, bound time.Duration) Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := Report{Bound: bound, To: to, Tokens: len(r.owner), Acquisitions: len(r.acqs), Releases: len(r.rels), Notes: slices.Clone(r.notes)}
	viols := slices.Clone(r.viols)
	viols = append(viols, r.orderViolations()...)
	viols = append(viols, r.endViolations(to)...)

	if len(r.windows) > 0 {
		rep.From = r.windows[0].at
		periods := r.availablePeriods(to)
		for _, g := range r.gaps(rep.From, to) {
			for _, p := range periods {
				a, b := later(g.Start, p[0]), earlier(g.End, p[1])
				if d := b.Sub(a); d > g.Counted {
					g.Counted = d
				}
			}
			rep.Gaps = append(rep.Gaps, g)
		}
	}
	// Each gap belongs to the scenario it overlaps most: a gap that starts
	// at a leader's last answer, just before the scenario's fault, is the
	// scenario's all the same. So do the violations of the bound.
	spans := make([][2]time.Time, len(r.scens))
	for k, sc := range r.scens {
		spans[k] = [2]time.Time{sc.start, sc.end}
		if sc.end.IsZero() {
			spans[k][1] = to
		}
	}
	owner := make([]int, len(rep.Gaps))
	var overBound []int // indexes into viols, parallel to their gaps' owners
	var overOwner []int
	for i, g := range rep.Gaps {
		owner[i] = -1
		var most time.Duration
		for k, sp := range spans {
			if d := earlier(g.End, sp[1]).Sub(later(g.Start, sp[0])); d > most {
				owner[i], most = k, d
			}
		}
		if g.Counted > bound {
			overBound, overOwner = append(overBound, len(viols)), append(overOwner, owner[i])
			viols = append(viols, Violation{At: g.Start, Kind: Unavailable, Shard: g.Shard,
				Detail: fmt.Sprintf("shard %d had no leader for %v (%s to %s), %v of it while expected available; bound %v%s",
					g.Shard, round(g.Length()), g.Start.Format("15:04:05.000"), g.End.Format("15:04:05.000"), round(g.Counted), bound, r.historyNote(g))})
		}
	}
	overlaps := r.overlaps(to)
	for k, sc := range r.scens {
		res := ScenarioResult{Name: sc.name, Start: spans[k][0], End: spans[k][1]}
		shards := map[uint32]bool{}
		for i, g := range rep.Gaps {
			if owner[i] == k {
				shards[g.Shard] = true
				res.LongestGap = max(res.LongestGap, g.Length())
				res.LongestCounted = max(res.LongestCounted, g.Counted)
			}
		}
		res.ShardsLeaderless = len(shards)
		res.Faulted = slices.Clone(sc.rule.Faulted)
		res.Ends, res.EndsFaulted = map[string]int{}, map[string]int{}
		for _, x := range r.rels {
			if in(x.At, spans[k]) {
				res.Released = append(res.Released, x)
				if slices.Contains(sc.rule.Faulted, x.Node) {
					res.EndsFaulted[x.Reason]++
				} else {
					res.Ends[x.Reason]++
				}
			}
		}
		for _, o := range overlaps {
			if !o[0].Before(res.Start) && o[0].Before(res.End) {
				res.LongestOverlap = max(res.LongestOverlap, o[1].Sub(o[0]))
			}
		}
		for i, v := range viols {
			if j := slices.Index(overBound, i); j >= 0 {
				if overOwner[j] == k {
					res.Violations = append(res.Violations, v)
				}
			} else if in(v.At, [2]time.Time{res.Start, res.End}) {
				res.Violations = append(res.Violations, v)
			}
		}
		rep.Scenarios = append(rep.Scenarios, res)
	}
	slices.SortStableFunc(viols, func(a, b Violation) int { return a.At.Compare(b.At) })
	rep.Violations = viols
	return rep
}

// orderViolations checks, shard by shard, that acquisitions ordered by
// the leaders' clocks have increasing epochs. Entries stamped in the same
// millisecond (the resolution of /status) are ordered by epoch, so they
// never count as out of order.
func (r *Recorder) orderViolations() []Violation {
	byShard := map[uint32][]Acquisition{}
	for _, a := range r.acqs {
		byShard[a.Shard] = append(byShard[a.Shard], a)
	}
	var out []Violation
	for _, s := range slices.Sorted(maps.Keys(byShard)) {
		as := byShard[s]
		slices.SortFunc(as, func(a, b Acquisition) int {
			return cmp.Or(a.At.Compare(b.At), cmp.Compare(a.Epoch, b.Epoch))
		})
		top := as[0]
		for _, a := range as[1:] {
			if a.Epoch < top.Epoch {
				out = append(out, Violation{At: a.At, Kind: EpochRegressed, Shard: s, Epoch: a.Epoch, Nodes: []string{top.Node, a.Node},
					Detail: fmt.Sprintf("%s %s shard %d at epoch %d at %s, after %s had it at epoch %d at %s",
						a.Node, a.Event, s, a.Epoch, a.At.Format("15:04:05.000"), top.Node, top.Epoch, top.At.Format("15:04:05.000"))})
				continue
			}
			top = a
		}
	}
	return out
}

// endViolations returns a violation for each lease end that the rule of
// the scenario it fell in forbids, in time order. A scenario not ended
// yet runs up to to.
func (r *Recorder) endViolations(to time.Time) []Violation {
	var out []Violation
	for _, sc := range r.scens {
		span := [2]time.Time{sc.start, sc.end}
		if sc.end.IsZero() {
			span[1] = to
		}
		for _, x := range r.rels {
			if !in(x.At, span) || !sc.rule.forbids(x.Node, x.Reason) {
				continue
			}
			out = append(out, Violation{At: x.At, Kind: ForbiddenEnd, Shard: x.Shard, Epoch: x.Epoch, Nodes: []string{x.Node},
				Detail: fmt.Sprintf("%s stopped leading shard %d (epoch %d) at %s: %s, forbidden on %s in %q",
					x.Node, x.Shard, x.Epoch, x.At.Format("15:04:05.000"), x.Reason, x.Node, sc.name)})
		}
	}
	slices.SortStableFunc(out, func(a, b Violation) int { return a.At.Compare(b.At) })
	return out
}

// historyNote says what the nodes' own histories show of g's shard
// during g, which tells a shard without a leader from a leader the
// checker did not see (its polls failing on a loaded host): whether the
// leader last seen recorded an end of its lease by the gap's end, and the
// first acquisition in the gap, by the acquirer's clock.
func (r *Recorder) historyNote(g Gap) string {
	var parts []string
	if l := g.Last; l.Node != "" {
		i := slices.IndexFunc(r.rels, func(x Release) bool {
			return x.Node == l.Node && x.Shard == g.Shard && x.Epoch == l.Epoch && !x.At.After(g.End)
		})
		if i < 0 {
			parts = append(parts, fmt.Sprintf("%s, seen leading it at epoch %d until %s, recorded no end of that lease by %s",
				l.Node, l.Epoch, l.End.Format("15:04:05.000"), g.End.Format("15:04:05.000")))
		} else {
			x := r.rels[i]
			parts = append(parts, fmt.Sprintf("%s, seen leading it at epoch %d until %s, ended that lease at %s (%s)",
				l.Node, l.Epoch, l.End.Format("15:04:05.000"), x.At.Format("15:04:05.000"), x.Reason))
		}
	}
	var first *Acquisition
	for i, a := range r.acqs {
		if a.Shard == g.Shard && a.At.After(g.Start) && a.At.Before(g.End) && (first == nil || a.At.Before(first.At)) {
			first = &r.acqs[i]
		}
	}
	if first != nil {
		parts = append(parts, fmt.Sprintf("%s %s it at %s (epoch %d), %v into the gap",
			first.Node, first.Event, first.At.Format("15:04:05.000"), first.Epoch, round(first.At.Sub(g.Start))))
	}
	if len(parts) == 0 {
		return ""
	}
	return "; the nodes' histories: " + strings.Join(parts, "; ")
}

// in reports whether t lies in span, its start included, its end not.
func in(t time.Time, span [2]time.Time) bool { return !t.Before(span[0]) && t.Before(span[1]) }

// availablePeriods returns the spans, up to to, in which the cluster was
// expected to be available.
func (r *Recorder) availablePeriods(to time.Time) [][2]time.Time {
	var out [][2]time.Time
	for i, w := range r.windows {
		if !w.available {
			continue
		}
		end := to
		if i+1 < len(r.windows) {
			end = r.windows[i+1].at
		}
		if end.After(w.at) {
			out = append(out, [2]time.Time{w.at, end})
		}
	}
	return out
}

// overlaps returns, for each pair of intervals of one shard held by two
// nodes at once, when the overlap began and how long it lasted.
func (r *Recorder) overlaps(to time.Time) [][2]time.Time {
	var out [][2]time.Time
	for _, ivs := range r.intervals(to) {
		for i, a := range ivs {
			for _, b := range ivs[i+1:] {
				if b.Start.After(a.End) || b.Start.Equal(a.End) {
					break // sorted by start: no later one overlaps a
				}
				if a.Node != b.Node {
					out = append(out, [2]time.Time{b.Start, earlier(a.End, b.End)})
				}
			}
		}
	}
	return out
}

// intervals returns every interval by shard, sorted by start; those still
// open end at to.
func (r *Recorder) intervals(to time.Time) [][]Interval {
	byShard := make([][]Interval, r.shards)
	add := func(iv Interval) {
		if int(iv.Shard) < len(byShard) {
			byShard[iv.Shard] = append(byShard[iv.Shard], iv)
		}
	}
	for _, iv := range r.closed {
		add(iv)
	}
	for _, n := range r.nodes {
		for _, iv := range n.open {
			// Still held as far as anyone knows: the node answered its
			// last poll.
			open := *iv
			open.End = later(open.End, to)
			add(open)
		}
	}
	for _, ivs := range byShard {
		slices.SortFunc(ivs, byStart)
	}
	return byShard
}

// gaps returns every span within [from, to] in which a shard had no
// claim, by shard then start.
func (r *Recorder) gaps(from, to time.Time) []Gap {
	var out []Gap
	for s, ivs := range r.intervals(to) {
		cur := from
		var last Interval
		for _, iv := range ivs {
			if iv.End.Before(from) || iv.Start.After(to) {
				continue
			}
			if iv.Start.After(cur) {
				out = append(out, Gap{Shard: uint32(s), Start: cur, End: iv.Start, Last: last})
			}
			if !iv.End.Before(cur) {
				cur, last = iv.End, iv
			}
		}
		if to.After(cur) {
			out = append(out, Gap{Shard: uint32(s), Start: cur, End: to, Last: last})
		}
	}
	return out
}

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// Table formats the per-scenario results as a text table. "lease ends
// elsewhere" counts by reason the ends on nodes the scenario did not
// fault; "forbidden ends" those its EndRule forbids, wherever.
func (r Report) Table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "scenario\ttook\tshards leaderless\tlongest gap\tcounted vs bound %v\tlongest overlap\tdouble leaders\tepoch regressions\tover bound\tforbidden ends\tother\tlease ends elsewhere\t\n", r.Bound)
	for _, s := range r.Scenarios {
		counts := map[Kind]int{}
		for _, v := range s.Violations {
			counts[v.Kind]++
		}
		other := len(s.Violations) - counts[DoubleLeader] - counts[EpochRegressed] - counts[Unavailable] - counts[ForbiddenEnd]
		fmt.Fprintf(w, "%s\t%v\t%d\t%v\t%v\t%v\t%d\t%d\t%d\t%d\t%d\t%s\t\n", s.Name, s.End.Sub(s.Start).Round(100*time.Millisecond),
			s.ShardsLeaderless, round(s.LongestGap), round(s.LongestCounted), round(s.LongestOverlap),
			counts[DoubleLeader], counts[EpochRegressed], counts[Unavailable], counts[ForbiddenEnd], other, ByReason(s.Ends))
	}
	w.Flush()
	return b.String()
}

// ByReason formats counts of lease ends by reason, most first: "handoff
// 5, lease expired 2"; "none" when there are none.
func ByReason(ends map[string]int) string {
	reasons := slices.Collect(maps.Keys(ends))
	slices.SortFunc(reasons, func(a, b string) int { return cmp.Or(cmp.Compare(ends[b], ends[a]), cmp.Compare(a, b)) })
	var parts []string
	for _, reason := range reasons {
		if ends[reason] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", reason, ends[reason]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
