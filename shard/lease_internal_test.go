package shard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// deadlineIn returns the lease.Time d from now on l's clock.
func deadlineIn(origin time.Time, d time.Duration) lease.Time {
	return lease.Time(time.Since(origin) + d)
}

// endedFor returns why l's context ended, or 0 if it has not.
func endedFor(t *testing.T, l *Lease) Reason {
	t.Helper()
	if l.Context().Err() == nil {
		return 0
	}
	var e *LeaseEndedError
	if !errors.As(context.Cause(l.Context()), &e) {
		t.Fatalf("lease context ended with cause %v, want a *LeaseEndedError", context.Cause(l.Context()))
	}
	return e.Reason
}

// The context of a lease ends at its deadline by itself: Err compares the
// deadline with the monotonic clock on every call (no timer, no loop
// needed), and the timer closes Done for those who wait on it.
func TestLeaseContextEndsAtItsDeadline(t *testing.T) {
	origin := time.Now()
	t.Run("Err consults the clock", func(t *testing.T) {
		l := newLease(1, 7, origin, deadlineIn(origin, time.Hour), nil, nil)
		l.timer.Stop() // only Err's own reading of the clock can end it now
		if err := l.Context().Err(); err != nil {
			t.Fatalf("Err before the deadline = %v", err)
		}
		// The deadline passes (as if the hour went by) and nothing runs:
		// no timer, no loop.
		l.deadline.Store(int64(deadlineIn(origin, -time.Nanosecond)))
		if err := l.Context().Err(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Err after the deadline = %v, want context.Canceled", err)
		}
		if r := endedFor(t, l); r != ReasonLeaseExpired {
			t.Fatalf("ended for %v, want %v", r, ReasonLeaseExpired)
		}
		select {
		case <-l.Context().Done():
		default:
			t.Fatal("Done not closed once Err reported the end")
		}
	})
	t.Run("the timer closes Done", func(t *testing.T) {
		l := newLease(1, 7, origin, deadlineIn(origin, 20*time.Millisecond), nil, nil)
		done := l.Context().Done() // taken before the deadline: only the timer closes it
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Done still open 10 s after the deadline")
		}
		if l.now() < lease.Time(l.deadline.Load()) {
			t.Fatal("Done closed before the deadline")
		}
		if r := endedFor(t, l); r != ReasonLeaseExpired {
			t.Fatalf("ended for %v, want %v", r, ReasonLeaseExpired)
		}
	})
	t.Run("derived contexts end with it", func(t *testing.T) {
		l := newLease(1, 7, origin, deadlineIn(origin, 20*time.Millisecond), nil, nil)
		ctx, cancel := context.WithCancel(l.Context())
		defer cancel()
		<-ctx.Done()
		var e *LeaseEndedError
		if !errors.As(context.Cause(ctx), &e) || e.Shard != 1 || e.Epoch != 7 {
			t.Fatalf("derived context's cause = %v", context.Cause(ctx))
		}
	})
}

// A renewal moves the deadline forward, a voter that stops protecting the
// lease moves it back, and an ended lease stays ended whatever comes
// after.
func TestLeaseDeadlineMoves(t *testing.T) {
	origin := time.Now()
	const long = time.Hour
	tests := []struct {
		name string
		// give acts on a lease whose deadline is an hour away.
		give func(l *Lease)
		want Reason // 0: still live
	}{
		{
			name: "forward",
			give: func(l *Lease) { l.setDeadline(deadlineIn(origin, 2*long)) },
		},
		{
			name: "back, still ahead",
			give: func(l *Lease) { l.setDeadline(deadlineIn(origin, long/2)) },
		},
		{
			name: "back, already passed",
			give: func(l *Lease) { l.setDeadline(deadlineIn(origin, -time.Millisecond)) },
			want: ReasonLeaseExpired,
		},
		{
			name: "passed unnoticed, then renewed",
			give: func(l *Lease) {
				// The deadline passes while nobody looks and the timer is
				// late; a renewal then must not revive the lease.
				l.timer.Stop()
				l.deadline.Store(int64(deadlineIn(origin, -time.Millisecond)))
				l.setDeadline(deadlineIn(origin, long))
			},
			want: ReasonLeaseExpired,
		},
		{
			name: "ended by a handoff, then renewed",
			give: func(l *Lease) {
				l.end(ReasonHandoff)
				l.setDeadline(deadlineIn(origin, 2*long))
			},
			want: ReasonHandoff,
		},
		{
			name: "ended twice",
			give: func(l *Lease) {
				l.end(ReasonDrain)
				if r := l.end(ReasonShutdown); r != ReasonDrain {
					panic("the second end changed the reason to " + r.String())
				}
			},
			want: ReasonDrain,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLease(3, 9, origin, deadlineIn(origin, long), nil, nil)
			defer l.end(ReasonShutdown)
			tt.give(l)
			if got := endedFor(t, l); got != tt.want {
				t.Fatalf("ended for %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("back re-arms the timer", func(t *testing.T) {
		l := newLease(3, 9, origin, deadlineIn(origin, long), nil, nil)
		done := l.Context().Done()
		l.setDeadline(deadlineIn(origin, 20*time.Millisecond))
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Done still open 10 s after a deadline moved back")
		}
	})
}

// A lease every voter backs lasts while the node's shared quorum deadline
// does; once it is no longer full, only its own deadline counts.
func TestLeaseFollowsTheSharedQuorumDeadlineWhileFull(t *testing.T) {
	origin := time.Now()
	var shared atomic.Int64
	shared.Store(int64(deadlineIn(origin, time.Hour)))
	l := newLease(2, 5, origin, deadlineIn(origin, time.Hour), nil, &shared)
	defer l.end(ReasonShutdown)
	own := deadlineIn(origin, 30*time.Minute)
	l.setDeadline(own)
	if got := l.until(); got != own {
		t.Fatalf("until %v before the lease is full, want its own %v", got, own)
	}
	l.setFull(true)
	if got, want := l.until(), lease.Time(shared.Load()); got != want {
		t.Fatalf("until %v while full, want the shared %v", got, want)
	}
	l.setFull(false)
	shared.Store(int64(deadlineIn(origin, 2*time.Hour)))
	if got := l.until(); got != own {
		t.Fatalf("until %v after full was cleared, want its own %v", got, own)
	}
	l.setDeadline(deadlineIn(origin, time.Millisecond))
	shared.Store(0)
	l.setFull(true)
	for give := time.Now().Add(time.Minute); !l.expired(); {
		if time.Now().After(give) {
			t.Fatal("a full lease did not end when both its deadline and the shared one had passed")
		}
		time.Sleep(time.Millisecond)
	}
	if r := endedFor(t, l); r != ReasonLeaseExpired {
		t.Fatalf("the lease ended for %v, want %v", r, ReasonLeaseExpired)
	}
}
