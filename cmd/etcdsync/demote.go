package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/streams"
)

type demoteOptions struct {
	standby       etcdFlags
	applierEtcd   etcdFlags
	stream        string
	checkpointKey string
	json          bool
	log           logFlags
}

func demoteFlags(o *demoteOptions) *flagSet {
	f := newFlagSet("demote", "--standby-endpoints URLS [--stream NAME] [--json]",
		"Turns a promoted etcd back into a standby (the second role swap): removes its checkpoint,\n"+
			"promoted marker included, so its applier re-seeds from the newest snapshot of the stream\n"+
			"it follows, and prints the cluster and position it held (saved under "+keyspace.OwnPrefix+"demoted/<stream>).\n"+
			"Refuses while an applier or a publisher of that etcd is running (its presence key or\n"+
			"leader-election candidacy is in the etcd): stop them first. An etcd that was never\n"+
			"promoted is refused; one without a checkpoint is left as it is.\n"+
			"Exit status: 0 demoted (or nothing to demote), 1 refused or failed, 2 bad usage.")
	registerSide(f, &o.standby, "standby")
	registerApplierEtcd(f, &o.applierEtcd)
	f.String(&o.stream, "stream", streams.DefaultStream, "`NAME` of the log stream")
	f.String(&o.checkpointKey, "checkpoint-key", "", "`KEY` holding the checkpoint (default "+keyspace.OwnPrefix+"checkpoint/<stream>)")
	f.Bool(&o.json, "json", false, "print the report as JSON")
	o.log.register(f, "info")
	return f
}

func runDemote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const cmd = "demote"
	var o demoteOptions
	if err := demoteFlags(&o).parse(args, stdout); err != nil {
		return err
	}
	useApplierEtcd(&o.standby, &o.applierEtcd)
	if err := validateSide(cmd, "standby", &o.standby); err != nil {
		return err
	}
	if _, err := o.log.logger(cmd, stderr); err != nil {
		return err
	}
	cli, err := o.standby.connect(ctx)
	if err != nil {
		return fmt.Errorf("standby %w", err)
	}
	defer cli.Close()
	rep, err := applier.Demote(ctx, applier.DemoteConfig{Stream: o.stream, CheckpointKey: o.checkpointKey}, cli)
	if err != nil {
		return err
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	ck := rep.Held
	if ck == nil {
		fmt.Fprintf(stdout, "nothing to demote: this etcd holds no checkpoint; its applier bootstraps from the newest snapshot\n")
		return nil
	}
	fmt.Fprintf(stdout, "demoted: the promoted marker and the position are removed; the applier will re-seed from the newest snapshot\n")
	fmt.Fprintf(stdout, "  held             the copy of cluster %s at generation %d, source revision %d, stream seq %d (%s)\n", rep.ClusterID, ck.Position.Generation, ck.Position.Revision, ck.Position.Seq, ck.Position)
	fmt.Fprintf(stdout, "  source time      %s\n", ck.SourceTime.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(stdout, "  saved at         %s (etcd revision %d)\n", rep.SavedAt, rep.Revision)
	fmt.Fprintf(stdout, "next: make its stream a mirror of the new primary's, then start its applier (--allow-mass-delete if the re-seed must delete much)\n")
	return nil
}
