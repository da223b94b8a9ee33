package daemon

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
)

// options are the daemon's settings after flags, environment and config file
// have been merged and checked. Each has one flag; its environment variable
// is TENURE_ followed by the flag name in upper case with '-' as '_'
// (-node-id: TENURE_NODE_ID), and its config file key is the flag name.
// A flag given on the command line beats the environment, which beats the
// file, which beats the default.
type options struct {
	NodeID  string
	Cluster string
	Shards  int

	GossipAddr      string // bind
	GossipAdvertise string // what peers dial; "" derives it from the bind address
	GRPCAddr        string // bind (shard.Config.GRPCListen)
	GRPCAdvertise   string // what clients and peers dial (shard.Config.GRPCAddr)
	HTTPAddr        string // bind; "" disables the HTTP server

	Seeds  []string // host:port; a DNS name stays a name, resolved on every join
	Voters []shard.VoterAddr

	DataDir       string
	Init          bool
	Profile       membership.Profile
	Zone          string
	Weight        int
	NoShards      bool
	LeaseDuration time.Duration

	TLSCert, TLSKey string
	TLSClientCA     string // set: mTLS; admin and internal calls need a client certificate
	TLSCA           string // CA that signs the peers' certificates; default TLSClientCA

	GossipKeys [][]byte

	LogLevel  slog.Level
	LogFormat string // "text" or "json"

	DrainTimeout time.Duration
	// ShutdownDelay is how long NOT_SERVING is reported before the drain.
	ShutdownDelay time.Duration
	JoinTimeout   time.Duration // 0: wait for a seed forever
	MaxBatchKeys  int
	Reflection    bool
}

// The default ports: gossip, gRPC and HTTP.
const (
	defaultGossipPort = 7946
	defaultGRPCPort   = 7000
	defaultHTTPPort   = 7080
)

