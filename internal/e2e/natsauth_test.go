package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/etcdsync/etcdsync/applier"
	"github.com/etcdsync/etcdsync/auditor"
	"github.com/etcdsync/etcdsync/internal/testenv"
	"github.com/etcdsync/etcdsync/keyspace"
	"github.com/etcdsync/etcdsync/publisher"
	"github.com/etcdsync/etcdsync/streams"
)

// identity is a connection to the embedded server as one NATS identity,
// recording the permission violations the server reports to it.
type identity struct {
	t    *testing.T
	name string
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

// connectAs connects to url with opts, or returns the connection error.
func connectAs(t *testing.T, name, url string, opts ...nats.Option) (*identity, error) {
	t.Helper()
	id := &identity{t: t, name: name}
	opts = append(opts, nats.Name(name), nats.MaxReconnects(0), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		id.mu.Lock()
		defer id.mu.Unlock()
		id.violations = append(id.violations, err.Error())
	}))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	id.nc = nc
	if id.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	return id, nil
}

func mustConnectAs(t *testing.T, name, url string, opts ...nats.Option) *identity {
	t.Helper()
	id, err := connectAs(t, name, url, opts...)
	if err != nil {
		t.Fatalf("%s: connect: %v", name, err)
	}
	return id
}

// denied waits until the server has reported a permission violation on
// subject to this identity.
func (id *identity) denied(op, subject string) {
	id.t.Helper()
	want := fmt.Sprintf("permissions violation for %s to %q", op, subject)
	testenvEventually(id.t, func() bool {
		id.mu.Lock()
		defer id.mu.Unlock()
		for _, v := range id.violations {
			if strings.Contains(strings.ToLower(v), strings.ToLower(want)) {
				return true
			}
		}
		return false
	}, id.name+": "+want)
}

// nkeyUser returns a new NKey user: its public key and the option that
// authenticates with its seed.
func nkeyUser(t *testing.T) (string, nats.Option) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub, nats.Nkey(pub, kp.Sign)
}

