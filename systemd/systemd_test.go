package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/testutil"
)

// TestUnitsVerify runs systemd-analyze verify on both unit files, with
// ExecStart pointed at stand-in executables so the check does not depend on
// an installation.
func TestUnitsVerify(t *testing.T) {
	sa := testutil.RequiresCommand(t, "systemd-analyze")
	dir := t.TempDir()
	var units []string
	for _, name := range []string{"provisiond", "explorerd"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		unit, err := os.ReadFile(name + ".service")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(unit), "Type=notify") {
			t.Errorf("%s.service is not Type=notify", name)
		}
		path := filepath.Join(dir, name+".service")
		fixed := strings.ReplaceAll(string(unit), "/usr/local/bin/", dir+"/")
		if err := os.WriteFile(path, []byte(fixed), 0o644); err != nil {
			t.Fatal(err)
		}
		units = append(units, path)
	}
	out, err := exec.CommandContext(t.Context(), sa, append([]string{"verify"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestProvisiondUnitKeepsContainers checks the settings a restart of the
// daemon must not break: containers survive (KillMode=process), the watchdog
// is on and the state directory is managed.
func TestProvisiondUnitKeepsContainers(t *testing.T) {
	unit, err := os.ReadFile("provisiond.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"KillMode=process", "WatchdogSec=", "Restart=always", "StateDirectory=provisiond"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("provisiond.service lacks %s", want)
		}
	}
}

// TestProvisiondUnitSharesHost checks that the unit gives the daemon no
// mount namespace of its own (its volume mounts, overlays and /run/netns
// bind mounts must stay in the host's, for the next instance and for the
// host) and no sandbox its tenant containers would inherit.
func TestProvisiondUnitSharesHost(t *testing.T) {
	unit, err := os.ReadFile("provisiond.service")
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]string{}
	for line := range strings.Lines(string(unit)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		set[k] = v
	}
	// Options that make systemd set up a mount namespace for the service,
	// and filters or scores every child inherits.
	forbidden := []string{
		"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
		"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
		"ProtectHostname", "ProtectProc", "ProcSubset", "ReadOnlyPaths", "ReadWritePaths",
		"InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "MountFlags",
		"RootDirectory", "RootImage", "PrivateNetwork", "PrivateIPC", "PrivateUsers", "NetworkNamespacePath",
		"DynamicUser", "RestrictNamespaces",
		"RestrictSUIDSGID", "ProtectClock", "OOMScoreAdjust", "SystemCallFilter",
		"SystemCallArchitectures", "RestrictAddressFamilies", "RestrictRealtime", "LockPersonality",
		"MemoryDenyWriteExecute", "CapabilityBoundingSet",
	}
	for _, k := range forbidden {
		if v, ok := set[k]; ok {
			t.Errorf("provisiond.service sets %s=%s: the daemon must share the host's mounts and namespaces, and tenants must not inherit its sandbox", k, v)
		}
	}
	for k, want := range map[string]string{"KillMode": "process", "Type": "notify"} {
		if set[k] != want {
			t.Errorf("provisiond.service: %s=%q, want %q", k, set[k], want)
		}
	}
}

func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return conn
}

func read(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 256)
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading notify socket: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	conn := listen(t)
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, conn); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	if err := Stopping(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, conn); got != "STOPPING=1" {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

func TestWatchdog(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000") // 20 ms: keep-alives every 10 ms
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, func() error { return nil }) }()
	for range 3 {
		if got := read(t, conn); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogStopsFeedingWhenUnhealthy(t *testing.T) {
	conn := listen(t)
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Watchdog(ctx, func() error { return errors.New("engine stuck") }) }()
	if err := conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := conn.Read(buf); err == nil {
		t.Fatalf("unhealthy daemon fed the watchdog: %q", buf[:n])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogDisabled(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")
	if err := Watchdog(t.Context(), func() error { return nil }); err != nil {
		t.Fatal(err)
	}
}
