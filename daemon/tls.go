package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// tlsSetup is the node's TLS material: server credentials for its gRPC
// server and client credentials for its connections to peers and voters.
// nil when the node serves plaintext.
type tlsSetup struct {
	server *tls.Config
	client *tls.Config
	mutual bool // client certificates are verified: -tls-client-ca
}

// loadTLS reads the files the options name. Every error names its flag.
func loadTLS(o options) (*tlsSetup, error) {
	if o.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
	if err != nil {
		return nil, usagef("-tls-cert %s / -tls-key %s: %v", o.TLSCert, o.TLSKey, err)
	}
	ts := &tlsSetup{
		server: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		client: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	if o.TLSClientCA != "" {
		pool, err := loadPool(o.TLSClientCA)
		if err != nil {
			return nil, usagef("-tls-client-ca: %v", err)
		}
		// Lookups stay open to clients without a certificate (they
		// reveal what gossip already spreads); requireClientCert refuses
		// every other call that comes without a verified one.
		ts.server.ClientCAs, ts.server.ClientAuth = pool, tls.VerifyClientCertIfGiven
		ts.client.RootCAs, ts.mutual = pool, true
	}
	if o.TLSCA != "" {
		pool, err := loadPool(o.TLSCA)
		if err != nil {
			return nil, usagef("-tls-ca: %v", err)
		}
		ts.client.RootCAs = pool
	}
	return ts, nil
}

func loadPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// openMethods are the calls a client without a certificate may make when
// mTLS is on: lookups and cluster views, health and reflection. Everything
// else — admin calls, the voter protocol, handoffs between nodes, and any
// service added later — needs a verified client certificate: deny by
// default, so that a new internal service is never open by accident.
var openMethods = map[string]bool{
	"/tenure.v1.Tenure/Lookup":      true,
	"/tenure.v1.Tenure/BatchLookup": true,
	"/tenure.v1.Tenure/Watch":       true,
	"/tenure.v1.Tenure/ListShards":  true,
	"/tenure.v1.Tenure/GetShard":    true,
	"/tenure.v1.Tenure/Cluster":     true,
}

var openServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

func isOpen(method string) bool {
	if openMethods[method] {
		return true
	}
	for _, p := range openServices {
		if strings.HasPrefix(method, p) {
			return true
		}
	}
	return false
}

// checkClientCert refuses a call without a verified client certificate
// unless its method is open.
func checkClientCert(ctx context.Context, method string) error {
	if isOpen(method) {
		return nil
	}
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 {
			return nil
		}
	}
	return status.Errorf(codes.Unauthenticated, "%s needs a client certificate signed by this node's -tls-client-ca", method)
}

// certInterceptors enforce checkClientCert on every unary and streaming
// call.
func certInterceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkClientCert(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkClientCert(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	}
}
