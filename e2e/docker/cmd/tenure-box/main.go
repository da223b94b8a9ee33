// Command tenure-box does the chores of a Tenure container image that has
// no shell (it is built FROM scratch):
//
//	tenure-box init-voter   create the voter store in the data directory, once
//	tenure-box probe URL    exit 0 if GET URL answers 2xx (a HEALTHCHECK)
//	tenure-box burn         keep CPUs busy until stdin ends (the chaos suite's load)
//
// init-voter reads the node's own settings, TENURE_NODE_ID, TENURE_CLUSTER
// (default "tenure") and TENURE_DATA_DIR, or the flags of the same names.
// It creates the store the way tenured -init does, but only if none
// exists: the compose file runs it before every start of a voter, so that
// the very first start initialises the store and every later one keeps it
// (tenured -init refuses an existing store, and a container's command
// cannot change between restarts). A store of another cluster or voter is
// left alone; tenured refuses it at start with exit code 3.
//
// Creating a store creates a NEW voter identity with none of the cluster's
// records, which is safe only at the cluster's first start, or once the
// voter's records have been copied from a majority of the other voters;
// init-voter says so on stderr every time it creates one. It refuses (exit
// code 3) when the data directory's marker (voter.db.created) says a store
// was created there before but the store is gone: the volume lost its
// store, and a voter that forgot its records could grant an epoch twice.
// -reinit creates the store anyway; pass it once, for that start only.
//
// burn spins -threads goroutines (default: one per CPU the process may
// use) in a busy loop until its standard input reaches end of file, or
// -for (default 10m) has passed. The chaos suite runs it with docker exec
// -i inside a node's container, so that it competes with the node for the
// container's CPU quota, and ends it by closing its input: the burner also
// stops when the docker CLI that started it dies, and -for bounds a
// burner nothing ends. It prints one line once the goroutines spin.
//
// Exit codes: 0 done (or nothing to do), 1 failed, 2 usage, 3 refused: the
// data directory held a voter store that is gone (see -reinit).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/voterstore"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdin, os.Stdout, os.Stderr))
}

const usage = `Usage:
  tenure-box init-voter [-node-id ID] [-cluster NAME] [-data-dir DIR] [-reinit]
  tenure-box probe URL
  tenure-box burn [-threads N] [-for DURATION]

Exit codes: 0 done, 1 failed, 2 usage, 3 init-voter refused: the data
directory held a voter store that is gone (see -reinit).
`

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1
	exitUsage   = 2
	exitRefused = 3 // init-voter: the store was created here before and is gone
)

func run(args []string, getenv func(string) (string, bool), stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "init-voter":
		return initVoter(args[1:], getenv, stdout, stderr)
	case "probe":
		if len(args) != 2 {
			fmt.Fprint(stderr, "tenure-box probe: want one URL\n"+usage)
			return exitUsage
		}
		if err := probe(args[1], 2*time.Second); err != nil {
			fmt.Fprintf(stderr, "tenure-box probe: %v\n", err)
			return exitFailed
		}
		return exitOK
	case "burn":
		return burn(args[1:], stdin, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "tenure-box: unknown command %q\n%s", args[0], usage)
	return exitUsage
}

func initVoter(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	env := func(name, def string) string {
		if v, ok := getenv(name); ok {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("tenure-box init-voter", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodeID := fs.String("node-id", env("TENURE_NODE_ID", ""), "the voter's node ID (env TENURE_NODE_ID)")
	cluster := fs.String("cluster", env("TENURE_CLUSTER", membership.DefaultCluster), "the cluster's name (env TENURE_CLUSTER)")
	dataDir := fs.String("data-dir", env("TENURE_DATA_DIR", ""), "the voter's data directory (env TENURE_DATA_DIR)")
	// No environment variable: one left set would re-initialise silently
	// at every later loss.
	reinit := fs.Bool("reinit", false, "create the store even though the data directory held one that is gone: "+
		"a new voter identity without the cluster's records; for one start only")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "tenure-box init-voter: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case *nodeID == "":
		fmt.Fprintln(stderr, "tenure-box init-voter: -node-id (or TENURE_NODE_ID) is required")
		return exitUsage
	case *dataDir == "":
		fmt.Fprintln(stderr, "tenure-box init-voter: -data-dir (or TENURE_DATA_DIR) is required")
		return exitUsage
	}
	st, err := voterstore.Open(voterstore.Options{Dir: *dataDir, Cluster: *cluster, VoterID: *nodeID, Init: true, Reinit: *reinit})
	switch {
	case errors.Is(err, voterstore.ErrExists):
		fmt.Fprintf(stdout, "tenure-box: voter %s: the store in %s exists; keeping it\n", *nodeID, *dataDir)
		return exitOK
	case errors.Is(err, voterstore.ErrReinit):
		fmt.Fprintf(stderr, "tenure-box init-voter: REFUSED: %v\n"+
			"tenure-box init-voter: pass -reinit, for this start only, to create a new store anyway\n", err)
		return exitRefused
	case err != nil:
		fmt.Fprintf(stderr, "tenure-box init-voter: %v\n", err)
		return exitFailed
	}
	boot := st.Boot()
	if err := st.Close(); err != nil {
		fmt.Fprintf(stderr, "tenure-box init-voter: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stderr, "tenure-box init-voter: WARNING: voter %s: created a NEW voter identity in %s (boot %d) "+
		"that has none of the cluster's records; this is safe only at the cluster's first start, "+
		"or after the voter's records were copied from a majority of the other voters\n", *nodeID, *dataDir, boot)
	fmt.Fprintf(stdout, "tenure-box: voter %s: created the store in %s for cluster %s\n", *nodeID, *dataDir, *cluster)
	return exitOK
}

// probe GETs url and reports an error unless it answers 2xx within
// timeout.
func probe(url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return nil
}

// burn keeps -threads goroutines busy until stdin ends or -for passes.
func burn(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tenure-box burn", flag.ContinueOnError)
	fs.SetOutput(stderr)
	threads := fs.Int("threads", runtime.GOMAXPROCS(0), "busy goroutines (default: the CPUs this process may use)")
	limit := fs.Duration("for", 10*time.Minute, "stop after this long even if stdin never ends")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "tenure-box burn: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	case *threads < 1:
		fmt.Fprintf(stderr, "tenure-box burn: -threads must be positive, got %d\n", *threads)
		return exitUsage
	case *limit <= 0:
		fmt.Fprintf(stderr, "tenure-box burn: -for must be positive, got %v\n", *limit)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	// The reader ends with stdin; the process exits when the spinners
	// return, whichever ends them.
	go func() {
		io.Copy(io.Discard, stdin)
		cancel()
	}()
	var wg sync.WaitGroup
	for range *threads {
		wg.Go(func() { spin(ctx) })
	}
	fmt.Fprintf(stdout, "tenure-box: burning on %d threads\n", *threads)
	wg.Wait()
	return exitOK
}

// spin keeps one CPU busy until ctx ends, looking at ctx every 2^20
// rounds (about a millisecond).
func spin(ctx context.Context) {
	for i := uint64(1); ; i++ {
		if i&(1<<20-1) == 0 && ctx.Err() != nil {
			return
		}
	}
}
