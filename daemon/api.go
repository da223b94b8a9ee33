package daemon

import (
	"log/slog"

	"google.golang.org/grpc"

	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/shard"
)

type apiConfig struct {
	node         *shard.Node
	log          *slog.Logger
	requireCert  bool
	dialOptions  []grpc.DialOption
	maxBatchKeys int
}

// newAPI returns the tenure.v1 service on the node.
func newAPI(c apiConfig) (*server.Server, error) {
	return server.New(server.Config{
		Node:                    c.node,
		Logger:                  c.log,
		AdminRequiresClientCert: c.requireCert,
		DialOptions:             c.dialOptions,
		MaxBatchKeys:            c.maxBatchKeys,
	})
}
