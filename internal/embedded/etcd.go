// Package embedded starts in-process etcd servers for the sandbox and for
// tests. It is not used by the replication components.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdConfig describes an embedded single-member etcd.
type EtcdConfig struct {
	// Dir is the data directory. Required.
	Dir string
	// Name is the member name. Default "default".
	Name string
	// ClientPort is the client port; 0 picks a free one.
	ClientPort int
	// MaxTxnOps is etcd's --max-txn-ops. Default 128 (etcd's default).
	MaxTxnOps uint
	// MaxRequestBytes is etcd's --max-request-bytes. Default 1.5 MiB.
	MaxRequestBytes uint
	// ClientTLS, when set, serves clients over TLS (https URLs). Default nil:
	// plain http.
	ClientTLS *TLS
}

// TLS is the client-facing TLS of an embedded etcd (etcd's --cert-file,
// --key-file, --trusted-ca-file and --client-cert-auth).
type TLS struct {
	// CertFile and KeyFile are the server's certificate and key (PEM).
	// Required. With ClientCertAuth the certificate also serves as the
	// client certificate of etcd's own gateway, so it should allow client
	// authentication as well as server authentication.
	CertFile, KeyFile string
	// TrustedCAFile holds the CA certificates that verify client
	// certificates (PEM).
	TrustedCAFile string
	// ClientCertAuth rejects clients without a certificate signed by a CA
	// in TrustedCAFile.
	ClientCertAuth bool
}

// Etcd is a running embedded etcd.
type Etcd struct {
	Server   *embed.Etcd
	Endpoint string // http://127.0.0.1:port, or https:// with ClientTLS
	once     sync.Once
}

// Close stops the server and waits for it. Closing twice is harmless.
func (e *Etcd) Close() {
	e.once.Do(func() {
		e.Server.Close()
		<-e.Server.Server.StopNotify()
	})
}

// StartEtcd starts a single-member etcd listening on loopback and waits until
// it serves (at most 30s). Starting again on the same Dir restarts the same
// member with its data. It returns an error when the directory is missing, a
// ClientTLS file is missing, or the server does not start.
//
// Ports picked at random can be taken by another process between the pick
// and the bind (tests run packages in parallel): a start that fails with
// "address already in use" is retried with new ports, a few times.
func StartEtcd(c EtcdConfig) (*Etcd, error) {
	for attempt := 1; ; attempt++ {
		e, err := startEtcdOnce(c)
		inUse := err != nil && (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"))
		if !inUse || attempt == 5 {
			return e, err
		}
	}
}

func startEtcdOnce(c EtcdConfig) (*Etcd, error) {
	if c.Dir == "" {
		return nil, fmt.Errorf("start embedded etcd: data directory is required")
	}
	if c.Name == "" {
		c.Name = "default"
	}
	cport := c.ClientPort
	if cport == 0 {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		cport = p
	}
	pport, err := FreePort()
	if err != nil {
		return nil, err
	}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = c.Dir
	cfg.LogLevel = "error"
	// The embedded server's own logs (including the errors it prints while
	// shutting down) are not etcdsync's to show.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	scheme := "http"
	if t := c.ClientTLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" {
			return nil, fmt.Errorf("start embedded etcd: client TLS needs a certificate and a key file")
		}
		if t.ClientCertAuth && t.TrustedCAFile == "" {
			return nil, fmt.Errorf("start embedded etcd: client certificate auth needs a trusted CA file")
		}
		scheme = "https"
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       t.CertFile,
			KeyFile:        t.KeyFile,
			TrustedCAFile:  t.TrustedCAFile,
			ClientCertAuth: t.ClientCertAuth,
		}
	}
	cu := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", cport)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(c.Name)
	if c.MaxTxnOps > 0 {
		cfg.MaxTxnOps = c.MaxTxnOps
	}
	if c.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = c.MaxRequestBytes
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: %w", c.Dir, err)
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("start embedded etcd in %s: not ready after 30s", c.Dir)
	}
	return &Etcd{Server: e, Endpoint: cu.String()}, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
