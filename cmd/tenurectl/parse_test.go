package main

import (
	"flag"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/tenurehq/tenure/shard"
)

// FuzzParseInterleaved: flags may sit anywhere among the arguments; every
// argument that is not a flag or a flag's value comes back, in order, and
// nothing after "--" is taken for a flag.
func FuzzParseInterleaved(f *testing.F) {
	for _, s := range []string{"k1 -node n1 k2", "-- -x", "a -- -node b", "-node", "-state=led x -o json", "--node=x y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.String("node", "", "")
		fs.String("o", "", "")
		pos, err := parseInterleaved(fs, args)
		if err != nil {
			return
		}
		if len(pos) > len(args) {
			t.Fatalf("%q: %d positional arguments out of %d", args, len(pos), len(args))
		}
		for _, p := range pos {
			if !slices.Contains(args, p) {
				t.Fatalf("%q: positional %q was not an argument", args, p)
			}
		}
		// The first "--" that is not a flag's value ends the flags.
		i := slices.Index(args, "--")
		if i > 0 && slices.Contains([]string{"-node", "--node", "-o", "--o"}, args[i-1]) {
			i = -1
		}
		if i >= 0 {
			after := args[i+1:]
			if len(pos) < len(after) || !slices.Equal(pos[len(pos)-len(after):], after) {
				t.Fatalf("%q: arguments after -- = %q, positional %q", args, after, pos)
			}
		}
	})
}

// FuzzParseAddrs: every address accepted splits into a host and a
// non-zero port.
func FuzzParseAddrs(f *testing.F) {
	for _, s := range []string{"a:1,b:2", "[::1]:7000", ":7000", "a", "a:0", " , "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addrs, err := parseAddrs(s)
		if err != nil {
			return
		}
		for _, a := range addrs {
			if host, port, err := splitHostPort(a); err != nil || host == "" || port == 0 {
				t.Fatalf("parseAddrs(%q) gave %q (%v)", s, a, err)
			}
		}
	})
}

// FuzzParseShard: a shard number accepted is below shard.MaxShards and
// prints back as given (no sign, no spaces, no other base).
func FuzzParseShard(f *testing.F) {
	for _, s := range []string{"0", "17", "-1", "1048576", "0x10", " 3", "+4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseShard(s)
		if err != nil {
			return
		}
		if n >= shard.MaxShards {
			t.Fatalf("parseShard(%q) = %d", s, n)
		}
	})
}
