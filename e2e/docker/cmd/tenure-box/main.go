// Command tenure-box does the two chores of a Tenure container image that
// has no shell (it is built FROM scratch):
//
//	tenure-box init-voter   create the voter store in the data directory, once
//	tenure-box probe URL    exit 0 if GET URL answers 2xx (a HEALTHCHECK)
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
// Exit codes: 0 done (or nothing to do), 1 failed, 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/voterstore"
)

func main() {
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

const usage = `Usage:
  tenure-box init-voter [-node-id ID] [-cluster NAME] [-data-dir DIR]
  tenure-box probe URL
`

func run(args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "init-voter":
		return initVoter(args[1:], getenv, stdout, stderr)
	case "probe":
		if len(args) != 2 {
			fmt.Fprint(stderr, "tenure-box probe: want one URL\n"+usage)
			return 2
		}
		if err := probe(args[1], 2*time.Second); err != nil {
			fmt.Fprintf(stderr, "tenure-box probe: %v\n", err)
			return 1
		}
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tenure-box: unknown command %q\n%s", args[0], usage)
	return 2
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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "tenure-box init-voter: unexpected argument %q\n", fs.Arg(0))
		return 2
	case *nodeID == "":
		fmt.Fprintln(stderr, "tenure-box init-voter: -node-id (or TENURE_NODE_ID) is required")
		return 2
	case *dataDir == "":
		fmt.Fprintln(stderr, "tenure-box init-voter: -data-dir (or TENURE_DATA_DIR) is required")
		return 2
	}
	st, err := voterstore.Open(voterstore.Options{Dir: *dataDir, Cluster: *cluster, VoterID: *nodeID, Init: true})
	switch {
	case errors.Is(err, voterstore.ErrExists):
		fmt.Fprintf(stdout, "tenure-box: voter %s: the store in %s exists; keeping it\n", *nodeID, *dataDir)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "tenure-box init-voter: %v\n", err)
		return 1
	}
	if err := st.Close(); err != nil {
		fmt.Fprintf(stderr, "tenure-box init-voter: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "tenure-box: voter %s: created the store in %s for cluster %s\n", *nodeID, *dataDir, *cluster)
	return 0
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
