// Command etcdctl is etcdctl built from go.etcd.io/etcd/etcdctl/v3, for
// `etcdctl make-mirror` (go install refuses the module).
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
