package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	neturl "net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// connectTimeout bounds the startup checks of etcd and NATS.
const connectTimeout = 5 * time.Second

// logFlags select the log level and format.
type logFlags struct {
	level  string
	format string
}

func (l *logFlags) register(f *flagSet, defLevel string) {
	f.String(&l.level, "log-level", defLevel, "log `LEVEL`: debug (prints every applied revision), info, warn or error")
	f.String(&l.format, "log-format", "text", "log `FORMAT`: text or json")
}

// logger returns a logger writing to w, or a usage error for a bad level or format.
func (l *logFlags) logger(cmd string, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usageErrorf(cmd, "invalid --log-level %q (want debug, info, warn or error)", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErrorf(cmd, "invalid --log-format %q (want text or json)", l.format)
}

// etcdFlags describe how to reach one etcd cluster.
type etcdFlags struct {
	endpoints []string
	cacert    string
	cert      string
	key       string
	username  string
	password  string
}

// register defines --etcd-endpoints and the TLS and auth flags; what names
// the cluster in the help text ("source (primary)").
func (e *etcdFlags) register(f *flagSet, what string) {
	f.List(&e.endpoints, "etcd-endpoints", nil, "comma-separated client `URLS` of the "+what+" etcd (required)")
	f.String(&e.cacert, "etcd-cacert", "", "`FILE` with the CA certificates that verify the etcd servers (TLS)")
	f.String(&e.cert, "etcd-cert", "", "client certificate `FILE` for etcd (TLS; needs --etcd-key)")
	f.String(&e.key, "etcd-key", "", "client key `FILE` for etcd (TLS; needs --etcd-cert)")
	f.String(&e.username, "etcd-username", "", "etcd `USER` (etcd auth)")
	f.String(&e.password, "etcd-password", "", "etcd `PASSWORD` (etcd auth; prefer the environment variable)")
}

// validate checks the flags without touching the network.
func (e *etcdFlags) validate(cmd string) error {
	if len(e.endpoints) == 0 {
		return usageErrorf(cmd, "--etcd-endpoints is required")
	}
	if (e.cert == "") != (e.key == "") {
		return usageErrorf(cmd, "--etcd-cert and --etcd-key must be given together")
	}
	if e.password != "" && e.username == "" {
		return usageErrorf(cmd, "--etcd-password needs --etcd-username")
	}
	return nil
}

func (e *etcdFlags) tlsConfig() (*tls.Config, error) {
	if e.cacert == "" && e.cert == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.cacert != "" {
		pem, err := os.ReadFile(e.cacert)
		if err != nil {
			return nil, fmt.Errorf("read --etcd-cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read --etcd-cacert %s: no PEM certificate found", e.cacert)
		}
		cfg.RootCAs = pool
	}
	if e.cert != "" {
		pair, err := tls.LoadX509KeyPair(e.cert, e.key)
		if err != nil {
			return nil, fmt.Errorf("load --etcd-cert/--etcd-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// connect creates the client and checks, within connectTimeout, that the
// cluster answers. Errors name the endpoints.
func (e *etcdFlags) connect(ctx context.Context) (*clientv3.Client, error) {
	where := strings.Join(e.endpoints, ",")
	tlsCfg, err := e.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", where, err)
	}
	return dialEtcd(ctx, clientv3.Config{
		Endpoints:   e.endpoints,
		DialTimeout: connectTimeout,
		TLS:         tlsCfg,
		Username:    e.username,
		Password:    e.password,
	})
}

// client creates a client without checking that the cluster answers (it
// connects when the cluster does).
func (e *etcdFlags) client() (*clientv3.Client, error) {
	where := strings.Join(e.endpoints, ",")
	tlsCfg, err := e.tlsConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", where, err)
	}
	cli, err := clientv3.New(withKeepAlive(clientv3.Config{Endpoints: e.endpoints, DialTimeout: connectTimeout, TLS: tlsCfg,
		Username: e.username, Password: e.password}))
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", where, err)
	}
	return cli, nil
}

// Keepalive of every etcd client: a half-open connection (a peer gone
// without a FIN, a dropped NAT entry) is found within about 15s instead of
// the kernel's TCP timeout of many minutes, and the client reconnects.
const (
	etcdKeepAliveTime    = 10 * time.Second
	etcdKeepAliveTimeout = 5 * time.Second
)

// withKeepAlive returns cfg with gRPC keepalive pings (also while no call
// is in flight), no client-side bound on request size (the client's 2 MiB
// default would refuse values a standby with a larger --max-request-bytes
// takes, and read as the standby refusing them: etcd bounds requests
// itself) and a silent zap logger.
func withKeepAlive(cfg clientv3.Config) clientv3.Config {
	cfg.DialKeepAliveTime, cfg.DialKeepAliveTimeout, cfg.PermitWithoutStream = etcdKeepAliveTime, etcdKeepAliveTimeout, true
	cfg.MaxCallSendMsgSize = math.MaxInt32
	cfg.Logger = zap.NewNop()
	return cfg
}

// dialEtcd creates a client for cfg (with a silent zap logger) and checks,
// within connectTimeout, that the cluster answers a member list.
func dialEtcd(ctx context.Context, cfg clientv3.Config) (*clientv3.Client, error) {
	where := strings.Join(cfg.Endpoints, ",")
	cli, err := clientv3.New(withKeepAlive(cfg))
	if err != nil {
		if perr := probeEtcd(ctx, cfg.Endpoints, cfg.TLS); perr != nil {
			return nil, unreachable(fmt.Errorf("etcd %s: %w", where, perr))
		}
		return nil, fmt.Errorf("etcd %s: %w", where, err)
	}
	cctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if _, err := cli.MemberList(cctx); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if perr := probeEtcd(ctx, cfg.Endpoints, cfg.TLS); perr != nil {
			return nil, unreachable(fmt.Errorf("etcd %s: %w", where, perr))
		}
		if errors.Is(cctx.Err(), context.DeadlineExceeded) {
			return nil, &unreachableError{fmt.Errorf("etcd %s: no answer within %s (is it running, reachable, and speaking the scheme given?): %w", where, connectTimeout, err)}
		}
		return nil, fmt.Errorf("etcd %s: %w", where, err)
	}
	return cli, nil
}

// natsFlags describe how to reach NATS.
type natsFlags struct {
	url          string
	user         string
	passwordFile string
	tokenFile    string
	creds        string
	nkey         string
	cacert       string
	cert         string
	key          string
}

func (n *natsFlags) register(f *flagSet, urlHelp string) {
	f.String(&n.url, "nats-url", "", urlHelp)
	f.String(&n.user, "nats-user", "", "NATS `USER` (with --nats-password-file)")
	f.String(&n.passwordFile, "nats-password-file", "", "`FILE` holding the password of --nats-user")
	f.String(&n.tokenFile, "nats-token-file", "", "`FILE` holding a NATS authentication token")
	f.String(&n.creds, "nats-creds", "", "NATS credentials `FILE` (JWT and NKey seed)")
	f.String(&n.nkey, "nats-nkey", "", "`FILE` holding an NKey seed (NATS nkey authentication without a JWT)")
	f.String(&n.cacert, "nats-cacert", "", "`FILE` with the CA certificates that verify the NATS servers (TLS)")
	f.String(&n.cert, "nats-cert", "", "client certificate `FILE` for NATS (TLS; needs --nats-key)")
	f.String(&n.key, "nats-key", "", "client key `FILE` for NATS (TLS; needs --nats-cert)")
}

func (n *natsFlags) validate(cmd string) error {
	if (n.cert == "") != (n.key == "") {
		return usageErrorf(cmd, "--nats-cert and --nats-key must be given together")
	}
	if n.creds != "" && n.nkey != "" {
		return usageErrorf(cmd, "--nats-creds and --nats-nkey are exclusive (a creds file holds its own NKey seed)")
	}
	if (n.user == "") != (n.passwordFile == "") {
		return usageErrorf(cmd, "--nats-user and --nats-password-file must be given together")
	}
	var ways []string
	for flag, set := range map[string]bool{"--nats-user": n.user != "", "--nats-token-file": n.tokenFile != "", "--nats-creds or --nats-nkey": n.creds != "" || n.nkey != ""} {
		if set {
			ways = append(ways, flag)
		}
	}
	if len(ways) > 1 {
		slices.Sort(ways)
		return usageErrorf(cmd, "%s are exclusive: give one way to authenticate to NATS", strings.Join(ways, ", "))
	}
	return nil
}

// readSecret returns the first line of the file named by flag, without
// surrounding blanks. Errors name the flag and the file, never the content.
func readSecret(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", flag, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if line = strings.TrimSpace(line); line == "" {
		return "", fmt.Errorf("read %s %s: empty", flag, path)
	}
	return line, nil
}

