package main

import "github.com/etcdsync/etcdsync/streams"

// logKeyFlag is --log-key-file: the key ring that signs (publish) and
// verifies (apply, status, promote, audit) the log's messages.
type logKeyFlag struct {
	path string
}

func (l *logKeyFlag) register(f *flagSet, use string) {
	f.String(&l.path, "log-key-file", "", "`FILE` of the log key ring, one ID:BASE64 key per line (at least 32 bytes; first signs, all verify): "+use+"; empty: an unauthenticated log")
}

// load reads the key ring; nil without --log-key-file. A bad file is a
// usage error that names the line, never the key.
func (l *logKeyFlag) load(cmd string) (*streams.KeyRing, error) {
	if l.path == "" {
		return nil, nil
	}
	ring, err := streams.LoadKeyRing(l.path)
	if err != nil {
		return nil, usageErrorf(cmd, "--log-key-file: %v", err)
	}
	return ring, nil
}
