package lease_test

import (
	"slices"
	"testing"

	"github.com/tenurehq/tenure/lease"
)

// A voter marks its reply to the first request it sees from a node after
// forgetting it (a restart) AllStarted: it lists every live session, and
// the holder turns it into a Reset notice. If that one reply is lost, or
// overtaken by the reply to a later request, the holder must still get a
// Reset (it asks again, with NoticesSince 0): otherwise a member that was
// live at the voter before the restart and is silent since stays vouched
// for on news nobody renews (the restarted voter never reports it expired).
func resetNews(a *lease.Holder, voter string) (reset bool, live, expired []string) {
	for _, x := range a.TakeNotices() {
		if x.Voter != voter {
			continue
		}
		switch {
		case x.Reset:
			reset = true
		case x.Expired:
			expired = append(expired, x.Node)
		default:
			live = append(live, x.Node)
		}
	}
	return
}

func TestResetSurvivesALostFirstReplyAfterVoterRestart(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a, b := cHolder(t, "a", 1, lease.HolderMutations{}), cHolder(t, "b", 1, lease.HolderMutations{})
	w.roundTrip(b, ms(0))
	w.roundTrip(a, ms(10))
	if reset, live, _ := resetNews(a, "v1"); !reset || len(live) != 1 || live[0] != "b" {
		t.Fatalf("setup: first news from v1: reset %v live %v", reset, live)
	}
	// b falls silent for good; v1 restarts and forgets it.
	w.restart("v1", ms(300))
	// a's first request after the restart reaches v1; its reply is lost.
	for _, env := range a.Tick(ms(400)) {
		rep := w.handle(env, ms(400))
		if env.To == "v1" {
			if !rep.AllStarted {
				t.Fatalf("setup: v1's first reply after its restart is not AllStarted")
			}
			continue // lost
		}
		a.Step(rep, ms(401))
	}
	if !forgetsB(w, a, 700) {
		t.Fatal("after losing v1's first reply since its restart, a never got a Reset (nor b's expiry) from v1: " +
			"the node keeps counting v1's pre-restart news that b is live")
	}
}

func TestResetSurvivesAnOvertakenFirstReply(t *testing.T) {
	w := newCWorld(t, lease.VoterMutations{}, "v1", "v2", "v3")
	a, b := cHolder(t, "a", 1, lease.HolderMutations{}), cHolder(t, "b", 1, lease.HolderMutations{})
	w.roundTrip(b, ms(0))
	w.roundTrip(a, ms(10))
	resetNews(a, "v1")
	w.restart("v1", ms(300))
	// Two requests to v1 in flight (a keep-alive, then one with a release
	// op); the reply to the second overtakes the first.
	var first lease.Reply
	for _, env := range a.Tick(ms(400)) {
		rep := w.handle(env, ms(400))
		if env.To == "v1" {
			first = rep
			continue
		}
		a.Step(rep, ms(401))
	}
	// The next keep-alive interval (LD/4) passes with the first reply
	// still on its way.
	var second lease.Reply
	for _, env := range a.Tick(ms(660)) {
		rep := w.handle(env, ms(660))
		if env.To == "v1" {
			second = rep
			continue
		}
		a.Step(rep, ms(661))
	}
	if second.Voter == "" {
		t.Fatal("setup: no second request to v1")
	}
	a.Step(second, ms(670))
	a.Step(first, ms(680))
	if !forgetsB(w, a, 1000) {
		t.Fatal("v1's AllStarted reply was overtaken; a never got a Reset (nor b's expiry) from v1")
	}
}

// forgetsB runs a's round trips every 300 ms from ms(from) to 5 s and
// reports whether v1 sent a a Reset or b's expiry: either ends the news
// that silent b is live there.
func forgetsB(w *cworld, a *lease.Holder, from int) bool {
	for at := from; at <= 5000; at += 300 {
		w.roundTrip(a, ms(at))
		reset, _, expired := resetNews(a, "v1")
		if reset || slices.Contains(expired, "b") {
			return true
		}
	}
	return false
}
