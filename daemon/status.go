package daemon

import (
	"cmp"
	"encoding/json"
	"hash/fnv"
	"html/template"
	"net/http"
	"slices"
	"time"

	"github.com/tenurehq/tenure/shard"
)

// statusDoc is what /status shows, as HTML for people and as JSON
// (?format=json) for scripts. Everything in it is this node's view.
type statusDoc struct {
	Node            string         `json:"node"`
	Cluster         string         `json:"cluster"`
	Shards          int            `json:"shards"`
	GRPCAddr        string         `json:"grpc_address"`
	GossipAddr      string         `json:"gossip_address"`
	Ready           bool           `json:"ready"`
	Draining        bool           `json:"draining"`
	RebalancePaused bool           `json:"rebalance_paused"`
	LeaseDuration   string         `json:"lease_duration"`
	Uptime          string         `json:"uptime"`
	Time            time.Time      `json:"time"`
	TableVersion    uint64         `json:"table_version"`
	Led             int            `json:"shards_led"`
	Unled           int            `json:"shards_unled"`
	NotConverging   int            `json:"shards_not_converging"`
	Moving          int            `json:"shards_moving"`
	Leaders         []leaderCount  `json:"leaders"`
	Members         []statusMember `json:"members"`
	Voters          []statusVoter  `json:"voters"`
	Transitions     []statusTrans  `json:"transitions"`
	Plan            []statusMove   `json:"plan"`
	Entries         []statusShard  `json:"entries"`
	LeasesHere      int            `json:"leases_here"`
	colors          map[string]string
}

type leaderCount struct {
	Node    string `json:"node"`
	Led     int    `json:"led"`
	Desired int    `json:"desired"`
	Color   string `json:"-"`
}

type statusMember struct {
	ID         string `json:"node_id"`
	State      string `json:"state"`
	GossipAddr string `json:"gossip_address"`
	GRPCAddr   string `json:"grpc_address"`
	Zone       string `json:"zone,omitempty"`
	Weight     uint32 `json:"weight"`
	Voter      bool   `json:"voter"`
}

type statusVoter struct {
	ID     string `json:"id"`
	Addr   string `json:"address"`
	Member bool   `json:"member"` // alive in this node's gossip view
	// Answered: this node's latest request to the voter was answered;
	// Failures: its requests that failed since this node started.
	Answered bool  `json:"answered"`
	Failures int64 `json:"request_failures"`
}

type statusTrans struct {
	Time   time.Time `json:"time"`
	Shard  uint32    `json:"shard"`
	Epoch  uint64    `json:"epoch"`
	Event  string    `json:"event"`
	Reason string    `json:"reason,omitempty"`
	Peer   string    `json:"peer,omitempty"`
}

type statusMove struct {
	Shard uint32 `json:"shard"`
	From  string `json:"from"`
	To    string `json:"to"`
}

type statusShard struct {
	Shard   uint32 `json:"shard"`
	State   string `json:"state"`
	Leader  string `json:"leader,omitempty"`
	Epoch   uint64 `json:"epoch"`
	Desired string `json:"desired,omitempty"`
	Addr    string `json:"address,omitempty"`
	Color   string `json:"-"`
}

