package main

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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

// syncBuf is a log sink for a child process read while it runs.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// testDaemon is a `provisiond run` of the built binary that a test started.
type testDaemon struct {
	// global are the flags that reach its data directory and admin
	// socket: --config, --socket, --data-dir.
	global []string
	cmd    *exec.Cmd
	logs   *syncBuf
	exited chan struct{}
	err    error // how it exited, once exited is closed
}

// startDaemon runs `provisiond run` against the explorer at url with a
// fresh data directory, no metrics listener, JSON logs, a 1s poll wait and
// extra args, in an environment of PATH and env (whose PATH, if any,
// wins). Unless the test stopped it, it is interrupted when the test ends
// (and killed a minute later, an error).
func startDaemon(t *testing.T, url string, env []string, args ...string) *testDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &testDaemon{
		global: []string{"--config", os.DevNull, "--socket", filepath.Join(dir, "admin.sock"), "--data-dir", filepath.Join(dir, "data")},
		logs:   &syncBuf{},
		exited: make(chan struct{}),
	}
	full := append(append(append([]string{"run"}, d.global...), "--explorer", url, "--metrics-listen", "", "--log-format", "json", "--poll-wait", "1s"), args...)
	d.cmd = exec.Command(binary, full...)
	d.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
			return
		default:
		}
		d.cmd.Process.Signal(os.Interrupt)
		select {
		case <-d.exited:
		case <-time.After(time.Minute):
			d.cmd.Process.Kill()
			<-d.exited
			t.Errorf("provisiond did not stop:\n%s", d.logs)
		}
	})
	return d
}

// stop sends sig and returns how the daemon exited (see wait).
func (d *testDaemon) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	_ = d.cmd.Process.Signal(sig) // an error: it is gone already
	return d.wait(t)
}

// wait returns how the daemon exited, failing the test when it did not
// within a minute.
func (d *testDaemon) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-d.exited:
		return d.err
	case <-time.After(time.Minute):
		t.Fatalf("daemon did not stop within a minute:\n%s", d.logs)
		return nil
	}
}

// TestDaemonNotifiesSystemd runs `provisiond run` as systemd would
// (NOTIFY_SOCKET, WATCHDOG_USEC) and checks that READY comes once the
// engine runs, that the watchdog is fed, and that SIGTERM gives STOPPING
// and a clean exit.
func TestDaemonNotifiesSystemd(t *testing.T) {
	ex := explorertest.New(t)
	sock, ch := notifications(t)
	d := startDaemon(t, ex.URL(), []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"})

	next(t, ch, "READY=1")
	out, errOut, code := runEnv(t, nil, append([]string{"status", "--json"}, d.global...)...)
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
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	next(t, ch, "STOPPING=1")
	if err := d.wait(t); err != nil {
		t.Fatalf("daemon exited with %v:\n%s", err, d.logs)
	}
	if !strings.Contains(d.logs.String(), `"message":"stopping"`) {
		t.Fatalf("daemon log lacks the stop line:\n%s", d.logs)
	}
}