// redactURL returns s, one NATS URL or a comma-separated list of them,
// with any user information replaced by "redacted", for logs and errors.
// It works on the text, not on parsed URLs: "user:pass@host:port" (no
// scheme) parses as scheme "user" with no user information, and a
// password with a '/', a bad escape or a ',' (which would split the list
// in the middle of the password) does not parse at all. Everything before
// the last '@' that follows a "://" (or the start) is user information:
// some host names may be redacted with it, never a password shown.
func redactURL(s string) string {
	segs := strings.Split(s, "://")
	for i, seg := range segs {
		if at := strings.LastIndex(seg, "@"); at >= 0 {
			lead := ""
			if i == 0 {
				trimmed := strings.TrimLeft(seg, " ")
				lead = seg[:len(seg)-len(trimmed)]
			}
			segs[i] = lead + "redacted" + seg[at:]
		}
	}
	return strings.Join(segs, "://")
}

// connect connects to url (n.url unless the caller runs its own server),
// reconnecting forever once connected; the first connection must succeed
// within connectTimeout.
func (n *natsFlags) connect(url, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := connOptions(name, log)
	if n.user != "" {
		pw, err := readSecret("--nats-password-file", n.passwordFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(n.user, pw))
	}
	if n.tokenFile != "" {
		tok, err := readSecret("--nats-token-file", n.tokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	}
	if n.creds != "" {
		opts = append(opts, nats.UserCredentials(n.creds))
	}
	if n.nkey != "" {
		opt, err := nats.NkeyOptionFromSeed(n.nkey)
		if err != nil {
			return nil, fmt.Errorf("nats nkey %s: %w", n.nkey, err)
		}
		opts = append(opts, opt)
	}
	if n.cacert != "" {
		opts = append(opts, nats.RootCAs(n.cacert))
	}
	if n.cert != "" {
		opts = append(opts, nats.ClientCert(n.cert, n.key))
	}
	nc, err := nats.Connect(url, opts...)
	var bad *neturl.Error
	if errors.As(err, &bad) {
		// The parser's error quotes the URL, password included.
		return nil, fmt.Errorf("nats %s: not a valid URL (URL-encode special characters of the user information, or use --nats-user and --nats-password-file)", redactURL(url))
	}
	if err != nil {
		return nil, unreachable(fmt.Errorf("nats %s: %w", redactURL(url), err))
	}
	return nc, nil
}

// connOptions are the options of every NATS connection: reconnect
// forever once connected, log disconnections.
func connOptions(name string, log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "url", c.ConnectedUrlRedacted()) }),
	}
}

