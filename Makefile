# etcdsync — developer entry points. Nothing here needs more than Go.
GO ?= go
PKGS := ./...

.PHONY: build test vet lint fmt sandbox fuzz release

# VERSION is stamped into the binary (etcdsync version); default: git describe.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
RELEASE_ARCHS := amd64 arm64

build:
	$(GO) build -o bin/etcdsync ./cmd/etcdsync

# Static linux binaries for both architectures, version stamped, in dist/
# (what deploy/image/Dockerfile packages into a multi-arch image).
release:
	@mkdir -p dist
	for arch in $(RELEASE_ARCHS); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath \
			-ldflags="-s -w -X main.version=$(VERSION)" -o dist/etcdsync-linux-$$arch ./cmd/etcdsync || exit 1; \
	done

# The test command the README and CI run: the module, then the deployment
# material (deploy/ is its own module: Kubernetes types, kustomize, rules).
test:
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	# Memory bounds are measured without the race detector, which multiplies them.
	$(GO) test -count=1 -run 'TestAuditMemory' ./auditor
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...
	$(GO) run ./internal/mutants -check
	$(GO) run ./internal/mutants -quick

# A real kube-apiserver (k8s.io/kubernetes, in process) on a promoted standby:
# internal/kube is its own module, so the main go.mod does not carry
# Kubernetes. Not part of `make test`: a cold build of the apiserver took
# 56 minutes on a shared 2-core machine. -vet=off: vet would first analyse
# every Kubernetes package.
.PHONY: test-kube
test-kube:
	cd internal/kube && $(GO) test -vet=off -count=1 -timeout 15m ./...

vet:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

lint: vet

fmt:
	gofmt -w $$(git ls-files '*.go')

# Two embedded etcd servers, an embedded NATS server and the pipeline, for 60s.
sandbox:
	$(GO) run ./cmd/etcdsync sandbox --duration 60s

# Short fuzzing runs of the codec and the key rules.
fuzz:
	$(GO) test -run=NONE -fuzz=FuzzDecode -fuzztime=30s ./streams
	$(GO) test -run=NONE -fuzz=FuzzParse -fuzztime=30s ./keyspace
	$(GO) test -run=NONE -fuzz=FuzzAllowed -fuzztime=30s ./keyspace

# etcdsync against `etcdctl make-mirror` and etcd's own limit, on real etcd
# processes (bench/ is its own module; its wrappers build etcd and etcdctl).
# etcdsync runs unsigned, then signed (--log-key-file), printed side by side
# (ARGS=--signed=false skips the signed run).
# ARGS=--quick for a run under ~3 minutes; ARGS="--profile DIR" for CPU profiles.
# ARGS="--baseline PATH" also runs etcdsync's workloads with the etcdsync binary
# PATH right before the main run and prints current/baseline ratios; build it with
#   git worktree add /tmp/base <commit> && (cd /tmp/base && go build -o /tmp/etcdsync-base ./cmd/etcdsync)
# ARGS=--scale runs the scale series instead (W1 at 100k, 400k and 1M keys against
# etcd's batched ingest at the same key count; ARGS="--scale --scale-keys 100k,1m").
# ARGS="--saturate 5m" runs W4 instead: 4 clients writing unthrottled to the primary
# for 5 minutes, the standby's lag every 10 s and how far behind it ended.
.PHONY: bench
bench:
	$(GO) build -o bench/bin/etcdsync ./cmd/etcdsync
	cd bench && $(GO) build -o bin/etcd ./cmd/etcd && $(GO) build -o bin/etcdctl ./cmd/etcdctl && $(GO) build -o bin/bench .
	bench/bin/bench --bin bench/bin $(ARGS)

# Each mutant deletes one mechanism; the test named beside it must go red
# (internal/mutants/*.txt). MUTANTS=regexp runs a subset. make test runs the
# quick part (mutants guarded by package tests); this runs them all.
.PHONY: mutants
mutants:
	$(GO) run ./internal/mutants $(if $(MUTANTS),-run '$(MUTANTS)')
