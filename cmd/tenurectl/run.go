package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// The exit codes scripts rely on; usageText documents them.
const (
	exitOK          = 0
	exitFailed      = 1
	exitUsage       = 2
	exitNotFound    = 3
	exitUnavailable = 4
)

// globals are the flags every command takes, before or after its name.
type globals struct {
	addr          string
	output        string
	timeout       time.Duration
	tls           bool
	tlsCA         string
	tlsCert       string
	tlsKey        string
	tlsServerName string
}

// usageError is a mistake on the command line: exit 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error { return &usageError{fmt.Errorf(format, args...)} }

// notFoundError names something the cluster does not know: exit 3.
type notFoundError struct{ err error }

func (e *notFoundError) Error() string { return e.err.Error() }

// command is one subcommand.
type command struct {
	name, args, help string
	// flags declares the command's own flags on fs; nil for none.
	flags func(fs *flag.FlagSet) any
	run   func(ctx context.Context, c *cli, opts any, args []string) error
}

// cli is one invocation: the parsed globals, the endpoints and the output.
type cli struct {
	g     globals
	eps   *endpoints
	out   io.Writer
	errw  io.Writer
	table bool
}

// envGlobals returns the defaults of the global flags, from the
// environment where it sets them.
func envGlobals(getenv func(string) (string, bool)) globals {
	env := func(name, def string) string {
		if v, ok := getenv(name); ok {
			return v
		}
		return def
	}
	return globals{
		addr: env("TENURE_ADDR", "127.0.0.1:7000"), output: "table", timeout: 10 * time.Second,
		tlsCA: env("TENURE_TLS_CA", ""), tlsCert: env("TENURE_TLS_CERT", ""), tlsKey: env("TENURE_TLS_KEY", ""),
	}
}

// defineGlobals declares the global flags on fs, bound to g, with the
// defaults def.
func defineGlobals(fs *flag.FlagSet, g *globals, def globals) {
	fs.StringVar(&g.addr, "addr", def.addr, "comma-separated gRPC `addresses` of tenured nodes, tried in order (env TENURE_ADDR)")
	fs.StringVar(&g.output, "o", def.output, "output `format`: table or json")
	fs.DurationVar(&g.timeout, "timeout", def.timeout, "bound on each command (watch excepted)")
	fs.BoolVar(&g.tls, "tls", def.tls, "use TLS, verifying the nodes with the system roots unless -tls-ca is given (implied by the other -tls flags)")
	fs.StringVar(&g.tlsCA, "tls-ca", def.tlsCA, "PEM CA `file` that signs the nodes' certificates (env TENURE_TLS_CA)")
	fs.StringVar(&g.tlsCert, "tls-cert", def.tlsCert, "PEM client certificate `file`: admin calls need one when the nodes use mTLS (env TENURE_TLS_CERT)")
	fs.StringVar(&g.tlsKey, "tls-key", def.tlsKey, "PEM private key `file` of -tls-cert (env TENURE_TLS_KEY)")
	fs.StringVar(&g.tlsServerName, "tls-server-name", def.tlsServerName, "`name` to verify in the nodes' certificates instead of the host of -addr")
}

var commands = []command{
	{name: "lookup", args: "KEY...", help: "show the shard, leader and epoch of each key", run: runLookup},
	{name: "shards", args: "[-node N] [-state led|unled|moving]", help: "list shards with their leaders and epochs", flags: shardsFlags, run: runShards},
	{name: "shard", args: "SHARD", help: "show one shard", run: runShard},
	{name: "members", help: "list the cluster's members as the node sees them", run: runMembers},
	{name: "cluster", help: "show the configuration, voters and health", run: runCluster},
	{name: "watch", args: "[-n COUNT]", help: "stream leadership changes until interrupted (or COUNT events)", flags: watchFlags, run: runWatch},
	{name: "drain", args: "NODE", help: "make NODE hand off its shards and stop taking new ones", run: runDrain},
	{name: "transfer", args: "SHARD NODE", help: "hand SHARD to NODE gracefully", run: runTransfer},
	{name: "pause", help: "pause rebalancing cluster-wide (failover continues)", run: runPause},
	{name: "resume", help: "resume rebalancing", run: runResume},
	{name: "plan", help: "show the moves the rebalancer wants now (a dry run; moves nothing)", run: runPlan},
}

