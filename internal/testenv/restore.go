package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
)

// Backup copies the server's data directory while the server is stopped, as
// an operator's file-level backup would, and returns the copy's path. The
// server is stopped only for the copy: clients created earlier stay open and
// reconnect by themselves (Client is replaced by a new client).
func (e *Etcd) Backup() string {
	e.t.Helper()
	e.Etcd.Close()
	dst := filepath.Join(e.t.TempDir(), "etcd-backup")
	if out, err := exec.Command("cp", "-a", e.dir, dst).CombinedOutput(); err != nil {
		e.t.Fatalf("back up %s: %v: %s", e.dir, err, out)
	}
	e.Restart()
	return dst
}

// RestoreBackup replaces the server's data directory with a copy of backup
// (a path returned by Backup) and starts it again on the same port: the
// restored member keeps its cluster ID, member ID and raft term, and its
// revision goes back to the backup's. Clients created earlier stay open and
// reconnect by themselves (Client is replaced by a new client).
func (e *Etcd) RestoreBackup(backup string) {
	e.t.Helper()
	e.Etcd.Close()
	if err := os.RemoveAll(e.dir); err != nil {
		e.t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", backup, e.dir).CombinedOutput(); err != nil {
		e.t.Fatalf("restore %s from %s: %v: %s", e.dir, backup, err, out)
	}
	e.Restart()
}