// usageError is a mistake in the flags, environment or config file: the
// daemon prints it with a hint to run -h and exits with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// envName is the environment variable of flag name.
func envName(name string) string {
	return "TENURE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// flagSet declares every flag of the daemon on a new FlagSet, bound to
// raw, and then the application's. It prints nothing by itself: run
// reports errors, and printUsage the help.
func flagSet(app App, raw *rawOptions) *flag.FlagSet {
	fs := flag.NewFlagSet(app.name(), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	host, _ := os.Hostname()
	fs.StringVar(&raw.config, "config", "", "JSON config `file`: an object whose keys are flag names (\"node-id\": \"n1\", \"shards\": 1024, \"seeds\": [\"a:7946\"])")
	fs.StringVar(&raw.nodeID, "node-id", host, "this node's stable `name`: 1-64 characters from [A-Za-z0-9._-]; default the host name")
	fs.StringVar(&raw.cluster, "cluster", membership.DefaultCluster, "cluster `name`: nodes of other clusters are refused")
	fs.IntVar(&raw.shards, "shards", 0, "number of shards P, fixed for the life of the cluster and the same on every node (required)")
	fs.StringVar(&raw.gossipAddr, "gossip-addr", fmt.Sprintf("0.0.0.0:%d", defaultGossipPort), "`host:port` gossip binds to (UDP and TCP)")
	fs.StringVar(&raw.gossipAdvertise, "gossip-advertise", "", "`ip:port` peers reach gossip at, when it differs from -gossip-addr (NAT, containers)")
	fs.StringVar(&raw.grpcAddr, "grpc-addr", fmt.Sprintf("0.0.0.0:%d", defaultGRPCPort), "`host:port` the gRPC server binds to")
	fs.StringVar(&raw.grpcAdvertise, "grpc-advertise", "", "`host:port` clients and peers reach gRPC at; default -grpc-addr, or this node's entry in -voters")
	fs.StringVar(&raw.httpAddr, "http-addr", fmt.Sprintf("0.0.0.0:%d", defaultHTTPPort), "`host:port` of /metrics, /status, /healthz and /readyz; empty disables HTTP")
	fs.StringVar(&raw.seeds, "seeds", "", "comma-separated gossip `addresses` to join: host:port, or host alone for the port of -gossip-addr; a DNS name joins every address it resolves to")
	fs.StringVar(&raw.voters, "voters", "", "the static voter set, the same on every node: comma-separated `id=host:port` (gRPC addresses), 1, 3 or 5 of them")
	fs.StringVar(&raw.dataDir, "data-dir", "", "`directory` of the voter store; required on a voter")
	fs.BoolVar(&raw.init, "init", false, "create the voter store: on a voter's very first start only (like formatting a disk); refused when a store exists")
	fs.StringVar(&raw.profile, "profile", "lan", "gossip timing `profile`: lan, wan or local (one host or rack: sub-second failure detection, more traffic)")
	fs.StringVar(&raw.zone, "zone", "", "failure domain `name` of this node")
	fs.IntVar(&raw.weight, "weight", 1, "relative capacity: a node of weight 2 gets twice the shards")
	fs.BoolVar(&raw.noShards, "no-shards", false, "lead no shards (a dedicated voter or a lookup-only member)")
	fs.DurationVar(&raw.leaseDuration, "lease-duration", time.Second, "lease `duration`, the same on every node: failover takes about this long after a crash; longer survives longer stalls")
	fs.StringVar(&raw.tlsCert, "tls-cert", "", "PEM certificate `file` of this node: serves gRPC over TLS and is the client certificate towards peers and voters")
	fs.StringVar(&raw.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.StringVar(&raw.tlsClientCA, "tls-client-ca", "", "PEM CA `file` that signs client certificates: turns on mTLS, and admin and node-to-node calls then need a certificate")
	fs.StringVar(&raw.tlsCA, "tls-ca", "", "PEM CA `file` that signs the peers' server certificates; default -tls-client-ca, else the system roots")
	fs.StringVar(&raw.gossipKey, "gossip-key", "", "comma-separated base64 gossip encryption `keys` (16, 24 or 32 bytes each); the first encrypts, all decrypt. Prefer TENURE_GOSSIP_KEY or -gossip-key-file to keep keys out of ps")
	fs.StringVar(&raw.gossipKeyFile, "gossip-key-file", "", "`file` holding -gossip-key's value")
	fs.StringVar(&raw.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&raw.logFormat, "log-format", "text", "log `format`: text or json")
	fs.DurationVar(&raw.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long to hand shards off before releasing the rest and exiting")
	fs.DurationVar(&raw.shutdownDelay, "shutdown-delay", 0, "on SIGTERM or SIGINT, how long to report NOT_SERVING before the drain starts, so that load balancers and clients stop sending first")
	fs.DurationVar(&raw.joinTimeout, "join-timeout", time.Minute, "give up and exit when no seed answered within this `duration`; 0 waits forever")
	fs.IntVar(&raw.maxBatchKeys, "max-batch-keys", 0, "most keys one BatchLookup may carry; 0 for the server's default")
	fs.BoolVar(&raw.reflection, "reflection", true, "serve gRPC server reflection (for grpcurl)")
	if app.Flags != nil {
		app.Flags(fs)
	}
	return fs
}

// rawOptions hold the flag values as parsed, before checking.
type rawOptions struct {
	config, nodeID, cluster                       string
	shards, weight, maxBatchKeys                  int
	gossipAddr, gossipAdvertise                   string
	grpcAddr, grpcAdvertise, httpAddr             string
	seeds, voters, dataDir, profile, zone         string
	init, noShards, reflection                    bool
	leaseDuration, drainTimeout, joinTimeout      time.Duration
	shutdownDelay                                 time.Duration
	tlsCert, tlsKey, tlsClientCA, tlsCA           string
	gossipKey, gossipKeyFile, logLevel, logFormat string
}

// loadOptions merges args, the environment (through getenv) and the config
// file they name, and checks the result; the application's flags get
// their values the same way (App.Start checks them). Every error names
// the flag it is about and is a *usageError, or flag.ErrHelp for -h.
func loadOptions(app App, args []string, getenv func(string) (string, bool)) (options, error) {
	var raw rawOptions
	fs := flagSet(app, &raw)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return options{}, err
		}
		return options{}, &usageError{err}
	}
	if fs.NArg() > 0 {
		return options{}, usagef("unexpected argument %q: %s takes flags only", fs.Arg(0), app.name())
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })

	if !onCommandLine["config"] {
		if v, ok := getenv(envName("config")); ok {
			raw.config = v
		}
	}
	var file map[string]string
	if raw.config != "" {
		var err error
		if file, err = readConfigFile(raw.config, fs); err != nil {
			return options{}, err
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || onCommandLine[f.Name] || f.Name == "config" {
			return
		}
		if v, ok := getenv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s=%q: invalid value for -%s: %v", envName(f.Name), v, f.Name, e)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usagef("%s: %q: invalid value %q: %v", raw.config, f.Name, v, e)
			}
		}
	})
	if err != nil {
		return options{}, err
	}
	return raw.check()
}

