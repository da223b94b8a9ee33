package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	tenurev1 "github.com/tenurehq/tenure/proto/tenure/v1"
	"github.com/tenurehq/tenure/server"
	"github.com/tenurehq/tenure/server/servertest"
	"github.com/tenurehq/tenure/shard"
)

// testCA is a certificate authority made up for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for name signed by ca, for servers (with
// 127.0.0.1 as an IP SAN) and clients alike.
func (ca *testCA) issue(t *testing.T, name string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// With AdminRequiresClientCert, a caller over TLS without a client
// certificate may look up but not administer (UNAUTHENTICATED, mapped to
// ErrUnauthenticated); a caller whose certificate the server verifies may;
// a certificate from another authority does not get through the handshake.
func TestAdminRequiresAVerifiedClientCertificate(t *testing.T) {
	ca := newCA(t, "tenure test CA")
	serverCert := ca.issue(t, "node-1", 2)
	clientCert := ca.issue(t, "operator", 3)
	rogue := newCA(t, "rogue CA").issue(t, "operator", 4)

	c := servertest.NewCluster(t, 0, 16, 0)
	c.NodeConfig = func(cfg *shard.Config) {
		cfg.GRPCServerOptions = append(cfg.GRPCServerOptions, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{serverCert},
			ClientCAs:    ca.pool,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			MinVersion:   tls.VersionTLS13,
		})))
	}
	c.ServerConfig = func(cfg *server.Config) { cfg.AdminRequiresClientCert = true }
	c.Start(1)

	dial := func(certs ...tls.Certificate) tenurev1.TenureClient {
		creds := credentials.NewTLS(&tls.Config{RootCAs: ca.pool, Certificates: certs, MinVersion: tls.VersionTLS13})
		return tenurev1.NewTenureClient(c.Dial(t, "client", "node-1", grpc.WithTransportCredentials(creds)))
	}
	ctx := ctxFor(t, 20*time.Second)
	// node-9 is no member: an authorized caller gets past the check and
	// learns that; an unauthorized one learns nothing.
	drain := &tenurev1.DrainRequest{Node: "node-9"}

	anonymous := dial()
	if _, err := anonymous.Lookup(ctx, &tenurev1.LookupRequest{Key: []byte("k")}); err != nil {
		t.Fatalf("Lookup without a client certificate: %v", err)
	}
	for name, call := range map[string]func() error{
		"Drain": func() error { _, err := anonymous.Drain(ctx, drain); return err },
		"Transfer": func() error {
			_, err := anonymous.Transfer(ctx, &tenurev1.TransferRequest{Shard: 1, Node: "node-1"})
			return err
		},
		"PauseRebalance": func() error {
			_, err := anonymous.PauseRebalance(ctx, &tenurev1.PauseRebalanceRequest{})
			return err
		},
		"ResumeRebalance": func() error {
			_, err := anonymous.ResumeRebalance(ctx, &tenurev1.ResumeRebalanceRequest{})
			return err
		},
	} {
		err := call()
		if status.Code(err) != codes.Unauthenticated || !errors.Is(tenurev1.FromStatus(err), tenurev1.ErrUnauthenticated) {
			t.Errorf("%s without a client certificate: %v, want UNAUTHENTICATED", name, err)
		}
	}

	operator := dial(clientCert)
	if _, err := operator.Drain(ctx, drain); !errors.Is(tenurev1.FromStatus(err), shard.ErrUnknownNode) {
		t.Errorf("Drain(node-9) with a verified certificate: %v, want past the check to ErrUnknownNode", err)
	}

	// Presented whatever the server asks for (a Go client would otherwise
	// withhold a certificate the server's CAs did not sign).
	rogueCreds := credentials.NewTLS(&tls.Config{
		RootCAs:              ca.pool,
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue, nil },
	})
	impostor := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1", grpc.WithTransportCredentials(rogueCreds)))
	if _, err := impostor.Drain(ctx, drain); status.Code(err) != codes.Unavailable {
		t.Errorf("Drain with a certificate of another authority: %v, want the handshake refused (UNAVAILABLE)", err)
	}
}

// Without TLS, AdminRequiresClientCert refuses every administrative call:
// no caller can prove anything.
func TestAdminRequiresClientCertWithoutTLS(t *testing.T) {
	c := servertest.NewCluster(t, 0, 16, 0)
	c.ServerConfig = func(cfg *server.Config) { cfg.AdminRequiresClientCert = true }
	c.Start(1)
	client := tenurev1.NewTenureClient(c.Dial(t, "client", "node-1"))
	_, err := client.Drain(ctxFor(t, 10*time.Second), &tenurev1.DrainRequest{Node: "node-1"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Drain over plaintext: %v, want UNAUTHENTICATED", err)
	}
}
