package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
)

// notifications reads sd_notify datagrams into a channel.
func notifications(t *testing.T) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return path, ch
}

func next(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(got, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no %q from the daemon within a minute", want)
		}
	}
}

// TestDaemonNotifiesSystemd runs `provisiond run` as systemd would
// (NOTIFY_SOCKET, WATCHDOG_USEC) and checks that READY comes once the
// engine runs, that the watchdog is fed, and that SIGTERM gives STOPPING
// and a clean exit.
func TestDaemonNotifiesSystemd(t *testing.T) {
	ex := explorertest.New(t)
	sock, ch := notifications(t)
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.sock")
	cmd := exec.Command(binary, "run", "--config", os.DevNull, "--data-dir", filepath.Join(dir, "data"),
		"--socket", admin, "--explorer", ex.URL(), "--metrics-listen", "", "--log-format", "json", "--poll-wait", "1s")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	next(t, ch, "READY=1")
	out, errOut, code := runEnv(t, nil, "status", "--json", "--config", os.DevNull, "--socket", admin, "--data-dir", filepath.Join(dir, "data"))
	if code != 0 {
		t.Fatalf("status after READY: exit %d: %s", code, errOut)
	}
	var st struct{ Running bool }
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.Running {
		t.Fatalf("READY was sent before the engine ran: %s %v", out, err)
	}
	for range 3 {
		next(t, ch, "WATCHDOG=1")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "STOPPING=1")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("daemon exited with %v:\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatalf("daemon did not stop within a minute of SIGTERM:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `"message":"stopping"`) {
		t.Fatalf("daemon log lacks the stop line:\n%s", logs.String())
	}
}