// readConfigFile reads a JSON object whose keys are flag names. Values may
// be strings, numbers, booleans or arrays of strings (joined with commas,
// for -seeds, -voters and -gossip-key).
func readConfigFile(path string, fs *flag.FlagSet) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usagef("-config: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return nil, usagef("-config %s: not a JSON object: %v", path, err)
	}
	if dec.More() {
		return nil, usagef("-config %s: data after the JSON object", path)
	}
	out := make(map[string]string, len(obj))
	for k, v := range obj {
		if k == "config" || fs.Lookup(k) == nil {
			return nil, usagef("-config %s: unknown setting %q (keys are flag names, such as \"node-id\")", path, k)
		}
		s, err := configValue(v)
		if err != nil {
			return nil, usagef("-config %s: %q: %v", path, k, err)
		}
		out[k] = s
	}
	return out, nil
}

func configValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				return "", fmt.Errorf("element %d of the array is %T, want a string", i, e)
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("element %d of the array (%q) contains a comma", i, s)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or array of strings, got %T", v)
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// check turns raw values into options, naming the flag of the first
// problem it finds.
func (r rawOptions) check() (options, error) {
	o := options{
		NodeID: r.nodeID, Cluster: r.cluster, Shards: r.shards,
		GossipAdvertise: r.gossipAdvertise,
		HTTPAddr:        r.httpAddr,
		DataDir:         r.dataDir, Init: r.init, Zone: r.zone, Weight: r.weight, NoShards: r.noShards,
		LeaseDuration: r.leaseDuration,
		TLSCert:       r.tlsCert, TLSKey: r.tlsKey, TLSClientCA: r.tlsClientCA, TLSCA: r.tlsCA,
		LogFormat:    r.logFormat,
		DrainTimeout: r.drainTimeout, JoinTimeout: r.joinTimeout, ShutdownDelay: r.shutdownDelay,
		MaxBatchKeys: r.maxBatchKeys, Reflection: r.reflection,
	}
	var err error
	if !nodeIDPattern.MatchString(o.NodeID) {
		return o, usagef("-node-id %q must be 1-64 characters from [A-Za-z0-9._-] starting with a letter or digit", o.NodeID)
	}
	if o.Cluster == "" || len(o.Cluster) > 64 {
		return o, usagef("-cluster must be 1-64 bytes, got %q", o.Cluster)
	}
	if o.Shards < 1 || o.Shards > shard.MaxShards {
		if o.Shards == 0 {
			return o, usagef("-shards is required: the number of shards, the same on every node of the cluster")
		}
		return o, usagef("-shards must be in [1, %d], got %d", shard.MaxShards, o.Shards)
	}
	if o.GossipAddr, err = parseAddr(r.gossipAddr, defaultGossipPort); err != nil {
		return o, usagef("-gossip-addr: %v", err)
	}
	if o.GossipAdvertise != "" {
		host, _, err := splitHostPort(o.GossipAdvertise)
		if err != nil {
			return o, usagef("-gossip-advertise: %v", err)
		}
		if net.ParseIP(host) == nil {
			return o, usagef("-gossip-advertise %q must be an IP address and port (gossip advertises addresses, not names)", o.GossipAdvertise)
		}
	}
	if o.GRPCAddr, err = parseAddr(r.grpcAddr, defaultGRPCPort); err != nil {
		return o, usagef("-grpc-addr: %v", err)
	}
	if r.grpcAdvertise != "" {
		if o.GRPCAdvertise, err = parseAddr(r.grpcAdvertise, 0); err != nil {
			return o, usagef("-grpc-advertise: %v", err)
		}
		if isWildcard(o.GRPCAdvertise) {
			return o, usagef("-grpc-advertise %q must be an address others can dial, not a wildcard", o.GRPCAdvertise)
		}
	}
	if o.HTTPAddr != "" {
		if o.HTTPAddr, err = parseAddr(o.HTTPAddr, defaultHTTPPort); err != nil {
			return o, usagef("-http-addr: %v", err)
		}
	}
	_, gossipPort, _ := splitHostPort(o.GossipAddr)
	if o.Seeds, err = parseSeeds(r.seeds, gossipPort); err != nil {
		return o, usagef("-seeds: %v", err)
	}
	if o.Voters, err = parseVoters(r.voters); err != nil {
		return o, usagef("-voters: %v", err)
	}
	if len(o.Voters) == 0 && !o.NoShards {
		return o, usagef("-voters is required: without voters no node can lead a shard (use -no-shards for a lookup-only member)")
	}
	me := slices.IndexFunc(o.Voters, func(v shard.VoterAddr) bool { return v.ID == o.NodeID })
	if o.GRPCAdvertise == "" {
		switch {
		case me >= 0:
			// A voter is dialled at its -voters address: advertising
			// anything else would give peers two names for one server.
			o.GRPCAdvertise = o.Voters[me].Addr
		case !isWildcard(o.GRPCAddr):
			o.GRPCAdvertise = o.GRPCAddr
		default:
			return o, usagef("-grpc-advertise is required when -grpc-addr (%s) binds every interface: clients and peers need an address to dial", o.GRPCAddr)
		}
	}
	if me >= 0 && o.Voters[me].Addr != o.GRPCAdvertise {
		return o, usagef("-grpc-advertise %s differs from this node's address in -voters (%s=%s): peers reach the voter at the latter", o.GRPCAdvertise, o.NodeID, o.Voters[me].Addr)
	}
	if me >= 0 && o.DataDir == "" {
		return o, usagef("-data-dir is required: node %s is a voter (listed in -voters) and keeps its records there", o.NodeID)
	}
	if me < 0 && o.Init {
		return o, usagef("-init creates a voter store, but node %s is not listed in -voters", o.NodeID)
	}
	if o.Profile, err = membership.ParseProfile(r.profile); err != nil {
		return o, usagef("-profile %q: want lan, wan or local", r.profile)
	}
	if len(o.Zone) > 64 {
		return o, usagef("-zone is %d bytes, limit 64", len(o.Zone))
	}
	if o.Weight < 1 || o.Weight > 1<<16 {
		return o, usagef("-weight must be in [1, %d], got %d (use -no-shards for a node that leads nothing)", 1<<16, o.Weight)
	}
	if o.LeaseDuration < 100*time.Millisecond || o.LeaseDuration > 10*time.Minute {
		return o, usagef("-lease-duration must be in [100ms, 10m], got %v", o.LeaseDuration)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return o, usagef("-tls-cert and -tls-key go together: got only %s", map[bool]string{true: "-tls-key", false: "-tls-cert"}[o.TLSCert == ""])
	}
	if o.TLSCert == "" && (o.TLSClientCA != "" || o.TLSCA != "") {
		return o, usagef("-tls-client-ca and -tls-ca need -tls-cert and -tls-key: without a certificate the node serves plaintext")
	}
	if r.gossipKey != "" && r.gossipKeyFile != "" {
		return o, usagef("-gossip-key and -gossip-key-file are exclusive")
	}
	keys := r.gossipKey
	if r.gossipKeyFile != "" {
		b, err := os.ReadFile(r.gossipKeyFile)
		if err != nil {
			return o, usagef("-gossip-key-file: %v", err)
		}
		keys = strings.TrimSpace(string(b))
	}
	if o.GossipKeys, err = parseGossipKeys(keys); err != nil {
		name := "-gossip-key"
		if r.gossipKeyFile != "" {
			name = "-gossip-key-file " + r.gossipKeyFile
		}
		return o, usagef("%s: %v", name, err)
	}
	if err := o.LogLevel.UnmarshalText([]byte(r.logLevel)); err != nil {
		return o, usagef("-log-level %q: want debug, info, warn or error", r.logLevel)
	}
	if o.LogFormat != "text" && o.LogFormat != "json" {
		return o, usagef("-log-format %q: want text or json", o.LogFormat)
	}
	if o.ShutdownDelay < 0 {
		return o, usagef("-shutdown-delay must not be negative, got %v", o.ShutdownDelay)
	}
	if o.DrainTimeout <= 0 {
		return o, usagef("-drain-timeout must be positive, got %v", o.DrainTimeout)
	}
	if o.JoinTimeout < 0 {
		return o, usagef("-join-timeout must not be negative, got %v (0 waits forever)", o.JoinTimeout)
	}
	if o.MaxBatchKeys < 0 {
		return o, usagef("-max-batch-keys must not be negative, got %d", o.MaxBatchKeys)
	}
	if o.DataDir != "" {
		o.DataDir = filepath.Clean(o.DataDir)
	}
	return o, nil
}

