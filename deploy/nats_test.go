package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"

	"github.com/etcdsync/etcdsync/streams"
)

// natsValues are the values files of the NATS Helm chart, by site (the
// JetStream domain).
var natsValues = map[string]string{"primary": "nats/primary-values.yaml", "standby": "nats/standby-values.yaml"}

// mirrorFiles are the mirror stream configurations: the site that creates
// the mirror, and the domain it mirrors from.
var mirrorFiles = []struct{ file, site, from string }{
	{"nats/standby-mirror.json", "standby", "primary"},
	{"nats/primary-mirror.json", "primary", "standby"},
}

// lookup walks a decoded YAML map along path.
func lookup(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// TestNATSValues checks the Helm values that the design depends on: a
// 3-node JetStream cluster with file storage, one JetStream domain per site,
// a leafnode listener, and on the standby a TLS leafnode remote.
func TestNATSValues(t *testing.T) {
	for site, file := range natsValues {
		t.Run(site, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := yaml.UnmarshalStrict(b, &v); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			want := map[string]any{
				"config.cluster.enabled":              true,
				"config.cluster.replicas":             float64(3),
				"config.jetstream.enabled":            true,
				"config.jetstream.merge.domain":       site,
				"config.leafnodes.enabled":            true,
				"config.leafnodes.tls.enabled":        true,
				"config.jetstream.fileStore.pvc.size": "50Gi",
			}
			for path, w := range want {
				var got any
				if err := json.Unmarshal(mustJSON(t, lookup(v, strings.Split(path, ".")...)), &got); err != nil {
					t.Fatal(err)
				}
				if got != w {
					t.Errorf("%s: %s = %v, want %v", file, path, got, w)
				}
			}
			remotes, _ := lookup(v, "config", "leafnodes", "merge", "remotes").([]any)
			if site == "standby" {
				if len(remotes) != 1 {
					t.Fatalf("%s: want one leafnode remote to the primary, have %v", file, remotes)
				}
				urls, _ := lookup(remotes[0], "urls").([]any)
				if len(urls) == 0 {
					t.Fatalf("%s: leafnode remote without urls", file)
				}
				for _, u := range urls {
					if s, _ := u.(string); !strings.HasPrefix(s, "tls://") {
						t.Errorf("%s: leafnode remote %v: want tls://", file, u)
					}
				}
				if lookup(remotes[0], "tls", "cert_file") == nil || lookup(remotes[0], "tls", "ca_file") == nil {
					t.Errorf("%s: leafnode remote needs a client certificate and a CA", file)
				}
			} else if len(remotes) != 0 {
				t.Errorf("%s: the primary dials no leafnode remote", file)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readMirror decodes a mirror file strictly into the JetStream stream
// configuration (the JSON the nats CLI's --config and the JetStream API
// take).
func readMirror(t *testing.T, file string) jetstream.StreamConfig {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var cfg jetstream.StreamConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cfg
}

// TestNATSMirrorFiles checks that each mirror names the log stream the
// components use, mirrors the other site's domain, and keeps the
// publisher's retention.
func TestNATSMirrorFiles(t *testing.T) {
	for _, mf := range mirrorFiles {
		cfg := readMirror(t, mf.file)
		if cfg.Name != streams.DefaultStream || cfg.Mirror == nil || cfg.Mirror.Name != streams.DefaultStream {
			t.Errorf("%s: name %q mirror %+v: want %s mirroring %s (the --stream of the manifests)", mf.file, cfg.Name, cfg.Mirror, streams.DefaultStream, streams.DefaultStream)
			continue
		}
		if cfg.Mirror.External == nil || cfg.Mirror.External.APIPrefix != "$JS."+mf.from+".API" {
			t.Errorf("%s: mirror external %+v, want API $JS.%s.API", mf.file, cfg.Mirror.External, mf.from)
		}
		if len(cfg.Subjects) != 0 {
			t.Errorf("%s: a mirror has no subjects", mf.file)
		}
		if cfg.Storage != jetstream.FileStorage || cfg.Replicas != 3 {
			t.Errorf("%s: storage %v replicas %d, want file and 3", mf.file, cfg.Storage, cfg.Replicas)
		}
		if cfg.MaxAge != 24*time.Hour || cfg.MaxBytes != 20<<30 || cfg.MaxMsgSize < streams.DefaultMaxMsgSize {
			t.Errorf("%s: max_age %s max_bytes %d max_msg_size %d: want the publisher's 24h and 20GiB, and the log's max message size", mf.file, cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgSize)
		}
	}
}

// site is one embedded NATS server standing for a site's cluster.
type site struct {
	srv  *server.Server
	opts *server.Options
	js   jetstream.JetStream
}

func startSite(t *testing.T, domain string, remote *url.URL) *site {
	t.Helper()
	opts := &server.Options{
		ServerName: domain, Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, JetStreamDomain: domain, StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: -1},
	}
	if remote != nil {
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{{URLs: []*url.URL{remote}}}
		opts.LeafNode.ReconnectInterval = 100 * time.Millisecond
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats server %s not ready", domain)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &site{srv: srv, opts: opts, js: js}
}

// publish appends n log messages the way the publisher's subjects look.
func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, siteName string, n int) {
	t.Helper()
	subj := streams.Subjects{Site: siteName}.Revision()
	for i := 1; i <= n; i++ {
		if _, err := js.Publish(ctx, subj, fmt.Appendf(nil, "%s-%d", siteName, i)); err != nil {
			t.Fatalf("publish %s: %v", subj, err)
		}
	}
}

// waitMirrored waits until the mirror holds exactly the origin's messages
// with the origin's sequence numbers.
func waitMirrored(t *testing.T, ctx context.Context, origin, mirror jetstream.JetStream, want uint64) {
	t.Helper()
	o, err := origin.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := mirror.Stream(ctx, streams.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := m.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == want && info.State.LastSeq == want {
			for seq := uint64(1); seq <= want; seq++ {
				a, err := o.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				b, err := m.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				if string(a.Data) != string(b.Data) || a.Subject != b.Subject {
					t.Fatalf("seq %d: mirror holds %s %q, origin %s %q", seq, b.Subject, b.Data, a.Subject, a.Data)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mirror holds %d messages (last seq %d), want %d; mirror info %+v", info.State.Msgs, info.State.LastSeq, want, info.Mirror)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestNATSMirrorAcrossLeafnode runs the runbook's NATS steps on two real
// servers (one per site, JetStream domains primary and standby, the
// standby dialing the primary as a leafnode): install (mirror the primary's
// log on the standby from standby-mirror.json), failover (delete the
// mirror, the promoted site's publisher creates its own log) and turning
// the old primary into the standby (replace its log with primary-mirror.json,
// which mirrors back over the same leafnode connection).
func TestNATSMirrorAcrossLeafnode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two NATS servers")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Install: the primary's log (created as the publisher creates it), and
	// the standby dialing the primary's leafnode listener.
	primary := startSite(t, "primary", nil)
	if primary.opts.LeafNode.Port <= 0 {
		t.Fatalf("leafnode port not resolved: %d", primary.opts.LeafNode.Port)
	}
	standby := startSite(t, "standby", &url.URL{Scheme: "nats-leaf", Host: fmt.Sprintf("127.0.0.1:%d", primary.opts.LeafNode.Port)})
	deadline := time.Now().Add(20 * time.Second)
	for primary.srv.NumLeafNodes() == 0 || standby.srv.NumLeafNodes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("leafnode did not connect")
		}
		time.Sleep(50 * time.Millisecond)
	}
	logCfg := streams.DefaultLogConfig()
	logCfg.MaxAge, logCfg.MaxBytes = 24*time.Hour, 20<<30 // as deploy/kustomize/primary
	if _, err := streams.EnsureLogStream(ctx, primary.js, logCfg); err != nil {
		t.Fatal(err)
	}
	publish(t, ctx, primary.js, "primary", 20)

	// The standby's mirror, from the file the runbook feeds `nats stream
	// add --config` (one server here, so one replica).
	cfg := readMirror(t, "nats/standby-mirror.json")
	cfg.Replicas = 1
	if _, err := standby.js.CreateStream(ctx, cfg); err != nil {
		t.Fatalf("create mirror from standby-mirror.json: %v", err)
	}
	waitMirrored(t, ctx, primary.js, standby.js, 20)
	publish(t, ctx, primary.js, "primary", 5)
	waitMirrored(t, ctx, primary.js, standby.js, 25)

	// Failover: the mirror is deleted and the promoted site's publisher
	// (--site standby) creates its own log in domain standby.
	if err := standby.js.DeleteStream(ctx, streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	newCfg := logCfg
	newCfg.Site = "standby"
	if _, err := streams.EnsureLogStream(ctx, standby.js, newCfg); err != nil {
		t.Fatalf("the promoted site's publisher cannot create its log: %v", err)
	}
	publish(t, ctx, standby.js, "standby", 10)
	// The old primary's stream (etcdsync.primary.log.>) stored none of the
	// new log's messages although the sites are connected.
	old, err := primary.js.Stream(ctx, streams.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := old.Info(ctx); err != nil || info.State.Msgs != 25 {
		t.Fatalf("old primary stream: %v, %+v; want its 25 messages only", err, info.State)
	}

	// The old primary becomes the standby: its log is replaced by a mirror
	// of the new primary's, over the same leafnode connection.
	if err := primary.js.DeleteStream(ctx, streams.DefaultStream); err != nil {
		t.Fatal(err)
	}
	back := readMirror(t, "nats/primary-mirror.json")
	back.Replicas = 1
	if _, err := primary.js.CreateStream(ctx, back); err != nil {
		t.Fatalf("create mirror from primary-mirror.json: %v", err)
	}
	waitMirrored(t, ctx, standby.js, primary.js, 10)
}

// chartVar matches the chart's "<< $X >>" syntax for an unquoted nats.conf
// variable.
var chartVar = regexp.MustCompile(`"<< (\$[A-Z_]+) >>"`)

// TestNATSValuesAuthorization renders each site's authorization block as
// the chart does (config.merge into nats.conf, "<< $X >>" as a variable from
// the environment), loads it with nats-server's own parser, and checks that
// every identity has exactly the permissions the embedded server grants its
// role (streams.Access), the connection types of its role, and that the
// standby's leafnode remote authenticates with the leaf identity's seed,
// and that both sites encrypt the JetStream store at rest.
func TestNATSValuesAuthorization(t *testing.T) {
	leaf, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	leafPub, _ := leaf.PublicKey()
	leafSeed, _ := leaf.Seed()
	for name, v := range map[string]string{"NATS_PUBLISHER_PASSWORD": "p1", "NATS_APPLIER_PASSWORD": "p2",
		"NATS_AUDITOR_PASSWORD": "p3", "NATS_ADMIN_PASSWORD": "p4", "NATS_LEAF_NKEY": leafPub, "NATS_LEAF_SEED": string(leafSeed)} {
		t.Setenv(name, v)
	}
	access := func(site, domain string) streams.Access {
		return streams.Access{Site: site, Stream: streams.DefaultStream, DriftStream: streams.DefaultDriftStream, Domain: domain}
	}
	type want struct {
		perms *server.Permissions
		kind  string
	}
	wants := map[string]map[string]want{
		"primary": {
			"etcdsync-publisher": {access("primary", "").Permissions(streams.RolePublisher), "STANDARD"},
			"etcdsync-applier":   {access("primary", "").Permissions(streams.RoleReader), "STANDARD"},
			"etcdsync-auditor":   {access("primary", "").Permissions(streams.RoleReader), "STANDARD"},
			leafPub:              {access("primary", "primary").Permissions(streams.RoleLeaf), "LEAFNODE"},
			"etcdsync-admin":     {nil, "STANDARD"},
		},
		// The standby's readers read the primary's log (its mirror); its
		// publisher identity serves the promoted site after a failover.
		"standby": {
			"etcdsync-publisher": {access("standby", "").Permissions(streams.RolePublisher), "STANDARD"},
			"etcdsync-applier":   {access("primary", "").Permissions(streams.RoleReader), "STANDARD"},
			"etcdsync-auditor":   {access("primary", "").Permissions(streams.RoleReader), "STANDARD"},
			"etcdsync-admin":     {nil, "STANDARD"},
		},
	}
	for site, file := range natsValues {
		t.Run(site, func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := yaml.UnmarshalStrict(b, &v); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			authz := lookup(v, "config", "merge", "authorization")
			if authz == nil {
				t.Fatalf("%s: no config.merge.authorization", file)
			}
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			enc.SetEscapeHTML(false) // nats.conf knows no \u escapes
			if err := enc.Encode(map[string]any{"authorization": authz}); err != nil {
				t.Fatal(err)
			}
			conf := chartVar.ReplaceAll(buf.Bytes(), []byte("$1"))
			path := filepath.Join(t.TempDir(), "nats.conf")
			if err := os.WriteFile(path, conf, 0o600); err != nil {
				t.Fatal(err)
			}
			opts, err := server.ProcessConfigFile(path)
			if err != nil {
				t.Fatalf("%s: nats-server rejects the authorization block: %v", file, err)
			}
			got := map[string]want{}
			for _, u := range opts.Users {
				got[u.Username] = want{u.Permissions, connTypes(u.AllowedConnectionTypes)}
			}
			for _, u := range opts.Nkeys {
				got[u.Nkey] = want{u.Permissions, connTypes(u.AllowedConnectionTypes)}
			}
			for id, w := range wants[site] {
				g, ok := got[id]
				if !ok {
					t.Errorf("%s: no identity %s", file, id)
					continue
				}
				if g.kind != w.kind {
					t.Errorf("%s: %s connects as %q, want %q", file, id, g.kind, w.kind)
				}
				if gj, wj := string(mustJSON(t, g.perms)), string(mustJSON(t, w.perms)); gj != wj {
					t.Errorf("%s: %s permissions\n have %s\n want %s", file, id, gj, wj)
				}
			}
			if len(got) != len(wants[site]) {
				t.Errorf("%s: %d identities, want %d", file, len(got), len(wants[site]))
			}
			js := lookup(v, "config", "jetstream", "merge")
			if lookup(js, "key") != "<< $NATS_JETSTREAM_KEY >>" || lookup(js, "cipher") != "chachapoly" {
				t.Errorf("%s: the JetStream store is not encrypted (config.jetstream.merge.key, cipher)", file)
			}
			if site == "standby" {
				remotes, _ := lookup(v, "config", "leafnodes", "merge", "remotes").([]any)
				if len(remotes) != 1 || lookup(remotes[0], "nkey") != "<< $NATS_LEAF_SEED >>" {
					t.Errorf("%s: the leafnode remote must authenticate with nkey << $NATS_LEAF_SEED >>", file)
				}
			}
		})
	}
}

// connTypes returns the one allowed connection type ("" for none or many).
func connTypes(m map[string]struct{}) string {
	if len(m) != 1 {
		return ""
	}
	for k := range m {
		return k
	}
	return ""
}

// TestNATSPromoteNeedsAdmin runs the runbook's stream steps on a NATS
// server configured with the standby's shipped authorization: the
// auditor's identity (where the runbook runs them) may neither create the
// mirror (streams init) nor make it writable (promote); the admin identity,
// whose secret the chart's nats.admin mounts for them, may. So promote and
// streams init must be given the admin flags.
func TestNATSPromoteNeedsAdmin(t *testing.T) {
	leaf, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	leafSeed, _ := leaf.Seed()
	for name, v := range map[string]string{"NATS_PUBLISHER_PASSWORD": "p1", "NATS_APPLIER_PASSWORD": "p2",
		"NATS_AUDITOR_PASSWORD": "p3", "NATS_ADMIN_PASSWORD": "p4", "NATS_LEAF_SEED": string(leafSeed)} {
		t.Setenv(name, v)
	}
	b, err := os.ReadFile(natsValues["standby"])
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(map[string]any{"authorization": lookup(v, "config", "merge", "authorization")}); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, chartVar.ReplaceAll(buf.Bytes(), []byte("$1")), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.ServerName, opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "standby", "127.0.0.1", -1, true, true
	opts.JetStream, opts.JetStreamDomain, opts.StoreDir = true, "standby", t.TempDir()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	connect := func(user, password string) jetstream.JetStream {
		nc, err := nats.Connect(srv.ClientURL(), nats.UserInfo(user, password),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // the refusals below are expected
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auditor, admin := connect("etcdsync-auditor", "p3"), connect("etcdsync-admin", "p4")
	mirror := streams.MirrorConfig{Name: streams.DefaultStream, OriginDomain: "primary", Replicas: 1, MaxAge: 24 * time.Hour}

	// A refused request gets no reply: bound the wait for it.
	refused := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	// streams init --role standby
	if _, err := streams.EnsureMirror(refused(), auditor, mirror); err == nil {
		t.Error("the auditor's identity created the mirror; want it refused")
	}
	if _, err := streams.EnsureMirror(ctx, admin, mirror); err != nil {
		t.Fatalf("streams init as etcdsync-admin: %v", err)
	}
	// promote: the mirror becomes the writable log of site standby.
	if _, err := streams.PromoteMirror(refused(), auditor, streams.DefaultStream, "standby"); err == nil {
		t.Error("the auditor's identity made the mirror writable; want it refused")
	}
	s, err := streams.PromoteMirror(ctx, admin, streams.DefaultStream, "standby")
	if err != nil {
		t.Fatalf("promote as etcdsync-admin: %v", err)
	}
	if cfg := s.CachedInfo().Config; cfg.Mirror != nil || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "etcdsync.standby.log.>" {
		t.Errorf("promoted stream: mirror %v, subjects %v", cfg.Mirror, cfg.Subjects)
	}
}
