package streams

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// ErrNoClientAuth is returned by StartServer when a listener is reachable
// beyond loopback and no identity may authenticate on it: anyone on the
// network could then read the log, or write into it.
var ErrNoClientAuth = errors.New("listening beyond loopback needs client authentication")

// ServerUser is one identity the embedded server accepts.
type ServerUser struct {
	// Role selects the permissions (Access.Permissions).
	Role Role
	// Name is a user name, or the public NKey of a user ("U...") that
	// authenticates by signing the server's nonce with its seed.
	Name string
	// Password is the user's password, plain or a bcrypt hash ("$2a$...").
	// Empty for an NKey. Never logged.
	Password string
}

// IsNKey reports whether u authenticates with an NKey.
func (u ServerUser) IsNKey() bool { return u.Password == "" && nkeys.IsValidPublicUserKey(u.Name) }

// ServerConfig describes an embedded JetStream server.
type ServerConfig struct {
	// StoreDir holds the JetStream file store. Required.
	StoreDir string
	// Listen is the client address, host:port. Default "127.0.0.1:4222";
	// port 0 or -1 picks a free port.
	Listen string
	// Domain is the JetStream domain (empty: none).
	Domain string
	// MaxPayload is the largest message accepted. Default DefaultMaxMsgSize,
	// enough for etcd's largest request (1.5 MiB) in one message.
	MaxPayload int32
	// SyncInterval is how often the store is fsynced. Default 1s (the
	// server's own default of 2 minutes can lose acknowledged writes on an
	// OS crash).
	SyncInterval time.Duration
	// Name is the server name. Default "etcdsync".
	Name string
	// LeafListen, if set, accepts leafnode connections on host:port (the
	// primary site's hub for the standby site's server). The address is
	// not advertised to the leafnodes: they reconnect at their own URL.
	LeafListen string
	// LeafRemotes are leafnode URLs (nats-leaf://host:port) this server
	// connects to (the standby site's link to the primary site).
	LeafRemotes []string
	// Users are the identities accepted on the client listener (roles
	// publisher and reader) and on the leafnode listener (role leaf). Empty:
	// anonymous clients have every permission, which StartServer allows only
	// when every listener is on a loopback address (ErrNoClientAuth).
	Users []ServerUser
	// LocalNKey is the public NKey of an identity with RolePublisher that
	// may connect only in process (nats.InProcessServer): the embedding
	// program's own publisher. It is not client authentication for
	// ErrNoClientAuth. Used only with Users.
	LocalNKey string
	// Access names the site and streams the roles' permissions cover.
	// Default DefaultAccess() with Domain.
	Access Access
	// TLSCert and TLSKey are the PEM files of the server's certificate and
	// key; when set, the client and leafnode listeners require TLS.
	TLSCert, TLSKey string
	// TLSCA is a PEM file of the CAs that sign client certificates; when
	// set, clients and leafnodes must present one.
	TLSCA string
	// StoreKey, when set, encrypts the JetStream store at rest (JetStream's
	// own store encryption, ChaCha20-Poly1305). A store written with a key
	// opens only with that key. Never logged.
	StoreKey string
}

