package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/etcdsync/etcdsync/keyspace"
)

// TestCompareSidesDetectsDrift checks that the sandbox's check reports each
// kind of difference and ignores excluded keys.
func TestCompareSidesDetectsDrift(t *testing.T) {
	_, pcli := startEtcd(t)
	_, scli := startEtcd(t)
	ctx := context.Background()
	for k, v := range map[string]string{
		"/registry/configmaps/app/same":      "1",
		"/registry/configmaps/app/missed":    "2",
		"/registry/configmaps/app/different": "3",
		"/registry/events/app/e1":            "4",
		"/registry/secrets/kube-system/s":    "5",
	} {
		if _, err := pcli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{
		"/registry/configmaps/app/same":      "1",
		"/registry/configmaps/app/different": "x",
		"/registry/configmaps/app/surplus":   "6",
		"/registry/secrets/kube-system/s":    "5", // excluded, yet on the standby
		"/etcdsync/checkpoint/ETCDSYNC":      "{}",
	} {
		if _, err := scli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := keyspace.New(keyspace.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := pcli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	c, err := compareSides(ctx, pcli, scli, resp.Header.Revision, rules)
	if err != nil {
		t.Fatal(err)
	}
	if c.compared != 3 || c.missed.n != 1 || c.surplus.n != 1 || c.mismatched.n != 1 || c.excluded != 2 || c.leaked.n != 1 || c.consistent() {
		t.Fatalf("comparison = %+v", c)
	}
	var out bytes.Buffer
	c.print(&out)
	for _, want := range []string{"/registry/configmaps/app/missed", "/registry/configmaps/app/surplus", "/registry/configmaps/app/different", "DRIFT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