// connectInProcess connects to an embedded server in process, as the
// identity of the NKey pair kp when it is not nil.
func connectInProcess(srv nats.InProcessConnProvider, kp nkeys.KeyPair, name string, log *slog.Logger) (*nats.Conn, error) {
	opts := append(connOptions(name, log), nats.InProcessServer(srv))
	if kp != nil {
		pub, err := kp.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w", err)
		}
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	}
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	return nc, nil
}

// unreachable marks err as a server that could not be reached (exit
// status 3) when it is one: a refused or timed-out connection, no NATS
// server answering. A server that answered and refused (TLS, credentials)
// stays a failure (exit status 1).
func unreachable(err error) error {
	var oe *net.OpError
	var ne net.Error
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) ||
		(errors.As(err, &oe) && oe.Op == "dial") || (errors.As(err, &ne) && ne.Timeout()) {
		return &unreachableError{err}
	}
	return err
}

// probeEtcd explains why the etcd endpoints cannot be used, when a TCP
// dial or a TLS handshake shows it: it returns nil when any endpoint
// accepts a connection (and, for https or with TLS flags, a handshake).
func probeEtcd(ctx context.Context, endpoints []string, cfg *tls.Config) error {
	var first error
	for _, ep := range endpoints {
		err := probeEndpoint(ctx, ep, cfg)
		if err == nil {
			return nil
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// probeEndpoint probes one endpoint; see probeEtcd.
func probeEndpoint(ctx context.Context, endpoint string, cfg *tls.Config) error {
	u, err := neturl.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil // clientv3 reports malformed endpoints itself
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return err
	}
	defer conn.Close()
	if u.Scheme != "https" && cfg == nil {
		return nil
	}
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	c := cfg.Clone()
	if c.ServerName == "" {
		c.ServerName = u.Hostname()
	}
	tc := tls.Client(conn, c)
	_ = tc.SetDeadline(time.Now().Add(2 * time.Second))
	err = tc.HandshakeContext(ctx)
	if err == nil {
		// With TLS 1.3 the server judges the client certificate after the
		// client's handshake completes: wait briefly for its verdict.
		_ = tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = tc.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
	}
	var verr *tls.CertificateVerificationError
	var oe *net.OpError
	switch {
	case errors.As(err, &verr):
		return fmt.Errorf("TLS: the server's certificate is not trusted (check --etcd-cacert): %w", err)
	case errors.As(err, &oe) && oe.Op == "remote error":
		return fmt.Errorf("TLS: the server rejected the client certificate (check --etcd-cert, --etcd-key and the CA the server trusts): %w", err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

// registerApplierEtcd defines --etcd-* on a command that names the standby
// with --standby-*, so that it runs in the applier's pod with the
// environment the applier already has (ETCDSYNC_ETCD_*).
func registerApplierEtcd(f *flagSet, e *etcdFlags) {
	e.register(f, "standby, as the applier names it (ETCDSYNC_ETCD_* in the applier's pod; --standby-endpoints wins)")
}

// useApplierEtcd makes standby the applier's etcd flags when no
// --standby-endpoints was given.
func useApplierEtcd(standby, applierEtcd *etcdFlags) {
	if len(standby.endpoints) == 0 && len(applierEtcd.endpoints) > 0 {
		*standby = *applierEtcd
	}
}
