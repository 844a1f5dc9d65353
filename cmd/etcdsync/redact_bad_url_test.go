package main

import (
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/internal/testenv"
)

// A NATS URL whose password the URL parser refuses (a '%' not followed by
// two hex digits, a ',' that the NATS client takes for a server list
// separator: "p%ss" and "a,b" are ordinary generated passwords, written
// into --nats-url without URL-encoding them) is never printed, not even in
// part: not through the parser's error, which quotes the URL, nor by
// redacting a list split in the middle of the password. Checked on every
// kind of subcommand that connects to NATS (`streams init`, and `apply`
// against a real etcd).
func TestNATSPasswordNeverPrintedOnBadURL(t *testing.T) {
	etcd := testenv.StartEtcd(t)
	for _, pw := range []string{"pa%zz-s3cr-et9", "s3cr,et9-pa"} {
		url := "nats://etcdsync:" + pw + "@127.0.0.1:1"
		for _, args := range [][]string{
			{"streams", "init", "--role", "primary", "--nats-url", url},
			{"apply", "--etcd-endpoints", etcd.Endpoint, "--nats-url", url, "--leader-elect=false"},
		} {
			_, stdout, stderr := runCmd(t, args...)
			out := stdout + stderr
			for _, part := range []string{"s3cr", "et9"} {
				if strings.Contains(out, part) {
					t.Errorf("%s with the password %q in --nats-url printed %q of it:\n%s", args[0], pw, part, out)
					break
				}
			}
		}
	}
}
