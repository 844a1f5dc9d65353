package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/etcdsync/etcdsync/streams"
)

// readUsersFile reads the identities of the embedded NATS server from
// path: one per line, "ROLE NAME [PASSWORD]" separated by blanks, where
// ROLE is publisher, reader or leaf, NAME a user name or the public NKey of
// a user ("U...", no password), and PASSWORD a password or its bcrypt hash
// (`nats server passwd`). '#' starts a comment. Errors name the line, never
// its password.
func readUsersFile(path string) ([]streams.ServerUser, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	var users []streams.ServerUser
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) > 3 {
			return nil, fmt.Errorf("users file %s line %d: want ROLE NAME [PASSWORD], have %d fields", path, n, len(f))
		}
		role, err := streams.ParseRole(f[0])
		if err != nil {
			return nil, fmt.Errorf("users file %s line %d: %w", path, n, err)
		}
		u := streams.ServerUser{Role: role, Name: f[1]}
		if len(f) == 3 {
			u.Password = f[2]
		}
		if len(f) == 2 && !u.IsNKey() {
			return nil, fmt.Errorf("users file %s line %d: user %q has no password and is not an NKey user public key", path, n, u.Name)
		}
		users = append(users, u)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read users file %s: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("users file %s: no identity", path)
	}
	return users, nil
}

// listenFlags configure the embedded NATS server of `publish`: its
// identities and TLS.
type listenFlags struct {
	usersFile string
	tlsCert   string
	tlsKey    string
	tlsCA     string
	storeKey  string
}

func (l *listenFlags) register(f *flagSet) {
	f.String(&l.usersFile, "nats-listen-users-file", "",
		"`FILE` of the identities the embedded JetStream server accepts, one per line \"ROLE NAME [PASSWORD]\":\n"+
			"ROLE publisher (writes the log), reader (appliers, auditors: read the log, publish drift events)\n"+
			"or leaf (the other site's NATS as a leafnode); NAME a user, or an NKey public key (U..., no password);\n"+
			"PASSWORD plain or a bcrypt hash (no blanks, no #). Required unless --nats-listen is a loopback address")
	f.String(&l.tlsCert, "nats-listen-tls-cert", "", "server certificate `FILE` of the embedded JetStream server (PEM; TLS required when set; needs --nats-listen-tls-key)")
	f.String(&l.tlsKey, "nats-listen-tls-key", "", "server key `FILE` of the embedded JetStream server (PEM)")
	f.String(&l.tlsCA, "nats-listen-tls-ca", "", "`FILE` with the CAs that sign client certificates; clients must present one")
	f.String(&l.storeKey, "nats-store-key-file", "", "`FILE` holding the key (first line, at least 32 characters) that encrypts the embedded JetStream store at rest;\n"+
		"a store written with a key opens only with that key")
}

func (l *listenFlags) validate(cmd string) error {
	if (l.tlsCert == "") != (l.tlsKey == "") {
		return usageErrorf(cmd, "--nats-listen-tls-cert and --nats-listen-tls-key must be given together")
	}
	if l.tlsCA != "" && l.tlsCert == "" {
		return usageErrorf(cmd, "--nats-listen-tls-ca needs --nats-listen-tls-cert and --nats-listen-tls-key")
	}
	return nil
}

// apply sets the identities and TLS of cfg from the flags.
func (l *listenFlags) apply(cfg *streams.ServerConfig) error {
	if l.usersFile != "" {
		users, err := readUsersFile(l.usersFile)
		if err != nil {
			return err
		}
		cfg.Users = users
	}
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = l.tlsCert, l.tlsKey, l.tlsCA
	if l.storeKey != "" {
		key, err := readSecret("--nats-store-key-file", l.storeKey)
		if err != nil {
			return err
		}
		if len(key) < 32 {
			return fmt.Errorf("read --nats-store-key-file %s: the key has %d characters, want at least 32", l.storeKey, len(key))
		}
		cfg.StoreKey = key
	}
	return nil
}
