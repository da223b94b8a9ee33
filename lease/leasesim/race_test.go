//go:build race

package leasesim_test

// raceOn: the race detector slows the single-goroutine simulation about
// tenfold and can find nothing in it, so race builds run a fifth of the
// seeds; `make sim` runs them all without it.
const raceOn = true
