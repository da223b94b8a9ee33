package daemon

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenurehq/tenure/membership"
	"github.com/tenurehq/tenure/shard"
)

// base are flags that make a valid voter configuration.
var base = []string{
	"-node-id", "n1", "-shards", "64",
	"-voters", "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003",
	"-data-dir", "/var/lib/tenure",
}

func noEnv(string) (string, bool) { return "", false }

func envOf(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOptionsDefaults(t *testing.T) {
	o, err := loadOptions(App{}, base, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := options{
		NodeID: "n1", Cluster: "tenure", Shards: 64,
		GossipAddr: "0.0.0.0:7946", GRPCAddr: "0.0.0.0:7000", GRPCAdvertise: "127.0.0.1:7001", HTTPAddr: "0.0.0.0:7080",
		Voters:  []shard.VoterAddr{{ID: "n1", Addr: "127.0.0.1:7001"}, {ID: "n2", Addr: "127.0.0.1:7002"}, {ID: "n3", Addr: "127.0.0.1:7003"}},
		DataDir: "/var/lib/tenure", Profile: membership.LAN, Weight: 1, LeaseDuration: time.Second,
		LogFormat: "text", DrainTimeout: 30 * time.Second, JoinTimeout: time.Minute, Reflection: true,
	}
	if !equalOptions(o, want) {
		t.Errorf("loadOptions(App{}, base) =\n%+v\nwant\n%+v", o, want)
	}
}

func equalOptions(a, b options) bool {
	return slices.Equal(a.Voters, b.Voters) && slices.Equal(a.Seeds, b.Seeds) &&
		slices.EqualFunc(a.GossipKeys, b.GossipKeys, bytes.Equal) &&
		a.NodeID == b.NodeID && a.Cluster == b.Cluster && a.Shards == b.Shards &&
		a.GossipAddr == b.GossipAddr && a.GossipAdvertise == b.GossipAdvertise &&
		a.GRPCAddr == b.GRPCAddr && a.GRPCAdvertise == b.GRPCAdvertise && a.HTTPAddr == b.HTTPAddr &&
		a.DataDir == b.DataDir && a.Init == b.Init && a.Profile == b.Profile && a.Zone == b.Zone &&
		a.Weight == b.Weight && a.NoShards == b.NoShards && a.LeaseDuration == b.LeaseDuration &&
		a.TLSCert == b.TLSCert && a.TLSKey == b.TLSKey && a.TLSClientCA == b.TLSClientCA && a.TLSCA == b.TLSCA &&
		a.LogLevel == b.LogLevel && a.LogFormat == b.LogFormat && a.DrainTimeout == b.DrainTimeout &&
		a.JoinTimeout == b.JoinTimeout && a.MaxBatchKeys == b.MaxBatchKeys && a.Reflection == b.Reflection
}

// TestLoadOptionsPrecedence: a flag beats the environment, which beats
// the config file, which beats the default.
func TestLoadOptionsPrecedence(t *testing.T) {
	file := writeFile(t, "tenured.json", `{
		"zone": "from-file", "weight": 3, "cluster": "from-file", "profile": "wan",
		"seeds": ["10.0.0.1:7946", "10.0.0.2"], "lease-duration": "2s", "reflection": false
	}`)
	env := envOf(map[string]string{
		"TENURE_CONFIG":  file,
		"TENURE_WEIGHT":  "5",
		"TENURE_CLUSTER": "from-env",
		"TENURE_PROFILE": "local",
	})
	o, err := loadOptions(App{}, append(slices.Clone(base), "-profile", "lan"), env)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"zone from the file", o.Zone, "from-file"},
		{"weight from the environment over the file", o.Weight, 5},
		{"cluster from the environment over the file", o.Cluster, "from-env"},
		{"profile from the flag over both", o.Profile, membership.LAN},
		{"seeds from the file, default port added", strings.Join(o.Seeds, ","), "10.0.0.1:7946,10.0.0.2:7946"},
		{"lease from the file", o.LeaseDuration, 2 * time.Second},
		{"boolean from the file", o.Reflection, false},
		{"shards from the flag", o.Shards, 64},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

// TestLoadOptionsErrorsNameTheFlag: every mistake is reported against the
// flag (or variable, or file key) that holds it.
func TestLoadOptionsErrorsNameTheFlag(t *testing.T) {
	without := func(flagName string) []string {
		var out []string
		for i := 0; i < len(base); i += 2 {
			if base[i] != flagName {
				out = append(out, base[i], base[i+1])
			}
		}
		return out
	}
	with := func(extra ...string) []string { return append(slices.Clone(base), extra...) }
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string // config file content, passed with -config
		want string
	}{
		{name: "shards missing", args: without("-shards"), want: "-shards is required"},
		{name: "shards not a number", args: with("-shards", "many"), want: "-shards"},
		{name: "shards too many", args: with("-shards", "2000000"), want: "-shards must be in"},
		{name: "node id", args: with("-node-id", "bad id"), want: "-node-id"},
		{name: "voters missing", args: without("-voters"), want: "-voters is required"},
		{name: "voter without address", args: with("-voters", "n1"), want: "-voters: voter 1"},
		{name: "voter repeated", args: with("-voters", "n1=a:1,n1=b:1,n3=c:1"), want: "voter n1 is listed twice"},
		{name: "voter address repeated", args: with("-voters", "n1=a:1,n2=a:1,n3=c:1"), want: "address a:1 is listed twice"},
		{name: "even voters", args: with("-voters", "n1=a:1,n2=b:1"), want: "want 1, 3 or 5 voters"},
		{name: "voter bad port", args: with("-voters", "n1=a:99999"), want: "-voters: voter n1"},
		{name: "voter without data dir", args: without("-data-dir"), want: "-data-dir is required"},
		{name: "init on a non-voter", args: with("-node-id", "n9", "-grpc-advertise", "10.0.0.9:7000", "-init"), want: "-init creates a voter store"},
		{name: "advertise differs from voter entry", args: with("-grpc-advertise", "10.0.0.1:7000"), want: "differs from this node's address in -voters"},
		{name: "wildcard without advertise", args: with("-node-id", "n9"), want: "-grpc-advertise is required"},
		{name: "wildcard advertise", args: with("-grpc-advertise", "0.0.0.0:7000"), want: "-grpc-advertise"},
		{name: "gossip advertise is a name", args: with("-gossip-advertise", "host.example:7946"), want: "-gossip-advertise"},
		{name: "gossip addr", args: with("-gossip-addr", "a:b:c"), want: "-gossip-addr"},
		{name: "seed bad port", args: with("-seeds", "a:1,b:x"), want: "-seeds: seed 2"},
		{name: "seed wildcard", args: with("-seeds", "0.0.0.0:7946"), want: "-seeds"},
		{name: "profile", args: with("-profile", "fast"), want: "-profile"},
		{name: "weight", args: with("-weight", "0"), want: "-weight"},
		{name: "lease", args: with("-lease-duration", "10ms"), want: "-lease-duration"},
		{name: "tls cert without key", args: with("-tls-cert", "c.pem"), want: "-tls-cert and -tls-key"},
		{name: "client ca without cert", args: with("-tls-client-ca", "ca.pem"), want: "-tls-client-ca"},
		{name: "gossip key not base64", args: with("-gossip-key", "!!!"), want: "-gossip-key: key 1 is not base64"},
		{name: "gossip key length", args: with("-gossip-key", "AAAA"), want: "-gossip-key: key 1 is 3 bytes"},
		{name: "log level", args: with("-log-level", "loud"), want: "-log-level"},
		{name: "log format", args: with("-log-format", "xml"), want: "-log-format"},
		{name: "drain timeout", args: with("-drain-timeout", "0s"), want: "-drain-timeout"},
		{name: "join timeout", args: with("-join-timeout", "-1s"), want: "-join-timeout"},
		{name: "unknown flag", args: with("-shard", "3"), want: "-shard"},
		{name: "positional argument", args: with("extra"), want: `unexpected argument "extra"`},
		{name: "environment", args: base, env: map[string]string{"TENURE_LEASE_DURATION": "soon"}, want: "TENURE_LEASE_DURATION"},
		{name: "file unknown key", args: base, file: `{"shard": 3}`, want: `unknown setting "shard"`},
		{name: "file bad value", args: base, file: `{"weight": "heavy"}`, want: `"weight": invalid value`},
		{name: "file not json", args: base, file: `shards = 3`, want: "not a JSON object"},
		{name: "file array of numbers", args: base, file: `{"seeds": [1, 2]}`, want: `"seeds"`},
		{name: "file trailing data", args: base, file: `{} {}`, want: "data after the JSON object"},
		{name: "file object value", args: base, file: `{"zone": {"a": 1}}`, want: `"zone"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append(slices.Clone(args), "-config", writeFile(t, "c.json", tt.file))
			}
			_, err := loadOptions(App{}, args, envOf(tt.env))
			if err == nil {
				t.Fatalf("loadOptions(App{}, %q) = nil error, want one saying %q", args, tt.want)
			}
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Errorf("error %v is not a *usageError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not say %q", err, tt.want)
			}
		})
	}
}

func TestLoadOptionsHelp(t *testing.T) {
	if _, err := loadOptions(App{}, []string{"-h"}, noEnv); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	var b bytes.Buffer
	printUsage(&b, App{})
	for _, want := range []string{"-node-id", "-voters", "TENURE_NODE_ID", "Exit codes", "4  no seed answered"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q", want)
		}
	}
}

func TestGossipKeyFile(t *testing.T) {
	key := "MDEyMzQ1Njc4OWFiY2RlZg==" // "0123456789abcdef"
	f := writeFile(t, "key", key+"\n")
	o, err := loadOptions(App{}, append(slices.Clone(base), "-gossip-key-file", f), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.GossipKeys) != 1 || len(o.GossipKeys[0]) != 16 {
		t.Fatalf("keys = %q, want one of 16 bytes", o.GossipKeys)
	}
	if _, err := loadOptions(App{}, append(slices.Clone(base), "-gossip-key-file", f, "-gossip-key", key), noEnv); err == nil {
		t.Error("-gossip-key with -gossip-key-file accepted")
	}
}

func TestParseSeeds(t *testing.T) {
	tests := []struct {
		name, give string
		want       []string
	}{
		{name: "empty", give: "", want: nil},
		{name: "host and port", give: "10.0.0.1:7000", want: []string{"10.0.0.1:7000"}},
		{name: "default port", give: "10.0.0.1", want: []string{"10.0.0.1:7946"}},
		{name: "dns name", give: "tenure.svc.cluster.local", want: []string{"tenure.svc.cluster.local:7946"}},
		{name: "bare ipv6", give: "::1", want: []string{"[::1]:7946"}},
		{name: "bracketed ipv6", give: "[::1]", want: []string{"[::1]:7946"}},
		{name: "ipv6 with port", give: "[::1]:9", want: []string{"[::1]:9"}},
		{name: "spaces and duplicates", give: " a:1 , a:1,,b ", want: []string{"a:1", "b:7946"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSeeds(tt.give, 7946)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseSeeds(%q) = %q, want %q", tt.give, got, tt.want)
			}
		})
	}
}

// FuzzParseVoters: any input either fails or gives 1, 3 or 5 voters with
// unique valid IDs and unique dialable addresses.
func FuzzParseVoters(f *testing.F) {
	for _, s := range []string{"n1=a:1", "n1=a:1,n2=b:2,n3=c:3", "n1=[::1]:7000", "=", "n1=a:1,n1=a:1,x=y:z", " n1 = a:1 ", "n1=0.0.0.0:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		vs, err := parseVoters(s)
		if err != nil {
			return
		}
		if n := len(vs); n != 0 && n != 1 && n != 3 && n != 5 {
			t.Fatalf("parseVoters(%q) gave %d voters", s, n)
		}
		ids, addrs := map[string]bool{}, map[string]bool{}
		for _, v := range vs {
			if !nodeIDPattern.MatchString(v.ID) || ids[v.ID] || addrs[v.Addr] {
				t.Fatalf("parseVoters(%q) gave a bad or repeated voter %+v", s, v)
			}
			ids[v.ID], addrs[v.Addr] = true, true
			if host, port, err := splitHostPort(v.Addr); err != nil || host == "" || port == 0 {
				t.Fatalf("parseVoters(%q) gave address %q: %v", s, v.Addr, err)
			}
		}
	})
}

// FuzzParseSeeds: every seed parsed is a host:port with a non-zero port,
// and parsing the output again gives it back unchanged.
func FuzzParseSeeds(f *testing.F) {
	for _, s := range []string{"a:1,b", "::1", "[::1]:7", "[::1", "a:b:c", " , ", "x:0", "host.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seeds, err := parseSeeds(s, 7946)
		if err != nil {
			return
		}
		for _, a := range seeds {
			if host, port, err := splitHostPort(a); err != nil || host == "" || port == 0 {
				t.Fatalf("parseSeeds(%q) gave %q: %v", s, a, err)
			}
		}
		again, err := parseSeeds(strings.Join(seeds, ","), 7946)
		if err != nil || !slices.Equal(again, seeds) {
			t.Fatalf("parseSeeds is not idempotent on %q: %q then %q (%v)", s, seeds, again, err)
		}
	})
}

// FuzzParseGossipKeys: every key accepted is 16, 24 or 32 bytes.
func FuzzParseGossipKeys(f *testing.F) {
	for _, s := range []string{"AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAA", "a,b", "", "-_-_-_-_-_-_-_-_-_-_-_==", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := parseGossipKeys(s)
		if err != nil {
			return
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("parseGossipKeys(%q) gave a key of %d bytes", s, n)
			}
		}
	})
}

// FuzzParseAddr: an accepted bind address always splits into host and
// port again.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{":7000", "0.0.0.0:1", "host", "[::]:7", "::", "a:b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAddr(s, 7000)
		if err != nil {
			return
		}
		if _, _, err := splitHostPort(a); err != nil {
			t.Fatalf("parseAddr(%q) = %q, which does not split: %v", s, a, err)
		}
	})
}

// FuzzLoadOptions drives the whole path with a config file and an
// environment variable: it must never panic, and every error must be a
// *usageError.
func FuzzLoadOptions(f *testing.F) {
	f.Add(`{"zone": "z", "seeds": ["a:1"]}`, "TENURE_WEIGHT", "2")
	f.Add(`{"voters": "n1=a:1"}`, "TENURE_SEEDS", "x,y:2")
	f.Add(`[]`, "TENURE_GOSSIP_KEY", "AAAAAAAAAAAAAAAAAAAAAA==")
	f.Add(`{"shards": 1e400}`, "TENURE_SHARDS", "-1")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file, envKey, envVal string) {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadOptions(App{}, append(slices.Clone(base), "-config", p), envOf(map[string]string{envKey: envVal}))
		var ue *usageError
		if err != nil && !errors.As(err, &ue) {
			t.Fatalf("error %v is not a *usageError", err)
		}
	})
}

// TestExampleConfig: the example config file in deploy/ loads, with the
// environment supplying what differs per host and a flag for the first
// start.
func TestExampleConfig(t *testing.T) {
	key := writeFile(t, "gossip.key", "MDEyMzQ1Njc4OWFiY2RlZg==\n")
	env := envOf(map[string]string{
		"TENURE_CONFIG":          "../deploy/tenured/tenured.example.json",
		"TENURE_NODE_ID":         "n2",
		"TENURE_GOSSIP_KEY_FILE": key,
	})
	o, err := loadOptions(App{}, []string{"-init"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if o.NodeID != "n2" || o.GRPCAdvertise != "tenure-1.tenure.svc:7000" || len(o.Seeds) != 3 || o.Shards != 1024 || !o.Init || o.LogFormat != "json" || len(o.GossipKeys) != 1 {
		t.Errorf("options = %+v", o)
	}
}
