package auditor

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/streams"
)

// partialRetries and partialWait bound how long Audit waits for the applier
// to finish a record split across standby transactions.
const (
	partialRetries = 50
	partialWait    = 20 * time.Millisecond
)

// cut is the consistent point of one audit.
type cut struct {
	standbyRev int64
	pos        streams.Position
	sourceTime time.Time // when the publisher observed pos.Revision
}

// readCut reads the checkpoint from the standby: the response's revision is
// S and the checkpoint is its value at S. A checkpoint whose record is half
// applied (Partial) is not a consistent point: it is read again until the
// applier completes the record.
func (a *Auditor) readCut(ctx context.Context) (cut, error) {
	key := a.cfg.checkpointKey()
	for attempt := 0; ; attempt++ {
		resp, err := a.standby.Get(ctx, key)
		if err != nil {
			return cut{}, fmt.Errorf("read standby checkpoint %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return cut{}, fmt.Errorf("no checkpoint at %s on the standby: %w", key, ErrNotBootstrapped)
		}
		var ck applier.Checkpoint
		if err := json.Unmarshal(resp.Kvs[0].Value, &ck); err != nil {
			return cut{}, fmt.Errorf("decode standby checkpoint %s: %w", key, err)
		}
		switch {
		case ck.Promoted:
			return cut{}, fmt.Errorf("checkpoint %s: the standby was promoted, there is no primary to compare with", key)
		case ck.Snapshot != nil:
			return cut{}, fmt.Errorf("checkpoint %s: snapshot of generation %d at source revision %d being applied (%d keys so far); audit again when it is applied: %w",
				key, ck.Snapshot.Generation, ck.Snapshot.Revision, ck.Snapshot.Keys, ErrReseeding)
		case ck.Position.Revision == 0:
			return cut{}, fmt.Errorf("checkpoint %s holds no source revision: %w", key, ErrNotBootstrapped)
		case ck.Partial != nil:
			if attempt >= partialRetries {
				return cut{}, fmt.Errorf("checkpoint %s: a record after source revision %d stays half applied (the applier stopped mid-record?); retry later",
					key, ck.Position.Revision)
			}
			select {
			case <-ctx.Done():
				return cut{}, ctx.Err()
			case <-time.After(partialWait):
			}
			continue
		}
		return cut{standbyRev: resp.Header.Revision, pos: ck.Position, sourceTime: ck.SourceTime}, nil
	}
}

// checkPrimary checks, with one small read, that the primary is the cluster
// the standby follows and still holds revision P, and returns the
// primary's newest revision (the head the report measures P against).
func (a *Auditor) checkPrimary(ctx context.Context, c cut, sc *scope) (head int64, err error) {
	start, end := sc.keyRange()
	resp, err := a.primary.Get(ctx, start, clientv3.WithRange(end), clientv3.WithRev(c.pos.Revision),
		clientv3.WithLimit(1), clientv3.WithKeysOnly())
	if err != nil {
		return 0, a.primaryErr(err, c)
	}
	if id := resp.Header.ClusterId; id != c.pos.ClusterID {
		return 0, fmt.Errorf("the standby follows source cluster %x but the primary is cluster %x: check --primary-endpoints", c.pos.ClusterID, id)
	}
	return resp.Header.Revision, nil
}

// primaryErr maps the primary's answer to a read at P.
func (a *Auditor) primaryErr(err error, c cut) error {
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		return fmt.Errorf("read primary at source revision %d: %w: retry when the applier has caught up, or re-seed the standby", c.pos.Revision, ErrCompacted)
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("read primary at source revision %d: the primary is behind the standby's checkpoint (restored from a backup?): %w", c.pos.Revision, err)
	}
	return fmt.Errorf("read primary at source revision %d: %w", c.pos.Revision, err)
}

