// Package deploy holds etcdsync's deployment material (Kubernetes manifests,
// NATS Helm values, Grafana dashboard, Prometheus rules, runbook) and the
// tests that validate it; it has no Go API.
//
// Run the validation with `cd deploy && go test ./...`. It builds the
// etcdsync binary from the parent module to check every flag and
// environment variable the manifests and the runbook use.
package deploy
