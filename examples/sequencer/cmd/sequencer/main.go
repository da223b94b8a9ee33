// Command sequencer is a Tenure node that hands out IDs, strictly
// increasing per shard across failovers and handoffs (package
// examples/sequencer): tenured with one more HTTP route.
//
//	GET /next?shard=3            {"shard":3,"id":...,"epoch":7,"counter":41}
//	GET /next?key=customer/1001  the same for the key's shard
//
// A node that does not lead the shard answers 421 Misdirected Request with
// the leader it knows: {"error":"...","leader":"n2","address":"h2:7000","epoch":8}
// (the gRPC address; the leader's HTTP server is on its own -http-addr).
// It takes every tenured flag, environment variable and config key; see
// tenured -h.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/tenurehq/tenure/daemon"
	"github.com/tenurehq/tenure/examples/sequencer"
	"github.com/tenurehq/tenure/shard"
)

func main() { os.Exit(daemon.Main(app())) }

func app() daemon.App {
	return daemon.App{
		Name: "sequencer",
		About: `sequencer runs one Tenure node that hands out IDs, strictly increasing per
shard across failovers and handoffs, on GET /next?shard=N or ?key=K
(see examples/sequencer/README.md). It is tenured plus that route.`,
		Start: func(h *daemon.Host) (shard.Handler, error) {
			// Made on the first request: the node runs by then (the HTTP
			// server starts after it).
			seq := sync.OnceValue(func() *sequencer.Sequencer { return sequencer.New(h.Node()) })
			h.Handle("GET /next", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				serveNext(w, r, h.Node(), seq())
			}))
			return nil, nil
		},
	}
}

// reply is GET /next's answer.
type reply struct {
	Shard   uint32 `json:"shard"`
	ID      uint64 `json:"id"`
	Epoch   uint64 `json:"epoch"`
	Counter uint64 `json:"counter"`
}

type errorReply struct {
	Error   string `json:"error"`
	Leader  string `json:"leader,omitempty"`
	Address string `json:"address,omitempty"`
	Epoch   uint64 `json:"epoch,omitempty"`
}

func serveNext(w http.ResponseWriter, r *http.Request, n *shard.Node, seq *sequencer.Sequencer) {
	q := r.URL.Query()
	var s uint32
	switch {
	case q.Has("shard") && q.Has("key"):
		writeJSON(w, http.StatusBadRequest, errorReply{Error: "give shard or key, not both"})
		return
	case q.Has("shard"):
		v, err := strconv.ParseInt(q.Get("shard"), 10, 64)
		if err == nil {
			err = shard.CheckShard(v, n.Config().Shards)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, errorReply{Error: fmt.Sprintf("shard %q: %v", q.Get("shard"), err)})
			return
		}
		s = uint32(v)
	case q.Has("key"):
		s = uint32(n.LookupString(q.Get("key")).Shard)
	default:
		writeJSON(w, http.StatusBadRequest, errorReply{Error: "give ?shard=N or ?key=K"})
		return
	}
	id, err := seq.Next(r.Context(), s)
	var nl *shard.NotLeaderError
	switch {
	case err == nil:
		e, c := sequencer.Split(id)
		writeJSON(w, http.StatusOK, reply{Shard: s, ID: id, Epoch: e, Counter: c})
	case errors.As(err, &nl):
		writeJSON(w, http.StatusMisdirectedRequest, errorReply{Error: err.Error(), Leader: nl.Leader, Address: nl.Addr, Epoch: nl.Epoch})
	case errors.Is(err, context.Canceled):
	default:
		writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
