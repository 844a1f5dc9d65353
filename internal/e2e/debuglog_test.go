package e2e

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a bytes.Buffer safe for concurrent writers and readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// At debug level the applier names the keys of each applied revision,
// and never their values.
func TestDebugLogNamesKeysNotValues(t *testing.T) {
	p := newPipeline(t)
	p.startPublisher(p.publisherConfig())
	var logs lockedBuffer
	cfg := rawApplierConfig(p)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p.startApplier(cfg)
	put(t, p.primary.Client, "/dbg/first", "v")
	testenvEventually(t, func() bool { return strings.Contains(logs.String(), "snapshot applied") }, "the bootstrap")
	put(t, p.primary.Client, "/dbg/secret-holder", "s3cr3t-value")
	testenvEventually(t, func() bool {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "revision applied") && strings.Contains(line, "put /dbg/secret-holder") {
				return true
			}
		}
		return false
	}, "a debug line naming the key")
	if strings.Contains(logs.String(), "s3cr3t-value") {
		t.Fatal("the applier logged a value")
	}
}
