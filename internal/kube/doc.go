// Package kube tests failover with a real kube-apiserver (k8s.io/kubernetes
// v1.37.2, in process) on the standby etcd. It is a module of its own so
// the main module's go.mod does not carry Kubernetes; `make test-kube` runs
// it. Its tests only: the package has no code.
package kube