// shortCtx bounds one JetStream API call that the server is expected to
// refuse (a refused request is never answered).
func shortCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestNATSAuthLeastPrivilege runs the embedded server as `publish` does
// beyond loopback: refused without identities; with a users file, the
// publisher's identity publishes the log, an applier and an auditor with
// reader identities (an NKey and a password) replicate and publish drift
// events. Anonymous clients, wrong passwords, unknown NKeys and the leaf
// identity cannot connect as clients; the readers cannot write into the log
// by any path (publish, a stream that republishes onto it, changing or
// purging it, a consumer of another stream delivering onto it); the
// publisher cannot publish drift events. The log holds exactly the
// publisher's messages.
func TestNATSAuthLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := &pipeline{t: t, primary: testenv.StartEtcd(t), standby: testenv.StartEtcd(t)}

	applierKey, applierAuth := nkeyUser(t)
	_, strangerAuth := nkeyUser(t)
	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen = t.TempDir(), "0.0.0.0:-1"
	if _, err := streams.StartServer(cfg); !errors.Is(err, streams.ErrNoClientAuth) {
		t.Fatalf("no identities on 0.0.0.0: %v, want ErrNoClientAuth", err)
	}
	cfg.Users = []streams.ServerUser{
		{Role: streams.RolePublisher, Name: "publisher", Password: "publisher-secret"},
		{Role: streams.RoleReader, Name: applierKey},
		{Role: streams.RoleReader, Name: "auditor", Password: "auditor-secret"},
		{Role: streams.RoleLeaf, Name: "standby-site", Password: "leaf-secret"},
	}
	srv, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", srv.Addr().(*net.TCPAddr).Port)

	// Nobody without an identity of a client role gets in.
	for name, opts := range map[string][]nats.Option{
		"anonymous":      nil,
		"wrong password": {nats.UserInfo("publisher", "auditor-secret")},
		"unknown nkey":   {strangerAuth},
		"leaf as client": {nats.UserInfo("standby-site", "leaf-secret")},
	} {
		if _, err := connectAs(t, name, url, opts...); !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: connect: %v, want an authorization violation", name, err)
		}
	}

	pub := mustConnectAs(t, "publisher", url, nats.UserInfo("publisher", "publisher-secret"))
	app := mustConnectAs(t, "applier", url, applierAuth)
	aud := mustConnectAs(t, "auditor", url, nats.UserInfo("auditor", "auditor-secret"))

	// The publisher's identity runs the publisher and creates the drift
	// stream (as `publish` does); a reader runs the applier.
	acfg := auditor.DefaultConfig()
	if _, err := pub.js.CreateStream(ctx, auditor.DriftStreamConfig(acfg)); err != nil {
		t.Fatalf("publisher: create drift stream: %v", err)
	}
	// No idle progress records: the log must grow by exactly the
	// publisher's revisions, so that a message anyone else got in shows.
	pcfg := p.publisherConfig()
	pcfg.ProgressInterval = time.Hour
	pb, err := publisher.New(pcfg, p.primary.Client, pub.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, pb.Run))
	ap, err := applier.New(p.applierConfig(), p.standby.Client, app.nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.runs = append(p.runs, start(t, ap.Run))
	for i := 0; i < 20; i++ {
		put(t, p.primary.Client, fmt.Sprintf("/registry/configmaps/app/cm-%02d", i), fmt.Sprintf("v%d", i))
	}
	rules := rawRules(t)
	p.waitConverged(rules, 30*time.Second)

	// A reader audits and publishes drift events into the existing stream.
	acfg.Scope.Mode = keyspace.ModeRaw
	a, err := auditor.New(acfg, p.primary.Client, p.standby.Client, aud.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := a.Audit(ctx)
	if err != nil || !rep.Consistent || !rep.Events.Published {
		t.Fatalf("auditor as a reader: %v, consistent %v, events %+v", err, rep.Consistent, rep.Events)
	}

	// Replicating and auditing needed nothing the roles do not grant.
	for _, id := range []*identity{pub, app, aud} {
		id.mu.Lock()
		if len(id.violations) > 0 {
			t.Errorf("%s was refused while doing its work: %q", id.name, id.violations)
		}
		id.mu.Unlock()
	}

	logStream, err := pub.js.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := logStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := info.State

	// The readers cannot write into the log, by any path.
	subj := streams.Subjects{Site: streams.DefaultSite}
	for _, r := range []*identity{app, aud} {
		if err := r.nc.Publish(subj.Revision(), []byte("forged")); err != nil {
			t.Fatal(err)
		}
		r.denied("publish", subj.Revision())
		if _, err := r.js.Publish(shortCtx(t), subj.Epoch(), []byte("forged")); err == nil {
			t.Errorf("%s: a JetStream publish to the log was acknowledged", r.name)
		}
	}
	refused := []struct {
		what    string
		subject string
		call    func(ctx context.Context) error
	}{
		{"create a stream that republishes onto the log", "$JS.API.STREAM.CREATE.INJECT", func(ctx context.Context) error {
			_, err := aud.js.CreateStream(ctx, jetstream.StreamConfig{Name: "INJECT", Subjects: []string{"inject.>"},
				RePublish: &jetstream.RePublish{Source: ">", Destination: subj.Revision()}})
			return err
		}},
		{"change the drift stream to republish onto the log", "$JS.API.STREAM.UPDATE." + streams.DefaultDriftStream, func(ctx context.Context) error {
			c := auditor.DriftStreamConfig(acfg)
			c.RePublish = &jetstream.RePublish{Source: ">", Destination: subj.Revision()}
			_, err := aud.js.UpdateStream(ctx, c)
			return err
		}},
		{"change the log stream", "$JS.API.STREAM.UPDATE." + streams.DefaultStream, func(ctx context.Context) error {
			c := info.Config
			c.Subjects = append(c.Subjects, "inject.>")
			_, err := app.js.UpdateStream(ctx, c)
			return err
		}},
		{"purge the log", "$JS.API.STREAM.PURGE." + streams.DefaultStream, func(ctx context.Context) error {
			s, err := app.js.Stream(ctx, streams.DefaultStream)
			if err != nil {
				return err
			}
			return s.Purge(ctx)
		}},
		{"delete a log message", "$JS.API.STREAM.MSG.DELETE." + streams.DefaultStream, func(ctx context.Context) error {
			s, err := app.js.Stream(ctx, streams.DefaultStream)
			if err != nil {
				return err
			}
			return s.DeleteMsg(ctx, 1)
		}},
		{"deliver the drift stream onto the log", "$JS.API.CONSUMER.CREATE." + streams.DefaultDriftStream + ".inject", func(ctx context.Context) error {
			_, err := aud.js.CreateConsumer(ctx, streams.DefaultDriftStream, jetstream.ConsumerConfig{Name: "inject"})
			return err
		}},
	}
	for _, r := range refused {
		if err := r.call(shortCtx(t)); err == nil {
			t.Errorf("reader could %s", r.what)
		}
	}
	aud.denied("publish", "$JS.API.STREAM.CREATE.INJECT")
	aud.denied("publish", "$JS.API.STREAM.UPDATE."+streams.DefaultDriftStream)
	app.denied("publish", "$JS.API.STREAM.UPDATE."+streams.DefaultStream)
	app.denied("publish", "$JS.API.STREAM.PURGE."+streams.DefaultStream)
	app.denied("publish", "$JS.API.STREAM.MSG.DELETE."+streams.DefaultStream)

	// The publisher cannot publish drift events, nor read them.
	if _, err := pub.js.Publish(shortCtx(t), auditor.SummarySubject(streams.DefaultSite), []byte("{}")); err == nil {
		t.Error("publisher: a drift event was acknowledged")
	}
	pub.denied("publish", auditor.SummarySubject(streams.DefaultSite))

	// The log holds exactly what the publisher wrote, and replication goes on.
	put(t, p.primary.Client, "/registry/configmaps/app/after", "x")
	p.waitConverged(rules, 30*time.Second)
	info, err = logStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != before.Msgs+1 || info.State.LastSeq != before.LastSeq+1 {
		t.Fatalf("log went from %d messages (last %d) to %d (last %d); want one more, the publisher's", before.Msgs, before.LastSeq, info.State.Msgs, info.State.LastSeq)
	}
	if n := srv.GlobalAccount().JetStreamUsage().Streams; n != 2 {
		t.Fatalf("the server holds %d streams, want the log and the drift stream", n)
	}
	// The publisher's identity (on a connection of its own, not the running
	// publisher's) cannot reconfigure the log stream (streams init's, with
	// an admin identity): a RePublish would copy the log onto the drift subjects,
	// where consumers take it for drift events, and a lower limit would
	// purge the log.
	owner := mustConnectAs(t, "publisher identity", url, nats.UserInfo("publisher", "publisher-secret"))
	for what, change := range map[string]func(c *jetstream.StreamConfig){
		"republish the log onto the drift subjects": func(c *jetstream.StreamConfig) {
			c.RePublish = &jetstream.RePublish{Source: ">", Destination: subj.Drift() + ".>"}
		},
		"cut the log to one message": func(c *jetstream.StreamConfig) { c.MaxMsgs = 1 },
	} {
		c := info.Config
		change(&c)
		if _, err := owner.js.UpdateStream(shortCtx(t), c); err == nil {
			t.Errorf("publisher could %s", what)
		}
	}
	owner.denied("publish", "$JS.API.STREAM.UPDATE."+streams.DefaultStream)
}

// TestNATSAuthLeafLink: the primary site's server accepts the standby
// site's server as a leafnode only with the leaf identity, and over that
// link the standby's mirror of the log catches up; clients of the standby
// site cannot write into the primary's log, nor change or delete it,
// through the link.
func TestNATSAuthLeafLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	leafPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	cfg := streams.DefaultServerConfig()
	cfg.StoreDir, cfg.Listen, cfg.Domain, cfg.Name = t.TempDir(), "127.0.0.1:-1", "primary", "primary"
	cfg.LeafListen = fmt.Sprintf("0.0.0.0:%d", leafPort)
	cfg.Users = []streams.ServerUser{{Role: streams.RolePublisher, Name: "publisher", Password: "publisher-secret"}}
	if _, err := streams.StartServer(cfg); !errors.Is(err, streams.ErrNoClientAuth) {
		t.Fatalf("leafnode listener on 0.0.0.0 without a leaf identity: %v, want ErrNoClientAuth", err)
	}
	cfg.Users = append(cfg.Users, streams.ServerUser{Role: streams.RoleLeaf, Name: "standby-site", Password: "leaf-secret"})
	primary, err := streams.StartServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { primary.Shutdown(); primary.WaitForShutdown() })
	pub := mustConnectAs(t, "publisher", primary.ClientURL(), nats.UserInfo("publisher", "publisher-secret"))
	logStream, _, err := streams.OpenLogStream(ctx, pub.js, streams.DefaultLogConfig(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}

	scfg := streams.DefaultServerConfig()
	scfg.StoreDir, scfg.Listen, scfg.Domain, scfg.Name = t.TempDir(), "127.0.0.1:-1", "standby", "standby"
	scfg.LeafRemotes = []string{fmt.Sprintf("nats-leaf://standby-site:leaf-secret@127.0.0.1:%d", leafPort)}
	standby, err := streams.StartServer(scfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { standby.Shutdown(); standby.WaitForShutdown() })
	testenvEventually(t, func() bool { return primary.NumLeafNodes() == 1 }, "the standby's leafnode to connect")
	local := mustConnectAs(t, "standby client", standby.ClientURL())
	if _, err := streams.EnsureMirror(ctx, local.js, streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "primary", Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	subj := streams.Subjects{Site: streams.DefaultSite}
	for i := 0; i < 10; i++ {
		if _, err := pub.js.Publish(ctx, subj.Revision(), []byte("record")); err != nil {
			t.Fatal(err)
		}
	}
	mirror, err := local.js.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	testenvEventually(t, func() bool {
		info, err := mirror.Info(ctx)
		return err == nil && info.State.Msgs == 10
	}, "the mirror to hold the log's 10 messages")

	// From the standby site, through the link: no write, no change.
	if err := local.nc.Publish(subj.Revision(), []byte("forged")); err != nil {
		t.Fatal(err)
	}
	if err := local.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	remote, err := jetstream.NewWithDomain(local.nc, "primary")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Publish(shortCtx(t), subj.Revision(), []byte("forged")); err == nil {
		t.Error("a publish from the standby site to the primary's log was acknowledged")
	}
	if err := remote.DeleteStream(shortCtx(t), streams.DefaultStream); err == nil {
		t.Error("the standby site deleted the primary's log")
	}
	if _, err := remote.CreateStream(shortCtx(t), jetstream.StreamConfig{Name: "INJECT", Subjects: []string{"inject.>"}}); err == nil {
		t.Error("the standby site created a stream on the primary")
	}
	// A last real record: the log holds exactly the publisher's 11.
	if _, err := pub.js.Publish(ctx, subj.Revision(), []byte("record")); err != nil {
		t.Fatal(err)
	}
	info, err := logStream.Info(ctx)
	if err != nil || info.State.Msgs != 11 || info.State.LastSeq != 11 {
		t.Fatalf("primary log: %v, %+v; want the publisher's 11 messages", err, info.State)
	}
	if n := primary.GlobalAccount().JetStreamUsage().Streams; n != 1 {
		t.Fatalf("the primary holds %d streams, want the log only", n)
	}
}
