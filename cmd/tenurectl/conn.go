package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/shard"
)

// endpoints are the tenured nodes tenurectl may ask, in order of
// preference, with one lazily dialled connection each.
type endpoints struct {
	addrs []string
	opts  []grpc.DialOption
	conns []*grpc.ClientConn
}

// dialOptions builds the transport credentials from the global flags.
func dialOptions(g globals) ([]grpc.DialOption, error) {
	if !g.tls && g.tlsCA == "" && g.tlsCert == "" {
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: g.tlsServerName}
	if g.tlsCA != "" {
		b, err := os.ReadFile(g.tlsCA)
		if err != nil {
			return nil, usagef("-tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, usagef("-tls-ca %s holds no PEM certificate", g.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if (g.tlsCert == "") != (g.tlsKey == "") {
		return nil, usagef("-tls-cert and -tls-key go together")
	}
	if g.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(g.tlsCert, g.tlsKey)
		if err != nil {
			return nil, usagef("-tls-cert %s / -tls-key %s: %v", g.tlsCert, g.tlsKey, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, nil
}

func newEndpoints(addrs []string, opts []grpc.DialOption) *endpoints {
	return &endpoints{addrs: addrs, opts: opts, conns: make([]*grpc.ClientConn, len(addrs))}
}

func (e *endpoints) client(i int) (tenurev1.TenureClient, error) {
	if e.conns[i] == nil {
		c, err := grpc.NewClient("passthrough:///"+e.addrs[i], e.opts...)
		if err != nil {
			return nil, err
		}
		e.conns[i] = c
	}
	return tenurev1.NewTenureClient(e.conns[i]), nil
}

// close closes every connection that was opened.
func (e *endpoints) close() {
	for _, c := range e.conns {
		if c != nil {
			c.Close()
		}
	}
}

// errUnavailable is wrapped by the error of a call no endpoint answered.
var errUnavailable = errors.New("no node reachable")

// call runs f against each endpoint in turn until one answers (with a
// result or an error of its own), and returns that. Only a node that could
// not be reached, or did not answer in its share of ctx's time, passes the
// call on: an answer, even a refusal, is final.
func call[T any](ctx context.Context, e *endpoints, f func(context.Context, tenurev1.TenureClient) (T, error)) (T, error) {
	var zero T
	var errs []string
	for i, addr := range e.addrs {
		c, err := e.client(i)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", addr, err))
			continue
		}
		actx, cancel := attemptContext(ctx, len(e.addrs)-i)
		res, err := f(actx, c)
		cancel()
		if err == nil {
			return res, nil
		}
		if !unreachable(ctx, err) {
			return zero, err
		}
		errs = append(errs, fmt.Sprintf("%s: %v", addr, status.Convert(err).Message()))
	}
	if ctx.Err() != nil && len(errs) == 0 {
		return zero, ctx.Err()
	}
	return zero, fmt.Errorf("%w: %s", errUnavailable, strings.Join(errs, "; "))
}

// attemptContext gives one attempt an equal share of what is left of
// ctx's deadline among the endpoints still to try, so that a node that
// hangs does not use up the time of those after it.
func attemptContext(ctx context.Context, left int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || left <= 1 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, time.Until(dl)/time.Duration(left))
}

// unreachable reports whether err says the node did not answer (so the
// next endpoint should be tried) rather than that it refused. A node that
// is stopping answers UNAVAILABLE too and is passed over; one that refuses
// because the node the call concerns is draining has answered.
func unreachable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable:
		return !errors.Is(tenurev1.FromStatus(err), shard.ErrDraining)
	case codes.DeadlineExceeded:
		return true
	}
	return false
}