// compare reads both sides at the cut, page by page, and merges them.
func (a *Auditor) compare(ctx context.Context, rep *Report, c cut, sc *scope) error {
	start, end := sc.keyRange()
	g, gctx := errgroup.WithContext(ctx)
	primary := make(chan []*mvccpb.KeyValue, 1)
	standby := make(chan []*mvccpb.KeyValue, 1)
	g.Go(func() error {
		err := a.pages(gctx, a.primary, start, end, c.pos.Revision, primary)
		if err != nil {
			return a.primaryErr(err, c)
		}
		return nil
	})
	g.Go(func() error {
		err := a.pages(gctx, a.standby, start, end, c.standbyRev, standby)
		if err != nil {
			return fmt.Errorf("read standby at revision %d: %w", c.standbyRev, err)
		}
		return nil
	})
	g.Go(func() error { return a.merge(gctx, rep, sc, primary, standby) })
	return g.Wait()
}

// pages sends every key of [start, end) at revision rev to out, one page
// per Range request, in key order, and closes out. A page holds at most
// Config.PageSize keys and Config.PageBytes bytes (see readPage).
func (a *Auditor) pages(ctx context.Context, cli *clientv3.Client, start, end string, rev int64, out chan<- []*mvccpb.KeyValue) error {
	defer close(out)
	kv := pb.NewKVClient(cli.ActiveConnection())
	key := start
	limit := min(a.cfg.PageSize, firstPageKeys)
	for {
		resp, err := a.readPage(ctx, kv, key, end, rev, &limit)
		if err != nil {
			return fmt.Errorf("read page after %q: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		// The next page starts after this one's last key; the merge owns
		// the page once sent.
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		select {
		case out <- resp.Kvs:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !resp.More {
			return nil
		}
	}
}

// firstPageKeys is the number of keys asked for in the first page of a
// side: the values' size is not known yet, and etcd builds a response
// whole before the client can refuse it, so the pages start small and
// grow.
const firstPageKeys = 16

// kvOverhead is about what a key-value pair's fields other than key and
// value take in a response.
const kvOverhead = 32

// readPage reads up to *limit keys from key. The client refuses a response
// larger than Config.PageBytes from its length, before reading it (gRPC's
// receive limit); the page is then asked for again with half the keys, down
// to a single key, which is read whatever its size. After each page *limit
// moves towards the number of keys of the page's largest size that fill
// half of PageBytes, at most doubling and at most Config.PageSize.
func (a *Auditor) readPage(ctx context.Context, kv pb.KVClient, key, end string, rev int64, limit *int64) (*pb.RangeResponse, error) {
	for {
		recv := int(a.cfg.PageBytes)
		if *limit == 1 {
			recv = math.MaxInt32
		}
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end), Revision: rev, Limit: *limit},
			grpc.MaxCallRecvMsgSize(recv))
		if err != nil {
			if s, ok := status.FromError(err); ok && s.Code() == codes.ResourceExhausted && strings.Contains(s.Message(), "larger than max") && *limit > 1 {
				*limit /= 2
				continue
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, rpctypes.Error(err)
		}
		if len(resp.Kvs) > 0 {
			var largest int64
			for _, kv := range resp.Kvs {
				largest = max(largest, int64(len(kv.Key)+len(kv.Value))+kvOverhead)
			}
			*limit = min(max(a.cfg.PageBytes/2/largest, 1), 2**limit, a.cfg.PageSize)
		}
		return resp, nil
	}
}

// side iterates over the in-scope keys of one side's pages.
type side struct {
	sc   *scope
	ch   <-chan []*mvccpb.KeyValue
	page []*mvccpb.KeyValue
	cur  *mvccpb.KeyValue // nil at the end
	n    int64            // in-scope keys seen
	// unparsed is whether cur does not parse as a Kubernetes key.
	unparsed bool
}

// next advances to the next in-scope key; cur is nil at the end.
func (s *side) next(ctx context.Context) error {
	for {
		for len(s.page) > 0 {
			kv := s.page[0]
			s.page[0] = nil // let the page go as it is consumed
			s.page = s.page[1:]
			if in, unparsed := s.sc.check(kv.Key); in {
				s.cur, s.unparsed = kv, unparsed
				s.n++
				return nil
			}
		}
		select {
		case p, ok := <-s.ch:
			if !ok {
				s.cur = nil
				return nil
			}
			s.page = p
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// merge walks both sides in key order and records every difference.
func (a *Auditor) merge(ctx context.Context, rep *Report, sc *scope, primary, standby <-chan []*mvccpb.KeyValue) error {
	p, s := &side{sc: sc, ch: primary}, &side{sc: sc, ch: standby}
	if err := p.next(ctx); err != nil {
		return err
	}
	if err := s.next(ctx); err != nil {
		return err
	}
	began := time.Now()
	lastProgress := began
	for p.cur != nil || s.cur != nil {
		var cmp int
		switch {
		case p.cur == nil:
			cmp = 1
		case s.cur == nil:
			cmp = -1
		default:
			cmp = bytes.Compare(p.cur.Key, s.cur.Key)
		}
		rep.Compared++
		switch {
		case cmp > 0 && s.unparsed:
			rep.Unparsed.add(s.cur.Key)
		case cmp <= 0 && p.unparsed:
			rep.Unparsed.add(p.cur.Key)
		}
		var err error
		switch {
		case cmp < 0:
			k := newKeyDrift(p.cur.Key, Missed)
			k.PrimaryModRevision, k.PrimaryHMAC = p.cur.ModRevision, a.hash(p.cur.Value)
			a.record(rep, k)
			err = p.next(ctx)
		case cmp > 0:
			k := newKeyDrift(s.cur.Key, Surplus)
			k.StandbyModRevision, k.StandbyHMAC = s.cur.ModRevision, a.hash(s.cur.Value)
			a.record(rep, k)
			err = s.next(ctx)
		default:
			if !bytes.Equal(p.cur.Value, s.cur.Value) {
				k := newKeyDrift(p.cur.Key, Mismatched)
				k.PrimaryModRevision, k.PrimaryHMAC = p.cur.ModRevision, a.hash(p.cur.Value)
				k.StandbyModRevision, k.StandbyHMAC = s.cur.ModRevision, a.hash(s.cur.Value)
				a.record(rep, k)
			}
			if err = p.next(ctx); err == nil {
				err = s.next(ctx)
			}
		}
		if err != nil {
			return err
		}
		if a.cfg.Progress != nil && rep.Compared%1024 == 0 && time.Since(lastProgress) >= 200*time.Millisecond {
			lastProgress = time.Now()
			a.cfg.Progress(rep.Compared, lastProgress.Sub(began))
		}
	}
	rep.PrimaryKeys, rep.StandbyKeys = p.n, s.n
	if a.cfg.Progress != nil {
		a.cfg.Progress(rep.Compared, time.Since(began))
	}
	return nil
}

// record adds a drifted key to the report.
func (a *Auditor) record(rep *Report, k KeyDrift) {
	switch k.State {
	case Missed:
		rep.Missed.add(k, a.cfg.MaxKeys)
	case Surplus:
		rep.Surplus.add(k, a.cfg.MaxKeys)
	case Mismatched:
		rep.Mismatched.add(k, a.cfg.MaxKeys)
	}
	if len(rep.tracked) < a.cfg.tracked() {
		rep.tracked = append(rep.tracked, k)
	}
}

// hash returns the hex keyed hash of v (Report.ValueHMACKey names the key).
func (a *Auditor) hash(v []byte) string {
	h := a.hasher.Sum(v)
	return hex.EncodeToString(h[:])
}

// clusterHex formats a cluster ID like streams.Position does.
func clusterHex(id uint64) string { return strconv.FormatUint(id, 16) }
