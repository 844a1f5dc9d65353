package main

import "github.com/etcdsync/etcdsync/streams"

// logKeyFlag is --log-key-file: the key ring that signs (publish) and
// verifies (apply, status, promote, audit) the log's messages.
type logKeyFlag struct {
	path string
}

// register defines --log-key-file; use says what the command does with the
// ring, empty what it does without one (default: "an unauthenticated log").
func (l *logKeyFlag) register(f *flagSet, use, empty string) {
	if empty == "" {
		empty = "an unauthenticated log"
	}
	f.String(&l.path, "log-key-file", "", "`FILE` of the log key ring, one ID:BASE64 key per line (at least 32 bytes; first signs, all verify):\n"+use+";\nempty: "+empty)
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