// isLoopback reports whether a listener on host is reachable from this
// machine only. A host name other than localhost counts as reachable.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authOptions sets the users, their permissions and TLS of opts from cfg.
func authOptions(cfg ServerConfig, opts *server.Options) error {
	access := cfg.Access
	if access == (Access{}) {
		access = DefaultAccess()
		access.Domain = cfg.Domain
	}
	if err := access.Validate(); err != nil {
		return err
	}
	var clients, leaves int
	seen := map[string]bool{}
	for i, u := range cfg.Users {
		if u.Name == "" || seen[u.Name] {
			return fmt.Errorf("user %d: empty or repeated name %q", i+1, u.Name)
		}
		seen[u.Name] = true
		if _, err := ParseRole(string(u.Role)); err != nil {
			return fmt.Errorf("user %q: %w", u.Name, err)
		}
		kinds := map[string]struct{}{jwt.ConnectionTypeStandard: {}}
		if u.Role == RoleLeaf {
			kinds = map[string]struct{}{jwt.ConnectionTypeLeafnode: {}}
			leaves++
		} else {
			clients++
		}
		perms := access.Permissions(u.Role)
		switch {
		case u.IsNKey():
			opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.Name, Permissions: perms, AllowedConnectionTypes: kinds})
		case u.Password == "":
			return fmt.Errorf("user %q: no password, and not an NKey user public key", u.Name)
		default:
			opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: u.Password, Permissions: perms, AllowedConnectionTypes: kinds})
		}
	}
	if !isLoopback(opts.Host) && clients == 0 {
		return fmt.Errorf("client address %s: %w (a users file with publisher or reader identities)", net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port)), ErrNoClientAuth)
	}
	if opts.LeafNode.Port != 0 && !isLoopback(opts.LeafNode.Host) && leaves == 0 {
		return fmt.Errorf("leafnode address %s: %w (a users file with a leaf identity)", net.JoinHostPort(opts.LeafNode.Host, strconv.Itoa(opts.LeafNode.Port)), ErrNoClientAuth)
	}
	if cfg.LocalNKey != "" && len(cfg.Users) > 0 {
		if !nkeys.IsValidPublicUserKey(cfg.LocalNKey) {
			return fmt.Errorf("local nkey: not an NKey user public key")
		}
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: cfg.LocalNKey, Permissions: access.Permissions(RolePublisher),
			AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}}})
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return fmt.Errorf("tls: certificate and key must be given together")
	}
	if cfg.TLSCA != "" && cfg.TLSCert == "" {
		return fmt.Errorf("tls: a client CA needs the server's certificate and key")
	}
	if cfg.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey, CaFile: cfg.TLSCA, Verify: cfg.TLSCA != ""})
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify, opts.TLSTimeout = true, tc, cfg.TLSCA != "", 5
		if opts.LeafNode.Port != 0 {
			opts.LeafNode.TLSConfig, opts.LeafNode.TLSTimeout = tc.Clone(), 5
		}
	}
	return nil
}

// DefaultServerConfig returns the defaults of an embedded server.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		Listen:       "127.0.0.1:4222",
		MaxPayload:   DefaultMaxMsgSize,
		SyncInterval: time.Second,
		Name:         "etcdsync",
	}
}

// StartServer starts an embedded JetStream server and waits until it
// accepts clients. With Users, clients and leafnodes authenticate and get
// the permissions of their Role; without, a listener beyond loopback is
// refused with ErrNoClientAuth. The caller owns the server: Shutdown then
// WaitForShutdown. It returns an error when the address is invalid or taken
// or the store cannot be opened.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, fmt.Errorf("start embedded nats: store directory is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultServerConfig().Listen
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: listen address %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("start embedded nats: listen address %q: bad port", cfg.Listen)
	}
	if port == 0 {
		port = -1
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxMsgSize
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = time.Second
	}
	if cfg.Name == "" {
		cfg.Name = "etcdsync"
	}
	opts := &server.Options{
		ServerName:      cfg.Name,
		Host:            host,
		Port:            port,
		JetStream:       true,
		JetStreamDomain: cfg.Domain,
		StoreDir:        cfg.StoreDir,
		MaxPayload:      cfg.MaxPayload,
		SyncInterval:    cfg.SyncInterval,
		NoSigs:          true,
		NoLog:           true,
	}
	if cfg.LeafListen != "" {
		lh, lp, err := net.SplitHostPort(cfg.LeafListen)
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: leafnode address %q: %w", cfg.LeafListen, err)
		}
		if opts.LeafNode.Port, err = strconv.Atoi(lp); err != nil {
			return nil, fmt.Errorf("start embedded nats: leafnode address %q: bad port", cfg.LeafListen)
		}
		opts.LeafNode.Host = lh
		// The server does not advertise its own leafnode address to the
		// leafnodes it accepts: a standby site reconnects only at the URL
		// it was given (a load balancer, a WAN proxy, a name its TLS
		// certificate holds), never at this server's listen address.
		opts.LeafNode.NoAdvertise = true
	}
	for _, r := range cfg.LeafRemotes {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("start embedded nats: leafnode remote %q: not a nats-leaf://host:port URL", r)
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, &server.RemoteLeafOpts{URLs: []*url.URL{u}})
	}
	if len(cfg.LeafRemotes) > 0 {
		opts.LeafNode.ReconnectInterval = time.Second
	}
	if cfg.StoreKey != "" {
		opts.JetStreamKey, opts.JetStreamCipher = cfg.StoreKey, server.ChaCha
	}
	if err := authOptions(cfg, opts); err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("start embedded nats on %s: not ready after 10s (address in use or store unusable)", cfg.Listen)
	}
	return s, nil
}
