package membership

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"regexp"
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile selects gossip timing. Failure detection is a trade-off between
// speed and false suspicion under load; Tenure's leases, not gossip, bound
// failover, so the LAN default is memberlist's own.
type Profile uint8

// The profiles. Detection times are medians for a crashed node in a 5-node
// cluster on loopback; see the README for the command that measures them.
const (
	// LAN is memberlist's LAN configuration (probe every 1 s, suspicion
	// multiplier 4): detection takes several seconds. The default.
	LAN Profile = iota
	// WAN is memberlist's WAN configuration: slower probes and longer
	// timeouts for links with high or variable latency.
	WAN
	// Local is tuned for one host or one rack (probe every 100 ms, timeout
	// 50 ms, suspicion multiplier 2, gossip every 50 ms, push/pull every
	// 2 s, gossip to dead nodes for 1 s): detection in well
	// under a second, at the cost of more traffic and more false suspicion
	// on a loaded machine. Tests and the demo use it.
	Local
)

func (p Profile) String() string {
	switch p {
	case LAN:
		return "lan"
	case WAN:
		return "wan"
	case Local:
		return "local"
	}
	return fmt.Sprintf("Profile(%d)", uint8(p))
}

// ParseProfile returns the profile named s ("lan", "wan" or "local").
func ParseProfile(s string) (Profile, error) {
	for _, p := range []Profile{LAN, WAN, Local} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("membership: unknown profile %q (want lan, wan or local)", s)
}

// DefaultCluster is the cluster name used when Config.Cluster is empty.
const DefaultCluster = "tenure"

// Config configures a Membership. Start copies it and fills defaults; it
// never modifies the caller's value.
type Config struct {
	// NodeID is the node's stable name: 1–64 characters from [A-Za-z0-9._-],
	// starting with a letter or digit. Required.
	NodeID string
	// Cluster is the cluster name. Nodes of different clusters refuse each
	// other. Default "tenure".
	Cluster string
	// Shards is the cluster's shard count P, fixed for its life. Nodes with
	// a different P refuse each other. Required, ≥ 1.
	Shards int

	// BindAddr is the host:port gossip listens on, UDP and TCP. Port 0
	// picks a free port (see Membership.Addr). Default "0.0.0.0:7946".
	BindAddr string
	// AdvertiseAddr is the host:port peers should use, when it differs from
	// BindAddr (NAT, containers). Default: derived from BindAddr.
	AdvertiseAddr string
	// Seeds are host:port (or DNS name:port) addresses of nodes to join.
	// Empty, or unreachable, starts a new cluster; seeds keep being tried
	// every RejoinInterval, so nodes started in any order find each other.
	Seeds []string

	// GRPCAddr is the address of this node's gRPC service, advertised to
	// peers and clients. Optional.
	GRPCAddr string
	// Zone is the node's failure domain. Optional.
	Zone string
	// Weight is the node's relative capacity. Default 1 when zero.
	Weight int
	// NoShards makes the node own no shards (advertised weight 0), for
	// example a dedicated voter.
	NoShards bool
	// Voter marks the node as one of the configured voters.
	Voter bool
	// State is the state the node starts in. Default Active.
	State State
	// Incarnation is advertised in the metadata: larger for every start of
	// a process under NodeID (a start timestamp will do). Optional.
	Incarnation uint64
	// VoterSet is lease.VoterSetID of the cluster's configured voters,
	// advertised in the metadata: a peer that advertises another set is
	// refused (IncompatibleError, field "voter set"). 0 checks nothing.
	VoterSet uint64

	// Profile selects gossip timing. Default LAN.
	Profile Profile
	// SecretKeys enables gossip encryption (AES-GCM). The first key
	// encrypts; every key decrypts, which allows rotation. Each key is 16,
	// 24 or 32 bytes. A node without a shared key cannot join.
	SecretKeys [][]byte

	// RejoinInterval is how often the node tries to join seeds and failed
	// peers that are not in its view. memberlist never re-merges a healed
	// partition by itself; this bounds how long two sides stay apart after
	// the network heals. Default per profile: LAN 5 s, WAN 30 s, Local 500 ms.
	RejoinInterval time.Duration
	// RejoinWindow is how long a failed peer stays a rejoin target. A
	// partition that lasts longer heals only through seeds. Default 1 h.
	RejoinWindow time.Duration
	// DeadNodeReclaimTime is how long a dead node's name stays tied to its
	// old address; after it, a node restarted under the same name at a new
	// address is accepted. Default per profile: LAN 2 s, WAN 10 s, Local 200 ms.
	DeadNodeReclaimTime time.Duration

	// Logger receives membership and memberlist logs. Default: discard.
	Logger *slog.Logger
	// Rand supplies rejoin jitter and target choice. Default: seeded from
	// the runtime. Not safe for concurrent use: give each node its own.
	Rand *rand.Rand
	// Transport replaces memberlist's network transport (tests inject
	// faults with membership/faultnet). When set, BindAddr is ignored for
	// binding. Default: a memberlist NetTransport on BindAddr.
	Transport memberlist.Transport
	// BootID overrides the random per-start boot ID. Tests only.
	BootID string
	// Gossip, if set, carries application state through gossip: messages
	// passed to Membership.SendToAll reach every peer's Gossip.NotifyMsg,
	// and push/pull exchanges carry LocalState to peers' MergeRemoteState.
	Gossip StateDelegate
}

