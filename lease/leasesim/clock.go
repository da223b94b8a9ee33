package leasesim

import (
	"math"
	"time"

	"github.com/tenurehq/tenure/lease"
)

// clock is one process's monotonic clock as a function of global time: it
// reads v0 at global time t0 and runs at rate from then on. Before t0 it
// reads v0: a frozen clock (a VM freeze) stands still until t0. It never
// goes back: steps only move it forward, and a new origin comes only with a
// new process.
type clock struct {
	t0   time.Duration
	v0   float64
	rate float64
}

func (c *clock) at(t time.Duration) lease.Time {
	if t <= c.t0 {
		return lease.Time(c.v0)
	}
	return lease.Time(c.v0 + c.rate*float64(t-c.t0))
}

// rebase makes t the clock's reference point, unless it is frozen past t.
func (c *clock) rebase(t time.Duration) {
	if t > c.t0 {
		c.v0 = c.v0 + c.rate*float64(t-c.t0)
		c.t0 = t
	}
}

// setRate changes the rate from global time t on.
func (c *clock) setRate(t time.Duration, rate float64) {
	c.rebase(t)
	c.rate = rate
}

// step moves the reading forward by d at global time t.
func (c *clock) step(t, d time.Duration) {
	c.rebase(t)
	c.v0 += float64(d)
}

// freeze stops the clock from t until t+d; it returns the reading it
// stands at.
func (c *clock) freeze(t, d time.Duration) lease.Time {
	c.rebase(t)
	c.t0 = max(c.t0, t+d)
	return lease.Time(c.v0)
}

// when returns the earliest global time at or after t at which the clock
// reads at least x, if its rate stays as it is.
func (c *clock) when(t time.Duration, x lease.Time) time.Duration {
	if c.at(t) >= x {
		return t
	}
	// Past t0 (or at it, for a frozen clock) the reading is linear.
	d := time.Duration(math.Ceil((float64(x) - c.v0) / c.rate))
	return max(t, c.t0+d)
}