// statusNow collects the document from the node.
func (d *daemon) statusNow() statusDoc {
	n := d.node
	cfg := n.Config()
	doc := statusDoc{
		Node: cfg.NodeID, Cluster: cfg.Cluster, Shards: cfg.Shards,
		GRPCAddr: cfg.GRPCAddr, GossipAddr: n.GossipAddr(),
		Ready: d.ready(), Draining: d.draining.Load(), RebalancePaused: n.RebalancePaused(),
		LeaseDuration: cfg.LeaseDuration.String(),
		Uptime:        time.Since(d.started).Round(time.Second).String(),
		Time:          time.Now().UTC().Round(time.Millisecond),
		LeasesHere:    len(n.Leases()),
		colors:        map[string]string{},
	}
	members := map[string]bool{}
	for _, m := range n.Members() {
		members[m.NodeID] = true
		doc.Members = append(doc.Members, statusMember{
			ID: m.NodeID, State: m.State.String(), GossipAddr: m.Addr, GRPCAddr: m.GRPCAddr,
			Zone: m.Zone, Weight: m.Weight, Voter: m.Voter,
		})
	}
	health := map[string]shard.VoterHealth{}
	for _, h := range n.VoterHealth() {
		health[h.ID] = h
	}
	for _, v := range n.Voters() {
		h := health[v.ID]
		doc.Voters = append(doc.Voters, statusVoter{ID: v.ID, Addr: v.Addr, Member: members[v.ID], Answered: h.Answered, Failures: h.Failures})
	}
	doc.NotConverging = n.NotConverging()
	counts := map[string]*leaderCount{}
	count := func(id string) *leaderCount {
		if counts[id] == nil {
			counts[id] = &leaderCount{Node: id, Color: nodeColor(id)}
		}
		return counts[id]
	}
	if t := n.Table(); t != nil {
		doc.TableVersion = t.Version()
		for _, e := range t.Entries() {
			switch e.State {
			case shard.Led:
				doc.Led++
			case shard.Unled:
				doc.Unled++
			case shard.Moving:
				doc.Moving++
			}
			if e.Leader != "" && e.State != shard.Unled {
				count(e.Leader).Led++
			}
			if e.Desired != "" {
				count(e.Desired).Desired++
			}
			s := statusShard{Shard: uint32(e.Shard), State: e.State.String(), Leader: e.Leader, Epoch: e.Epoch, Desired: e.Desired, Addr: e.Addr}
			if e.State != shard.Unled {
				s.Color = nodeColor(e.Leader)
			}
			doc.Entries = append(doc.Entries, s)
		}
	}
	for _, c := range counts {
		doc.Leaders = append(doc.Leaders, *c)
	}
	slices.SortFunc(doc.Leaders, func(a, b leaderCount) int { return cmp.Compare(a.Node, b.Node) })
	tr := n.Transitions()
	for i := len(tr) - 1; i >= 0; i-- { // newest first
		t := tr[i]
		st := statusTrans{Time: t.Time.UTC().Round(time.Millisecond), Shard: t.Shard, Epoch: t.Epoch, Event: t.Event, Peer: t.Peer}
		if t.Event == "released" {
			st.Reason = t.Reason.String()
		}
		doc.Transitions = append(doc.Transitions, st)
	}
	plan, _ := n.Plan() // empty while the node is not running
	for _, m := range plan {
		doc.Plan = append(doc.Plan, statusMove{Shard: m.Shard, From: m.From, To: m.To})
	}
	return doc
}

// palette holds distinguishable colours for the shard map (Tableau 20).
var palette = []string{
	"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
	"#a0cbe8", "#ffbe7d", "#8cd17d", "#b6992d", "#86bcb6", "#d37295", "#fabfd2", "#d4a6c8", "#79706e", "#499894",
}

// nodeColor gives each node a stable colour on the shard map: the same on
// every node's page and across restarts.
func nodeColor(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return palette[h.Sum32()%uint32(len(palette))]
}