// splitHostPort splits a host:port with a numeric port in [0, 65535].
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q has an invalid port %q", s, p)
	}
	if strings.ContainsAny(host, " \t\r\n,/") {
		return "", 0, fmt.Errorf("%q has an invalid host %q", s, host)
	}
	return host, int(port), nil
}

// parseAddr checks a bind or advertise address. ":port" binds every
// interface; a missing port takes defaultPort when it is not zero.
func parseAddr(s string, defaultPort int) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty address")
	}
	if defaultPort != 0 {
		s = withDefaultPort(s, defaultPort)
	}
	host, port, err := splitHostPort(s)
	if err != nil {
		return "", err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// withDefaultPort appends port to s when s is a host without one: a name,
// an IPv4 address, a bare IPv6 address or a bracketed one.
func withDefaultPort(s string, port int) string {
	switch {
	case strings.HasPrefix(s, "["):
		if strings.Contains(s, "]:") {
			return s
		}
		return net.JoinHostPort(strings.Trim(s, "[]"), strconv.Itoa(port))
	case strings.Count(s, ":") == 1:
		return s
	case strings.Contains(s, ":") && net.ParseIP(s) == nil:
		return s // not an IPv6 address: let the split report it
	}
	return net.JoinHostPort(s, strconv.Itoa(port))
}

// isWildcard reports whether addr's host is empty or an unspecified IP.
func isWildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// parseSeeds parses a comma-separated list of gossip seeds. A seed without
// a port takes defaultPort. Names stay names: memberlist resolves them on
// every join attempt (to every address they have), so a DNS record that
// lists the cluster's nodes keeps working as they come and go.
func parseSeeds(s string, defaultPort int) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		host, port, err := splitHostPort(withDefaultPort(part, defaultPort))
		if err != nil {
			return nil, fmt.Errorf("seed %d: %w", i+1, err)
		}
		if host == "" || port == 0 {
			return nil, fmt.Errorf("seed %d (%q) needs a host and a non-zero port", i+1, part)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("seed %d (%q) is a wildcard address, which cannot be dialled", i+1, part)
		}
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	return out, nil
}

