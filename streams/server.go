package streams

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

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
	// primary site's hub for the standby site's server).
	LeafListen string
	// LeafRemotes are leafnode URLs (nats-leaf://host:port) this server
	// connects to (the standby site's link to the primary site).
	LeafRemotes []string
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
// accepts clients. The caller owns the server: Shutdown then
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
