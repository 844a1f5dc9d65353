package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/etcdsync/etcdsync/internal/embedded"
)

// testCA is a certificate authority made at test time, its certificate in
// file (PEM).
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

// certFiles are a PEM certificate and its key.
type certFiles struct {
	cert, key string
}

var serial = big.NewInt(1)

func nextSerial() *big.Int {
	serial.Add(serial, big.NewInt(1))
	return new(big.Int).Set(serial)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// newTestCA creates a self-signed CA named name in dir.
func newTestCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, file: filepath.Join(dir, name+".crt")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue signs a certificate named name for 127.0.0.1 and localhost, usable
// for server and client authentication (etcd's gateway dials its own server
// with the server certificate when client certificates are required).
func (ca *testCA) issue(t *testing.T, dir, name string) certFiles {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := certFiles{cert: filepath.Join(dir, name+".crt"), key: filepath.Join(dir, name+".key")}
	writePEM(t, f.cert, "CERTIFICATE", der)
	writePEM(t, f.key, "PRIVATE KEY", keyDER)
	return f
}

// pki is a CA with a server and a client certificate, and a rogue CA (not
// trusted by anyone) with a client certificate of its own.
type pki struct {
	ca, rogue           *testCA
	server, client, bad certFiles
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	p := &pki{ca: newTestCA(t, dir, "ca"), rogue: newTestCA(t, dir, "rogue-ca")}
	p.server = p.ca.issue(t, dir, "server")
	p.client = p.ca.issue(t, dir, "client")
	p.bad = p.rogue.issue(t, dir, "rogue-client")
	return p
}

// flags returns the TLS flags of etcdsync for a client certificate.
func (p *pki) flags(cacert string, c certFiles) []string {
	return []string{"--etcd-cacert", cacert, "--etcd-cert", c.cert, "--etcd-key", c.key}
}

// startTLSEtcd starts an etcd that requires client certificates signed by
// the pki's CA, and a client for it.
func startTLSEtcd(t *testing.T, p *pki) (*embedded.Etcd, *clientv3.Client) {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir(), ClientTLS: &embedded.TLS{
		CertFile: p.server.cert, KeyFile: p.server.key, TrustedCAFile: p.ca.file, ClientCertAuth: true,
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if !strings.HasPrefix(e.Endpoint, "https://") {
		t.Fatalf("endpoint %s is not https", e.Endpoint)
	}
	pair, err := tls.LoadX509KeyPair(p.client.cert, p.client.key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.cert)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return e, cli
}

// TestTLSPublishApply runs publish and apply against two etcd servers that
// require client certificates: a key written on the primary reaches the
// standby.
func TestTLSPublishApply(t *testing.T) {
	p := newPKI(t)
	primary, pcli := startTLSEtcd(t, p)
	standby, scli := startTLSEtcd(t, p)
	natsAddr := freeAddr(t)
	ctx := context.Background()

	// Without a client certificate the servers refuse the client.
	if code, _, stderr := runCmd(t, "apply", "--etcd-endpoints", primary.Endpoint, "--etcd-cacert", p.ca.file, "--nats-url", "nats://127.0.0.1:1"); code != exitFailure {
		t.Fatalf("apply without a client certificate: exit %d, stderr %q", code, stderr)
	}

	pub := runBackground(t, append([]string{"publish", "--etcd-endpoints", primary.Endpoint, "--data-dir", t.TempDir(),
		"--nats-listen", natsAddr}, p.flags(p.ca.file, p.client)...)...)
	eventually(t, 20*time.Second, "the publisher to start", func() bool {
		return strings.Contains(pub.stderr.String(), "publisher starting")
	})
	runBackground(t, append([]string{"apply", "--etcd-endpoints", standby.Endpoint, "--nats-url", "nats://" + natsAddr},
		p.flags(p.ca.file, p.client)...)...)

	if _, err := pcli.Put(ctx, "/registry/configmaps/app/over-tls", "v1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the key on the standby", func() bool {
		resp, err := scli.Get(ctx, "/registry/configmaps/app/over-tls")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "v1"
	})
	if code := pub.stop(t); code != exitOK {
		t.Errorf("publish exit %d; stderr:\n%s", code, pub.stderr)
	}
}

// TestTLSWrongCertificate expects a certificate the server or the client
// does not trust to fail within seconds, with one line naming the endpoint.
func TestTLSWrongCertificate(t *testing.T) {
	p := newPKI(t)
	e, _ := startTLSEtcd(t, p)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"client certificate from another CA", p.flags(p.ca.file, p.bad), "the server rejected the client certificate"},
		{"server certificate from an untrusted CA", p.flags(p.rogue.file, p.client), "the server's certificate is not trusted"},
		{"no client certificate", []string{"--etcd-cacert", p.ca.file}, "the server rejected the client certificate"},
		{"no CA for the server", []string{"--etcd-cert", p.client.cert, "--etcd-key", p.client.key}, "the server's certificate is not trusted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			code, _, stderr := runCmd(t, append([]string{"apply", "--etcd-endpoints", e.Endpoint, "--nats-url", "nats://127.0.0.1:1"}, tt.args...)...)
			took := time.Since(start)
			t.Logf("after %s: %q", took.Round(time.Millisecond), stderr)
			if code != exitFailure {
				t.Fatalf("exit %d, want %d", code, exitFailure)
			}
			if took > 15*time.Second {
				t.Errorf("took %s", took)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "etcdsync apply: etcd "+e.Endpoint+": ") {
				t.Errorf("stderr is not one line naming the endpoint: %q", stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr %q does not say %q", stderr, tt.want)
			}
		})
	}
}

// TestSecretsNotLogged runs with a distinctive etcd password against a
// server that denies it and against one that cannot be reached, at debug
// level, and expects the password nowhere in the output.
func TestSecretsNotLogged(t *testing.T) {
	const password = "Pa55-w0rd-must-never-show-7c1f"
	e, cli := startEtcd(t)
	ctx := context.Background()
	if _, err := cli.UserAdd(ctx, "root", "the-real-root-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		endpoint string
	}{
		{"denied", e.Endpoint},
		{"unreachable", "http://" + freeAddr(t)},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"apply", "publish"} {
			t.Run(tt.name+"/"+cmd, func(t *testing.T) {
				args := []string{cmd, "--etcd-endpoints", tt.endpoint, "--etcd-username", "root", "--log-level", "debug"}
				if cmd == "apply" {
					args = append(args, "--nats-url", "nats://127.0.0.1:1")
				} else {
					args = append(args, "--data-dir", t.TempDir(), "--nats-listen", freeAddr(t))
				}
				// Once on the command line, once from the environment.
				for _, env := range []bool{false, true} {
					a := args
					if env {
						t.Setenv("ETCDSYNC_ETCD_PASSWORD", password)
					} else {
						a = append(a, "--etcd-password", password)
					}
					code, stdout, stderr := runCmd(t, a...)
					t.Logf("env %v: exit %d, stderr %q", env, code, stderr)
					want := exitFailure // denied: the server answered
					if tt.name == "unreachable" {
						want = exitUnavailable
					}
					if code != want {
						t.Errorf("exit %d, want %d", code, want)
					}
					if strings.Contains(stderr+stdout, password) {
						t.Errorf("the password appears in the output:\n%s%s", stdout, stderr)
					}
				}
			})
		}
	}
}
