package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

type streamsOptions struct {
	nats         natsFlags
	role         string
	site         string
	stream       string
	originDomain string
	replicas     int
	maxAge       time.Duration
	maxBytes     int64
	snapInterval time.Duration
	log          logFlags
}

func streamsFlags(o *streamsOptions) *flagSet {
	f := newFlagSet("streams init", "--role primary|standby --nats-url URL [flags]",
		"Creates (or updates) the log stream of a site, and creates the drift stream of --site.\n"+
			"  --role primary: the writable log stream on subjects etcdsync.<site>.log.> (the publisher\n"+
			"                  also creates it on start).\n"+
			"  --role standby: a mirror of the primary site's stream in JetStream domain\n"+
			"                  --origin-domain, read by the applier; it keeps serving what already\n"+
			"                  crossed while the link is down, and keeps the origin's sequences.\n"+
			"`etcdsync promote` turns the mirror into a writable stream at failover.")
	o.nats.register(f, "`URL` of this site's NATS servers (required)")
	f.String(&o.role, "role", "", "`ROLE` of this site: primary or standby (required)")
	f.String(&o.site, "site", streams.DefaultSite, "`NAME` of the publishing site in subjects (primary role)")
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the stream (the mirror has the origin's name)")
	f.String(&o.originDomain, "origin-domain", "primary", "JetStream `DOMAIN` of the primary site (standby role)")
	f.Int(&o.replicas, "stream-replicas", 1, "`N` replicas (1 on a single server, 3 in a NATS cluster)")
	f.Duration(&o.maxAge, "max-age", 0, "drop messages older than `DURATION` (0: keep forever)")
	f.Bytes(&o.maxBytes, "max-bytes", 0, "cap the stream at `SIZE` (0: unlimited)")
	f.Duration(&o.snapInterval, "snapshot-interval", publisher.DefaultConfig().SnapshotInterval,
		"the publisher's --snapshot-interval: a --max-age at or below it is refused, since the stream would lose its last complete snapshot (`DURATION`)")
	o.log.register(f, "info")
	return f
}

func runStreams(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "streams"
	if len(args) == 0 || args[0] != "init" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return streamsFlags(&streamsOptions{}).parse([]string{"-h"}, stdout)
		}
		return usageErrorf(cmd, "want a subcommand: streams init")
	}
	var o streamsOptions
	if err := streamsFlags(&o).parse(args[1:], stdout); err != nil {
		return err
	}
	if o.maxAge > 0 && (o.snapInterval <= 0 || o.maxAge <= o.snapInterval) {
		return usageErrorf(cmd, "--max-age %s: must be above the publisher's snapshot interval %s (--snapshot-interval), or the stream loses its last complete snapshot and a standby with a gap cannot re-seed", o.maxAge, o.snapInterval)
	}
	if o.nats.url == "" {
		return usageErrorf(cmd, "--nats-url is required")
	}
	if err := o.nats.validate(cmd); err != nil {
		return err
	}
	if o.role != "primary" && o.role != "standby" {
		return usageErrorf(cmd, "--role %q: must be primary or standby", o.role)
	}
	log, err := o.log.logger(cmd, stderr)
	if err != nil {
		return err
	}
	nc, err := o.nats.connect(o.nats.url, "etcdsync-streams", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var s jetstream.Stream
	switch o.role {
	case "primary":
		cfg := streams.DefaultLogConfig()
		cfg.Name, cfg.Site, cfg.Replicas, cfg.MaxAge, cfg.MaxBytes = o.stream, o.site, o.replicas, o.maxAge, o.maxBytes
		if err := cfg.Validate(); err != nil {
			return usageErrorf(cmd, "%v", err)
		}
		s, err = streams.EnsureLogStream(ctx, js, cfg)
	case "standby":
		s, err = streams.EnsureMirror(ctx, js, streams.MirrorConfig{Name: o.stream, OriginDomain: o.originDomain,
			Replicas: o.replicas, MaxAge: o.maxAge, MaxBytes: o.maxBytes})
	default:
		return usageErrorf(cmd, "--role %q: must be primary or standby", o.role)
	}
	if err != nil {
		return err
	}
	// The drift stream too: auditors with the reader role may not create it.
	if err := ensureDriftStream(ctx, nc, o.site); err != nil {
		return err
	}
	c := s.CachedInfo().Config
	if c.Mirror != nil {
		fmt.Fprintf(stdout, "stream %s: mirror of %s in domain %s, %d replicas\n", c.Name, c.Mirror.Name, o.originDomain, c.Replicas)
	} else {
		fmt.Fprintf(stdout, "stream %s: subjects %v, %d replicas, max age %s, max bytes %d\n", c.Name, c.Subjects, c.Replicas, c.MaxAge, c.MaxBytes)
	}
	return nil
}
