package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/internal/selfcheck"
	"github.com/edgeprov/provisiond/internal/testutil"
)

var checkNames = []string{selfcheck.Loop, selfcheck.Runc, selfcheck.Mkfs, selfcheck.Cgroups, selfcheck.Tun, selfcheck.MountPropagation}

func statusJSON(t *testing.T, out string) admin.Status {
	t.Helper()
	var s admin.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// TestStatusChecksWithoutDaemon: with no daemon, `provisiond status` runs
// the self-check itself, says so, and lists every check; on this machine
// (a node, as root) every one passes. --checks=false leaves it out.
func TestStatusChecksWithoutDaemon(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	testutil.RequiresCommand(t, "mkfs.ext4")
	dir := fillNode(t)
	out, errOut, code := provisiond(t, dir, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "self-check: all passed (run 20") || !strings.Contains(out, "by this command") {
		t.Fatalf("status does not show the command's own self-check passing:\n%s", out)
	}
	for _, name := range checkNames {
		if !strings.Contains(out, "  ok      "+name+" ") {
			t.Errorf("status lacks a passing %s line:\n%s", name, out)
		}
	}
	out, errOut, code = provisiond(t, dir, "status", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	s := statusJSON(t, out)
	if s.Checks == nil || s.Checks.By != "cli" || len(s.Checks.Results) != len(checkNames) {
		t.Fatalf("status --json checks = %+v", s.Checks)
	}
	out, _, _ = provisiond(t, dir, "status", "--checks=false")
	if strings.Contains(out, "self-check") {
		t.Fatalf("--checks=false still ran the self-check:\n%s", out)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 2 { // identity.key, provisiond.db
		t.Fatalf("the self-check left something in the data directory: %v %v", entries, err)
	}
}

// TestStatusShowsDaemonChecks starts the daemon with a PATH that has
// neither runc nor mkfs.ext4: it must still start, log both failures with
// their fix, and `provisiond status` must show the daemon's own checks,
// each failure with its fix — also with --checks=false, which only
// governs the command's own run.
func TestStatusShowsDaemonChecks(t *testing.T) {
	ex := explorertest.New(t)
	sock, ch := notifications(t)
	d := startDaemon(t, ex.URL(), []string{"PATH=" + t.TempDir(), "NOTIFY_SOCKET=" + sock})
	global, logs := d.global, d.logs
	next(t, ch, "READY=1")

	out, errOut, code := runEnv(t, nil, append(global, "status", "--checks=false")...)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"self-check: 2 failed", "by the daemon at its start",
		"FAILED  runc", "fix: install runc (`apt-get install runc`)", "affects: container",
		"FAILED  mkfs.ext4", "fix: install e2fsprogs", "affects: volume",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = runEnv(t, nil, append(global, "status", "--json")...)
	if code != 0 {
		t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	s := statusJSON(t, out)
	if !s.Running || s.Checks == nil || s.Checks.By != "daemon" || len(s.Checks.Results) != len(checkNames) {
		t.Fatalf("status --json of a running daemon: running %v, checks %+v", s.Running, s.Checks)
	}
	for i, r := range s.Checks.Results {
		if r.Name != checkNames[i] {
			t.Errorf("check %d is %s, want %s", i, r.Name, checkNames[i])
		}
		if bad := r.Name == selfcheck.Runc || r.Name == selfcheck.Mkfs; bad != (r.Status == selfcheck.Failed) {
			t.Errorf("%s: %s (%s)", r.Name, r.Status, r.Detail)
		}
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("daemon exited with %v:\n%s", err, logs)
	}
	var failures int
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"message":"self-check"`) && strings.Contains(line, `"level":"error"`) && strings.Contains(line, `"fix":"install `) {
			failures++
		}
	}
	if failures != 2 {
		t.Fatalf("%d self-check failures with a fix in the log, want 2:\n%s", failures, logs.String())
	}
}

// TestStatusChecksBeforeFirstRun: on a node where the daemon never ran,
// status still runs the self-check and prints it before the error, and
// creates nothing.
func TestStatusChecksBeforeFirstRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	out, errOut, code := provisiond(t, dir, "status")
	if code != 1 || !strings.Contains(errOut, "no database at") {
		t.Fatalf("exit %d, stderr %q; want 1 and no database", code, errOut)
	}
	for _, name := range checkNames {
		if !strings.Contains(out, " "+name+" ") {
			t.Errorf("status lacks the %s check:\n%s", name, out)
		}
	}
	out, _, _ = provisiond(t, dir, "status", "--json")
	var s struct{ Checks *selfcheck.Report }
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Checks == nil || len(s.Checks.Results) != len(checkNames) {
		t.Fatalf("status --json before the first run: %v\n%s", err, out)
	}
	if out, _, _ = provisiond(t, dir, "status", "--checks=false"); out != "" {
		t.Fatalf("--checks=false printed:\n%s", out)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("status created the data directory %s", dir)
	}
}
