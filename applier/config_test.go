package applier

import (
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/keyspace"
)

// The checkpoint key must lie outside the replicated scope: a snapshot
// would delete it and the log could overwrite it.
func TestConfigCheckpointKeyOutsideScope(t *testing.T) {
	raw := keyspace.DefaultConfig()
	raw.Mode = keyspace.ModeRaw
	included := raw
	included.IncludePrefixes = []string{"/app/"}
	tests := []struct {
		name    string
		scope   keyspace.Config
		key     string
		wantErr bool
	}{
		{"default key, kubernetes preset", keyspace.DefaultConfig(), "", false},
		{"default key, raw", raw, "", false},
		{"own prefix", raw, "/etcdsync/ck/other", false},
		{"replicated resource", keyspace.DefaultConfig(), "/registry/configmaps/app/ck", true},
		{"raw keyspace", raw, "/ck", true},
		{"outside the include prefixes", included, "/ck", false},
		{"inside the include prefixes", included, "/app/ck", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Scope, cfg.CheckpointKey = tt.scope, tt.key
			err := cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "inside the replicated scope") {
				t.Fatalf("Validate() = %v: does not say why", err)
			}
		})
	}
}