func usageText(w io.Writer) {
	var g globals
	fs := flag.NewFlagSet("tenurectl", flag.ContinueOnError)
	defineGlobals(fs, &g, envGlobals(func(string) (string, bool) { return "", false }))
	fs.SetOutput(w)
	fmt.Fprint(w, "Usage: tenurectl [flags] COMMAND [args]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %-36s %s\n", c.name, c.args, c.help)
	}
	fmt.Fprint(w, "\nFlags (before or after the command):\n")
	fs.PrintDefaults()
	fmt.Fprint(w, `
Exit codes:
  0  success
  1  the operation failed (refused, or the node answered with an error)
  2  usage error
  3  not found: an unknown shard or node
  4  unavailable: no node in -addr answered
`)
}

// run is tenurectl's main: it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) (string, bool), stdout, stderr io.Writer) int {
	var pre globals // the global flags given before the command
	fs := flag.NewFlagSet("tenurectl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	defineGlobals(fs, &pre, envGlobals(getenv))
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usageText(stdout)
			return exitOK
		}
		return report(stderr, "", &usageError{err})
	}
	if fs.NArg() == 0 {
		usageText(stderr)
		return exitUsage
	}
	name := fs.Arg(0)
	if name == "help" {
		usageText(stdout)
		return exitOK
	}
	i := slices.IndexFunc(commands, func(c command) bool { return c.name == name })
	if i < 0 {
		return report(stderr, "", usagef("unknown command %q (run tenurectl -h for the list)", name))
	}
	cmd := commands[i]
	// The command's flags include the global ones again, defaulting to
	// what was given before the command.
	var g globals
	cfs := flag.NewFlagSet(name, flag.ContinueOnError)
	cfs.SetOutput(io.Discard)
	defineGlobals(cfs, &g, pre)
	var opts any
	if cmd.flags != nil {
		opts = cmd.flags(cfs)
	}
	positional, err := parseInterleaved(cfs, fs.Args()[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(stdout, "Usage: tenurectl %s %s\n\n%s.\n", name, cmd.args, cmd.help)
			return exitOK
		}
		return report(stderr, name, &usageError{err})
	}
	if g.output != "table" && g.output != "json" {
		return report(stderr, name, usagef("-o %q: want table or json", g.output))
	}
	addrs, err := parseAddrs(g.addr)
	if err != nil {
		return report(stderr, name, usagef("-addr: %v", err))
	}
	opts2, err := dialOptions(g)
	if err != nil {
		return report(stderr, name, err)
	}
	c := &cli{g: g, eps: newEndpoints(addrs, opts2), out: stdout, errw: stderr, table: g.output == "table"}
	defer c.eps.close()
	if name != "watch" {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	return report(stderr, name, cmd.run(ctx, c, opts, positional))
}

// parseInterleaved parses flags anywhere among the arguments (lookup KEY
// -o json), not only before them, and returns the arguments that are not
// flags. Everything after "--" is an argument, for keys that begin with
// '-'.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// parseAddrs splits -addr and checks each host:port.
func parseAddrs(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, _, err := splitHostPort(a)
		if err != nil {
			return nil, err
		}
		if host == "" {
			return nil, fmt.Errorf("%q has no host", a)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no address given")
	}
	return out, nil
}

func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return "", 0, fmt.Errorf("%q has an invalid port %q", s, p)
	}
	return host, int(port), nil
}

// report prints err once, prefixed with the command, and returns its exit
// code.
func report(stderr io.Writer, cmd string, err error) int {
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	prefix := "tenurectl: "
	if cmd != "" {
		prefix += cmd + ": "
	}
	fmt.Fprintf(stderr, "%s%v\n", prefix, message(err))
	if code == exitUsage {
		fmt.Fprintln(stderr, "Run 'tenurectl -h' for usage.")
	}
	return code
}

// exitCode maps an error to the documented exit codes. Errors of calls
// have been through tenurev1.FromStatus, so the shard sentinels match.
func exitCode(err error) int {
	var ue *usageError
	var nf *notFoundError
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &nf), errors.Is(err, shard.ErrUnknownShard), errors.Is(err, shard.ErrUnknownNode):
		return exitNotFound
	case errors.Is(err, errUnavailable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, shard.ErrNotStarted):
		return exitUnavailable
	case errors.Is(err, shard.ErrDraining), errors.Is(err, tenurev1.ErrUnauthenticated):
		return exitFailed
	}
	switch status.Code(err) {
	case codes.NotFound:
		return exitNotFound
	case codes.Unavailable, codes.DeadlineExceeded:
		return exitUnavailable
	}
	return exitFailed
}

// message is err's text with gRPC's "rpc error: code = ... desc =" noise
// replaced by the code's name where the status has a message of its own.
func message(err error) string {
	var te *tenurev1.Error
	if errors.As(err, &te) {
		return err.Error()
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.OK && st.Code() != codes.Unknown {
		return fmt.Sprintf("%s (%s)", st.Message(), st.Code())
	}
	return err.Error()
}
