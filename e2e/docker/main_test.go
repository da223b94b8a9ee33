//go:build e2edocker

package dockere2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The packages built into the images. The node is the ledger example:
// tenured (it takes every tenured flag and TENURE_* variable) plus work
// on every shard it leads, written with the lease's token to the ledger
// store, which refuses stale epochs and audits the run. With nodePkg
// cmd/tenured and storePkg "" the suite runs plain tenured nodes and
// checks leadership only.
const (
	nodePkg  = "github.com/tenurehq/tenure/examples/ledger"
	boxPkg   = "github.com/tenurehq/tenure/e2e/docker/cmd/tenure-box"
	storePkg = "github.com/tenurehq/tenure/examples/ledger/cmd/ledgerstore"
)

// suite is what TestMain prepared for every test.
var suite struct {
	run        string   // this run's ID: names the images and compose projects
	compose    []string // the compose command: docker compose, or docker-compose
	nodeImage  string
	storeImage string // "" without a store
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	began := time.Now()
	compose, err := requireDocker()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e/docker: %v\n", err)
		return 1
	}
	suite.compose = compose
	suite.run = fmt.Sprintf("%05d%03d", os.Getpid()%100000, rand.IntN(1000))
	images, err := buildImages()
	defer removeImages(images)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e/docker: %v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e/docker: built binaries and images %s in %v (compose: %s)\n",
		strings.Join(images, ", "), time.Since(began).Round(100*time.Millisecond), strings.Join(compose, " "))

	// An interrupted run (Ctrl-C, CI cancelling the job) skips the tests'
	// cleanups: remove what they started before exiting.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		sig, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(os.Stderr, "e2e/docker: %v: removing the clusters and images\n", sig)
		live.teardownAll()
		removeImages(images)
		os.Exit(1)
	}()
	return m.Run()
}

// live holds the clusters that are up, for an interrupted run.
var live clusters

type clusters struct {
	mu  sync.Mutex
	set map[*cluster]bool
}

func (c *clusters) add(cl *cluster) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.set == nil {
		c.set = map[*cluster]bool{}
	}
	c.set[cl] = true
}

func (c *clusters) remove(cl *cluster) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.set, cl)
}

func (c *clusters) teardownAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for cl := range c.set {
		cl.teardown()
	}
}

// requireDocker checks that the docker CLI reaches an engine and finds a
// compose command, and returns the latter. Its errors say what to install.
func requireDocker() ([]string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, errors.New("the docker CLI is not installed (or not in PATH): the Docker suite needs a Docker engine; `make test` runs everything else")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("no Docker engine answers (docker version: %v: %s): start dockerd, or set DOCKER_HOST", err, strings.TrimSpace(string(out)))
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil && exec.CommandContext(ctx, "docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, errors.New("neither `docker compose` (the compose plugin) nor `docker-compose` is installed")
}

// buildImages builds the static binaries into a fresh build context and
// the images FROM scratch around them, labelled with the run's ID. It
// returns the images it built, even on error, for removal.
func buildImages() ([]string, error) {
	dir, err := os.MkdirTemp("", "tenure-e2e-docker-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	bins := map[string]string{"tenure-node": nodePkg, "tenure-box": boxPkg}
	if storePkg != "" {
		bins["ledgerstore"] = storePkg
	}
	for name, pkg := range bins {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, name), pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	var built []string
	build := func(target, tag string) error {
		out, err := exec.Command("docker", "build", "-q", "-f", "Dockerfile", "--target", target,
			"--label", "tenure.e2e="+suite.run, "-t", tag, dir).CombinedOutput()
		if err != nil {
			return fmt.Errorf("docker build --target %s: %v\n%s", target, err, out)
		}
		built = append(built, tag)
		return nil
	}
	suite.nodeImage = "tenure-e2e-node:" + suite.run
	if err := build("node", suite.nodeImage); err != nil {
		return built, err
	}
	if storePkg != "" {
		suite.storeImage = "tenure-e2e-store:" + suite.run
		if err := build("ledgerstore", suite.storeImage); err != nil {
			return built, err
		}
	}
	return built, nil
}

func removeImages(images []string) {
	if len(images) == 0 {
		return
	}
	if out, err := exec.Command("docker", append([]string{"rmi", "-f"}, images...)...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e/docker: removing images: %v\n%s", err, out)
	}
}
