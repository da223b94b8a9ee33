package main

import (
	"log/slog"

	"google.golang.org/grpc"

	"github.com/tenurehq/tenure/shard"
)

// apiService is the tenure.v1 service the daemon serves on the node's gRPC
// server.
type apiService interface {
	Register(*grpc.Server)
	Close()
}

type apiConfig struct {
	node         *shard.Node
	log          *slog.Logger
	requireCert  bool
	dialOptions  []grpc.DialOption
	maxBatchKeys int
}

// newAPI returns the tenure.v1 service. Package server, which implements
// it, is not on this branch yet: until it is, the daemon serves health,
// reflection and the node's own services only.
func newAPI(apiConfig) (apiService, error) { return noAPI{}, nil }

type noAPI struct{}

func (noAPI) Register(*grpc.Server) {}
func (noAPI) Close()                {}