// StateDelegate receives application state from gossip. Its methods run on
// memberlist's goroutines, concurrently with each other: they must be safe
// for concurrent use, must not block, and must not call the Membership.
type StateDelegate interface {
	// NotifyMsg receives a peer's message. The slice is the callee's.
	NotifyMsg(msg []byte)
	// LocalState returns this node's state for a push/pull exchange.
	LocalState() []byte
	// MergeRemoteState receives a peer's LocalState. The slice is the
	// callee's.
	MergeRemoteState(state []byte)
}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// withDefaults returns a copy of c with zero fields filled.
func (c Config) withDefaults() Config {
	if c.Cluster == "" {
		c.Cluster = DefaultCluster
	}
	if c.BindAddr == "" {
		c.BindAddr = "0.0.0.0:7946"
	}
	if c.Weight == 0 {
		c.Weight = 1
	}
	if c.State == 0 {
		c.State = Active
	}
	if c.RejoinInterval == 0 {
		c.RejoinInterval = map[Profile]time.Duration{LAN: 5 * time.Second, WAN: 30 * time.Second, Local: 500 * time.Millisecond}[c.Profile]
	}
	if c.RejoinWindow == 0 {
		c.RejoinWindow = time.Hour
	}
	if c.DeadNodeReclaimTime == 0 {
		c.DeadNodeReclaimTime = map[Profile]time.Duration{LAN: 2 * time.Second, WAN: 10 * time.Second, Local: 200 * time.Millisecond}[c.Profile]
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Rand == nil {
		c.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	c.Seeds = append([]string(nil), c.Seeds...)
	c.SecretKeys = append([][]byte(nil), c.SecretKeys...)
	return c
}

// Validate reports the first invalid field of c, after defaults, by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	if !nodeIDPattern.MatchString(c.NodeID) {
		return fmt.Errorf("membership: Config.NodeID %q must be 1–64 characters from [A-Za-z0-9._-] starting with a letter or digit", c.NodeID)
	}
	if c.Shards < 1 || c.Shards > 1<<20 {
		return fmt.Errorf("membership: Config.Shards must be in [1, %d], got %d", 1<<20, c.Shards)
	}
	if len(c.Cluster) > 64 {
		return fmt.Errorf("membership: Config.Cluster is %d bytes, limit 64", len(c.Cluster))
	}
	if _, _, err := splitHostPort(c.BindAddr); err != nil {
		return fmt.Errorf("membership: Config.BindAddr: %w", err)
	}
	if c.AdvertiseAddr != "" {
		host, _, err := splitHostPort(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("membership: Config.AdvertiseAddr: %w", err)
		}
		if net.ParseIP(host) == nil {
			return fmt.Errorf("membership: Config.AdvertiseAddr %q must be an IP address and port", c.AdvertiseAddr)
		}
	}
	for i, s := range c.Seeds {
		if _, _, err := splitHostPort(s); err != nil {
			return fmt.Errorf("membership: Config.Seeds[%d]: %w", i, err)
		}
	}
	if c.Weight < 0 || c.Weight > 1<<16 {
		return fmt.Errorf("membership: Config.Weight must be in [0, %d], got %d", 1<<16, c.Weight)
	}
	if c.State < Joining || c.State > Draining {
		return fmt.Errorf("membership: Config.State %d is not a known state", c.State)
	}
	if c.Profile > Local {
		return fmt.Errorf("membership: Config.Profile %d is not a known profile", c.Profile)
	}
	for i, k := range c.SecretKeys {
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return fmt.Errorf("membership: Config.SecretKeys[%d] is %d bytes, want 16, 24 or 32", i, n)
		}
	}
	if c.RejoinInterval < 10*time.Millisecond {
		return fmt.Errorf("membership: Config.RejoinInterval must be at least 10ms, got %v", c.RejoinInterval)
	}
	if c.RejoinWindow < 0 {
		return fmt.Errorf("membership: Config.RejoinWindow must not be negative, got %v", c.RejoinWindow)
	}
	if c.DeadNodeReclaimTime < 0 {
		return fmt.Errorf("membership: Config.DeadNodeReclaimTime must not be negative, got %v", c.DeadNodeReclaimTime)
	}
	if _, err := c.meta("0123456789abcdef0123456789abcdef").Encode(); err != nil {
		return fmt.Errorf("membership: Config: %w", err)
	}
	return nil
}

