// Command etcd is the etcd server built from go.etcd.io/etcd/server/v3, so
// the benchmark runs real etcd processes (go install refuses the module).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
