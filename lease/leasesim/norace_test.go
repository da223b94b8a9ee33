//go:build !race

package leasesim_test

const raceOn = false