// meta returns the metadata c advertises with the given boot ID.
func (c Config) meta(bootID string) Meta {
	weight := uint32(c.Weight)
	if c.NoShards {
		weight = 0
	}
	return Meta{
		NodeID:      c.NodeID,
		BootID:      bootID,
		GRPCAddr:    c.GRPCAddr,
		Zone:        c.Zone,
		Cluster:     c.Cluster,
		Weight:      weight,
		Shards:      uint32(c.Shards),
		Protocol:    ProtocolVersion,
		State:       c.State,
		Voter:       c.Voter,
		Incarnation: c.Incarnation,
		VoterSet:    c.VoterSet,
	}
}

// memberlistConfig translates c (with defaults) into memberlist's config.
func (c Config) memberlistConfig() (*memberlist.Config, error) {
	var mc *memberlist.Config
	switch c.Profile {
	case WAN:
		mc = memberlist.DefaultWANConfig()
	case Local:
		mc = memberlist.DefaultLocalConfig()
		mc.ProbeInterval = 100 * time.Millisecond
		mc.ProbeTimeout = 50 * time.Millisecond
		mc.SuspicionMult = 2
		mc.GossipInterval = 50 * time.Millisecond
		// A missed alive message leaves a node's view stale until the next
		// push/pull; on a busy machine UDP drops them, so retransmit as
		// LAN does and repair sooner.
		mc.RetransmitMult = 4
		mc.PushPullInterval = 2 * time.Second
		// memberlist keeps gossiping to dead nodes for this long, which
		// heals short partitions by itself; the rejoin loop (every 500 ms
		// here) covers the rest, so a long tail of gossip to the dead
		// only costs traffic.
		mc.GossipToTheDeadTime = time.Second
	default:
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = c.NodeID
	host, port, err := splitHostPort(c.BindAddr)
	if err != nil {
		return nil, err
	}
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if c.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitHostPort(c.AdvertiseAddr)
	}
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	if len(c.SecretKeys) > 0 {
		kr, err := memberlist.NewKeyring(c.SecretKeys[1:], c.SecretKeys[0])
		if err != nil {
			return nil, fmt.Errorf("membership: Config.SecretKeys: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Transport = c.Transport
	mc.Logger = nil
	mc.LogOutput = logWriter{logger: c.Logger}
	return mc, nil
}

func splitHostPort(s string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not host:port: %w", s, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%q has an invalid port", s)
	}
	return host, port, nil
}