func (d *daemon) serveStatus(w http.ResponseWriter, r *http.Request) {
	doc := d.statusNow()
	switch r.URL.Query().Get("format") {
	case "json":
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(doc); err != nil {
			d.log.Debug("status", "err", err)
		}
	case "", "html":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := statusPage.Execute(w, doc); err != nil {
			d.log.Debug("status", "err", err)
		}
	default:
		http.Error(w, "format must be html or json", http.StatusBadRequest)
	}
}

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5">
<title>Tenure {{.Node}} · {{.Cluster}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; } td, th { padding: 2px 10px; text-align: left; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; } .num { text-align: right; }
.ok { color: #17803d; } .bad { color: #b42318; font-weight: bold; }
.map { display: flex; flex-wrap: wrap; gap: 1px; max-width: 66em; }
.map span { width: 10px; height: 10px; display: inline-block; background: #ccc; }
.map span.unled { background: #fff; outline: 1px solid #b42318; }
.map span.moving { opacity: .5; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
</style></head><body>
<h1>Tenure node {{.Node}} <small>cluster {{.Cluster}}</small></h1>
<p>
{{if .Draining}}<span class="bad">draining</span>{{else if .Ready}}<span class="ok">ready</span>{{else}}<span class="bad">not ready</span> (joining or settling){{end}}
· {{.Shards}} shards: {{.Led}} led, {{if .Unled}}<span class="bad">{{.Unled}} without a leader</span>{{else}}0 without a leader{{end}}, {{.Moving}} moving
· this node leads {{.LeasesHere}}
· rebalancing {{if .RebalancePaused}}<span class="bad">paused</span>{{else}}on{{end}}
· lease {{.LeaseDuration}} · table version {{.TableVersion}} · up {{.Uptime}}
· gRPC {{.GRPCAddr}} · gossip {{.GossipAddr}}
· <a href="?format=json">JSON</a> · <a href="/metrics">metrics</a>
</p>

<h2>Leaders</h2>
<table><tr><th>node</th><th class="num">shards led</th><th class="num">desired</th></tr>
{{range .Leaders}}<tr><td><span class="swatch" style="background: {{.Color}}"></span>{{.Node}}</td><td class="num">{{.Led}}</td><td class="num">{{.Desired}}</td></tr>
{{end}}</table>

<h2>Shard map</h2>
<div class="map">{{range .Entries}}<span class="{{.State}}" {{if .Color}}style="background: {{.Color}}"{{end}} title="shard {{.Shard}}: {{.State}}{{if .Leader}} by {{.Leader}} at epoch {{.Epoch}}{{end}}{{if .Desired}}, desired {{.Desired}}{{end}}"></span>{{end}}</div>
<p><small>One square per shard, coloured by leader; white with a red edge: no leader. Hover for details.</small></p>

<h2>Members</h2>
<table><tr><th>node</th><th>state</th><th>gRPC</th><th>gossip</th><th>zone</th><th class="num">weight</th><th>voter</th></tr>
{{range .Members}}<tr><td>{{.ID}}</td><td>{{.State}}</td><td>{{.GRPCAddr}}</td><td>{{.GossipAddr}}</td><td>{{.Zone}}</td><td class="num">{{.Weight}}</td><td>{{if .Voter}}yes{{end}}</td></tr>
{{end}}</table>

<h2>Voters</h2>
<table><tr><th>voter</th><th>address</th><th>in gossip view</th><th>answers this node</th><th class="num">failed requests</th></tr>
{{range .Voters}}<tr><td>{{.ID}}</td><td>{{.Addr}}</td><td>{{if .Member}}<span class="ok">yes</span>{{else}}<span class="bad">no</span>{{end}}</td><td>{{if .Answered}}<span class="ok">yes</span>{{else}}<span class="bad">no</span>{{end}}</td><td class="num">{{.Failures}}</td></tr>
{{end}}</table>
{{if .NotConverging}}<p class="bad">{{.NotConverging}} shards planned to this node have stayed unled for over 10 s (see the log's warning).</p>{{end}}

<h2>Pending moves</h2>
{{if .Plan}}<table><tr><th class="num">shard</th><th>from</th><th>to</th></tr>
{{range .Plan}}<tr><td class="num">{{.Shard}}</td><td>{{.From}}</td><td>{{.To}}</td></tr>
{{end}}</table>{{else}}<p>None: every shard is led by its target.</p>{{end}}

<h2>Recent transitions of this node</h2>
{{if .Transitions}}<table><tr><th>when</th><th class="num">shard</th><th class="num">epoch</th><th>event</th><th>reason</th><th>peer</th></tr>
{{range .Transitions}}<tr><td title="{{.Time}}">{{ago .Time}} ago</td><td class="num">{{.Shard}}</td><td class="num">{{.Epoch}}</td><td>{{.Event}}</td><td>{{.Reason}}</td><td>{{.Peer}}</td></tr>
{{end}}</table>{{else}}<p>None yet.</p>{{end}}

<h2>Shards</h2>
<details><summary>All {{.Shards}} shards</summary>
<table><tr><th class="num">shard</th><th>state</th><th>leader</th><th class="num">epoch</th><th>desired</th><th>address</th></tr>
{{range .Entries}}<tr><td class="num">{{.Shard}}</td><td>{{.State}}</td><td>{{.Leader}}</td><td class="num">{{.Epoch}}</td><td>{{.Desired}}</td><td>{{.Addr}}</td></tr>
{{end}}</table></details>
</body></html>
`))
