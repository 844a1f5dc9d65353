package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// workload writes a Kubernetes-like keyspace under /registry on the primary
// etcd: namespaces, configmaps, secrets, deployments, pods, services, a CRD
// and its objects, events, and keys in namespaces the sandbox excludes.
// It creates, updates and deletes objects, sometimes several in one
// transaction, and creates and deletes whole namespaces. Its methods other
// than the counters are used by one goroutine at a time.
type workload struct {
	cli *clientv3.Client
	rnd *rand.Rand

	appNamespaces []string // live namespaces the sandbox replicates
	sysNamespaces []string // namespaces the sandbox excludes
	objects       []string // live object keys (not namespaces, not events)
	events        []string // live event keys, oldest first
	serial        int      // makes names unique

	writes  atomic.Int64 // requests that succeeded
	lastRev atomic.Int64 // primary revision after the latest write
}

// crdKey is the CustomResourceDefinition whose objects the workload writes.
const crdKey = "/registry/apiextensions.k8s.io/customresourcedefinitions/widgets.example.com"

// maxEvents bounds the live events; older ones are deleted first.
const maxEvents = 400

// resources are the object kinds the workload writes: storage path under
// /registry and kind.
var resources = []struct{ path, kind string }{
	{"configmaps", "ConfigMap"},
	{"secrets", "Secret"},
	{"deployments", "Deployment"},
	{"pods", "Pod"},
	{"services/specs", "Service"},
	{"example.com/widgets", "Widget"},
}

func newWorkload(cli *clientv3.Client, excluded []string, seed uint64) *workload {
	sys := []string{"kube-system"}
	for _, ns := range excluded {
		if !slices.Contains(sys, ns) {
			sys = append(sys, ns)
		}
	}
	return &workload{
		cli:           cli,
		rnd:           rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		appNamespaces: []string{"default", "shop", "payments", "team-a", "team-b", "monitoring"},
		sysNamespaces: sys,
	}
}

// Seed writes about n keys in transactions of up to 100 operations: every
// namespace, the CRD, keys the kubernetes preset excludes (nodes, the
// compaction key, root CA ConfigMaps, the kubernetes Service) and objects
// and events up to n.
func (w *workload) Seed(ctx context.Context, n int) error {
	var ops []clientv3.Op
	put := func(key, kind, name, ns string) {
		ops = append(ops, clientv3.OpPut(key, w.value(kind, name, ns, 1)))
	}
	for _, ns := range append(slices.Clone(w.appNamespaces), w.sysNamespaces...) {
		put("/registry/namespaces/"+ns, "Namespace", ns, "")
		put("/registry/configmaps/"+ns+"/kube-root-ca.crt", "ConfigMap", "kube-root-ca.crt", ns)
	}
	put(crdKey, "CustomResourceDefinition", "widgets.example.com", "")
	for i := range 3 {
		name := fmt.Sprintf("node-%d", i)
		put("/registry/minions/"+name, "Node", name, "")
	}
	put("/registry/services/specs/default/kubernetes", "Service", "kubernetes", "default")
	ops = append(ops, clientv3.OpPut("compact_rev_key", "1"))
	written := len(ops)
	if err := w.commit(ctx, ops); err != nil {
		return err
	}
	ops = ops[:0]
	for ; written < n; written++ {
		if w.rnd.IntN(10) == 0 {
			key := w.newEvent()
			put(key, "Event", key[strings.LastIndexByte(key, '/')+1:], "")
		} else {
			key, kind, name, ns := w.newObject()
			put(key, kind, name, ns)
		}
		if len(ops) == 100 {
			if err := w.commit(ctx, ops); err != nil {
				return err
			}
			ops = ops[:0]
		}
	}
	return w.commit(ctx, ops)
}

// Run writes at rate requests per second until ctx ends (returns nil) or a
// write fails (returns the error). When it falls more than half a second
// behind, it drops the backlog rather than bursting.
func (w *workload) Run(ctx context.Context, rate int) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, done := time.Now(), 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		due := int(float64(rate)*time.Since(start).Seconds()) - done
		if due > rate/2+1 {
			done += due - 1
			due = 1
		}
		for range due {
			if ctx.Err() != nil {
				return nil
			}
			// A step is never cancelled half-way: a write whose request
			// was sent can still commit after its context ends, and would
			// then land after the revision the caller reads as the last.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			err := w.Step(sctx)
			cancel()
			if err != nil {
				return err
			}
			done++
		}
	}
}

// Step makes one write request: create, update or delete objects or events,
// a multi-object transaction, or a namespace created or deleted with its
// objects (several requests).
func (w *workload) Step(ctx context.Context) error {
	switch p := w.rnd.IntN(100); {
	case p < 30 && len(w.objects) > 0:
		key := w.objects[w.rnd.IntN(len(w.objects))]
		return w.commit(ctx, []clientv3.Op{w.update(key)})
	case p < 55:
		key, kind, name, ns := w.newObject()
		return w.commit(ctx, []clientv3.Op{clientv3.OpPut(key, w.value(kind, name, ns, 1))})
	case p < 65 && len(w.objects) > 100:
		i := w.rnd.IntN(len(w.objects))
		key := w.objects[i]
		w.objects[i] = w.objects[len(w.objects)-1]
		w.objects = w.objects[:len(w.objects)-1]
		return w.commit(ctx, []clientv3.Op{clientv3.OpDelete(key)})
	case p < 85:
		if len(w.events) >= maxEvents {
			key := w.events[0]
			w.events = w.events[1:]
			return w.commit(ctx, []clientv3.Op{clientv3.OpDelete(key)})
		}
		key := w.newEvent()
		return w.commit(ctx, []clientv3.Op{clientv3.OpPut(key, w.value("Event", key[strings.LastIndexByte(key, '/')+1:], "", 1))})
	case p < 92:
		return w.multi(ctx)
	case p < 96 && len(w.appNamespaces) < 12:
		return w.createNamespace(ctx)
	case p < 98 && len(w.appNamespaces) > 6:
		return w.deleteNamespace(ctx)
	case len(w.objects) > 0:
		key := w.objects[w.rnd.IntN(len(w.objects))]
		return w.commit(ctx, []clientv3.Op{w.update(key)})
	default:
		key, kind, name, ns := w.newObject()
		return w.commit(ctx, []clientv3.Op{clientv3.OpPut(key, w.value(kind, name, ns, 1))})
	}
}