// parseVoters parses "id=host:port,id=host:port". IDs and addresses must be
// unique; the count (1, 3 or 5) is checked here too, so the error names
// the flag.
func parseVoters(s string) ([]shard.VoterAddr, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []shard.VoterAddr
	ids, addrs := map[string]bool{}, map[string]bool{}
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		id, addr, ok := strings.Cut(part, "=")
		id, addr = strings.TrimSpace(id), strings.TrimSpace(addr)
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("voter %d (%q) is not id=host:port", i+1, part)
		}
		if !nodeIDPattern.MatchString(id) {
			return nil, fmt.Errorf("voter %d: ID %q must be 1-64 characters from [A-Za-z0-9._-] starting with a letter or digit", i+1, id)
		}
		host, port, err := splitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("voter %s: %w", id, err)
		}
		if host == "" || port == 0 {
			return nil, fmt.Errorf("voter %s: %q needs a host and a non-zero port", id, addr)
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return nil, fmt.Errorf("voter %s: %q is a wildcard address, which cannot be dialled", id, addr)
		}
		addr = net.JoinHostPort(host, strconv.Itoa(port))
		if ids[id] {
			return nil, fmt.Errorf("voter %s is listed twice", id)
		}
		if addrs[addr] {
			return nil, fmt.Errorf("voter %s: address %s is listed twice", id, addr)
		}
		ids[id], addrs[addr] = true, true
		out = append(out, shard.VoterAddr{ID: id, Addr: addr})
	}
	if n := len(out); n != 1 && n != 3 && n != 5 {
		return nil, fmt.Errorf("want 1, 3 or 5 voters, got %d: an even count adds no fault tolerance and more than 5 slows every grant", n)
	}
	return out, nil
}

