package keyspace_test

import (
	"fmt"

	"github.com/etcdsync/etcdsync/keyspace"
)

func ExampleRules_Explain() {
	cfg := keyspace.DefaultConfig()
	cfg.ExcludeNamespaces = []string{"cpaas-system"}
	rules, err := keyspace.New(cfg)
	if err != nil {
		panic(err)
	}
	for _, key := range []string{
		"/registry/deployments/app/web",
		"/registry/namespaces/cpaas-system",
		"/registry/leases/kube-system/kube-scheduler",
		"/registry/configmaps/app/kube-root-ca.crt",
		"compact_rev_key",
	} {
		allowed, reason := rules.Explain([]byte(key))
		fmt.Println(allowed, key, "-", reason)
	}
	// Output:
	// true /registry/deployments/app/web - included
	// false /registry/namespaces/cpaas-system - namespace "cpaas-system" excluded (config)
	// false /registry/leases/kube-system/kube-scheduler - namespace "kube-system" excluded (preset kubernetes)
	// false /registry/configmaps/app/kube-root-ca.crt - configmap "kube-root-ca.crt" excluded (preset kubernetes: the standby publishes its own root CA)
	// false compact_rev_key - key "compact_rev_key" excluded (preset kubernetes: etcd compaction clock)
}

func ExampleParse() {
	k, err := keyspace.Parse("/registry", []byte("/registry/minions/node-1"))
	fmt.Printf("%+v %v\n", k, err)
	k, err = keyspace.Parse("/registry", []byte("/registry/cr.bar.com/foos/ns/n"))
	fmt.Printf("%+v %v\n", k, err)
	// Output:
	// {Group: Resource:nodes Namespace: Name:node-1 Internal:false} <nil>
	// {Group:cr.bar.com Resource:foos Namespace:ns Name:n Internal:false} <nil>
}