// multi writes one transaction: a new app (deployment, configmap and
// secret) or an update of up to four distinct objects.
func (w *workload) multi(ctx context.Context) error {
	if w.rnd.IntN(2) == 0 || len(w.objects) < 4 {
		ns := w.namespace()
		w.serial++
		app := fmt.Sprintf("app-%d", w.serial)
		var ops []clientv3.Op
		for _, res := range []struct{ path, kind string }{{"deployments", "Deployment"}, {"configmaps", "ConfigMap"}, {"secrets", "Secret"}} {
			key := "/registry/" + res.path + "/" + ns + "/" + app
			w.objects = append(w.objects, key)
			ops = append(ops, clientv3.OpPut(key, w.value(res.kind, app, ns, 1)))
		}
		return w.commit(ctx, ops)
	}
	var ops []clientv3.Op
	for _, i := range w.rnd.Perm(len(w.objects))[:4] {
		ops = append(ops, w.update(w.objects[i]))
	}
	return w.commit(ctx, ops)
}

// createNamespace adds a namespace with a configmap, in one transaction.
func (w *workload) createNamespace(ctx context.Context) error {
	w.serial++
	ns := fmt.Sprintf("tenant-%d", w.serial)
	w.appNamespaces = append(w.appNamespaces, ns)
	cm := "/registry/configmaps/" + ns + "/settings"
	w.objects = append(w.objects, cm)
	return w.commit(ctx, []clientv3.Op{
		clientv3.OpPut("/registry/namespaces/"+ns, w.value("Namespace", ns, "", 1)),
		clientv3.OpPut(cm, w.value("ConfigMap", "settings", ns, 1)),
	})
}

// deleteNamespace deletes the newest tenant namespace: its objects in
// transactions of up to 100 deletes, then the namespace, as the namespace
// controller does.
func (w *workload) deleteNamespace(ctx context.Context) error {
	ns := w.appNamespaces[len(w.appNamespaces)-1]
	w.appNamespaces = w.appNamespaces[:len(w.appNamespaces)-1]
	var ops []clientv3.Op
	kept := w.objects[:0]
	for _, key := range w.objects {
		if strings.Contains(key, "/"+ns+"/") {
			ops = append(ops, clientv3.OpDelete(key))
		} else {
			kept = append(kept, key)
		}
	}
	w.objects = kept
	for len(ops) > 100 {
		if err := w.commit(ctx, ops[:100]); err != nil {
			return err
		}
		ops = ops[100:]
	}
	ops = append(ops, clientv3.OpDelete("/registry/namespaces/"+ns))
	return w.commit(ctx, ops)
}

// newObject names a new object in a random namespace (one in five in an
// excluded one) and records it.
func (w *workload) newObject() (key, kind, name, ns string) {
	res := resources[w.rnd.IntN(len(resources))]
	if w.rnd.IntN(5) == 0 {
		ns = w.sysNamespaces[w.rnd.IntN(len(w.sysNamespaces))]
	} else {
		ns = w.namespace()
	}
	w.serial++
	name = fmt.Sprintf("%s-%d", strings.ToLower(res.kind), w.serial)
	key = "/registry/" + res.path + "/" + ns + "/" + name
	w.objects = append(w.objects, key)
	return key, res.kind, name, ns
}

// newEvent names a new event and records it.
func (w *workload) newEvent() string {
	w.serial++
	ns := w.namespace()
	key := fmt.Sprintf("/registry/events/%s/pod-%d.%x", ns, w.rnd.IntN(50), w.serial)
	w.events = append(w.events, key)
	return key
}

func (w *workload) namespace() string {
	return w.appNamespaces[w.rnd.IntN(len(w.appNamespaces))]
}

// update rewrites key with a new generation of its value.
func (w *workload) update(key string) clientv3.Op {
	parts := strings.Split(key, "/")
	name, ns := parts[len(parts)-1], parts[len(parts)-2]
	return clientv3.OpPut(key, w.value("Object", name, ns, 2+w.rnd.IntN(1000)))
}

// value returns a small JSON-like object.
func (w *workload) value(kind, name, ns string, gen int) string {
	return fmt.Sprintf(`{"kind":%q,"metadata":{"name":%q,"namespace":%q,"generation":%d,"uid":"%016x"},"data":{"payload":"%032x"}}`,
		kind, name, ns, gen, w.rnd.Uint64(), w.rnd.Uint64())
}

// commit writes ops in one transaction and records the revision.
func (w *workload) commit(ctx context.Context, ops []clientv3.Op) error {
	if len(ops) == 0 {
		return nil
	}
	resp, err := w.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("workload write of %d ops: %w", len(ops), err)
	}
	w.writes.Add(1)
	w.lastRev.Store(resp.Header.Revision)
	return nil
}