// parseGossipKeys parses comma-separated base64 (standard or URL alphabet,
// padded or not) keys of 16, 24 or 32 bytes.
func parseGossipKeys(s string) ([][]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out [][]byte
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var k []byte
		var err error
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if k, err = enc.DecodeString(part); err == nil {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("key %d is not base64", i+1)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("key %d is %d bytes, want 16, 24 or 32 (AES-128, -192 or -256)", i+1, n)
		}
		out = append(out, k)
	}
	return out, nil
}

// tenuredAbout is what tenured does, for the usage.
const tenuredAbout = `tenured runs one Tenure node: gossip membership, leases on the shards it
should lead, the tenure.v1 gRPC API for clients and tenurectl, gRPC health
and reflection, and HTTP /metrics, /status, /healthz and /readyz.`

// printUsage writes the synopsis, the flags and the exit codes to w.
func printUsage(w io.Writer, app App) {
	fs := flagSet(app, new(rawOptions))
	fs.SetOutput(w)
	about := app.About
	if about == "" {
		about = tenuredAbout
	}
	fmt.Fprintf(w, "Usage: %s -shards P -voters id=host:port,... [flags]\n\n%s\n\n", app.name(), strings.TrimSpace(about))
	fmt.Fprint(w, `Every flag can also be set with an environment variable, TENURE_ and the
flag name in upper case with '-' as '_' (-node-id: TENURE_NODE_ID), or in
the JSON file of -config, keyed by flag name. Flags beat the environment,
which beats the file.

On SIGTERM or SIGINT the node drains (hands its shards off, leaves gossip)
for at most -drain-timeout and exits 0; a second signal exits at once.

Flags:
`)
	fs.PrintDefaults()
	fmt.Fprint(w, exitCodesHelp)
}

const exitCodesHelp = `
Exit codes:
  0  stopped after a signal and a drain
  1  runtime failure (a listener, the node or a forced exit on a second signal)
  2  bad flags, environment or config file
  3  data directory or voter store problem (unwritable, missing store without -init, -init over a store,
     -init where a store was lost, a damaged store)
  4  no seed answered within -join-timeout (wrong address, firewall, or another gossip key)
  5  refused by the cluster: another shard count, cluster name or protocol version
`
