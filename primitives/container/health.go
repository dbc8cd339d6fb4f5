package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/provision"
)

// Health checks. A TCP or HTTP check connects from inside the container's
// network namespace (entered through /proc/<pid>/ns/net by one locked OS
// thread, only for the socket's creation) to the container's address, or
// to 127.0.0.1 when it has no network: the node needs no route into the
// container's network, and a container without a network can be checked
// as well. An exec check runs the command with nsenter in the container's
// user, mount, network, uts, ipc and pid namespaces, as its root, moved
// into the container's cgroups before nsenter runs (so the container's
// memory and pids limits hold it), killed with its process group at the
// timeout. runc 1.1's exec cannot enter a container whose network
// namespace the node's user namespace owns; setns(2) into a user or mount
// namespace is refused to a multi-threaded process such as the daemon. The
// command does not get the container's seccomp filter and capability
// bounds: it is the owner's own command, inside the owner's user namespace
// (it has no privilege over the node).

// Limits of a check.
const (
	// maxHTTPBody is how much of an HTTP check's answer is read.
	maxHTTPBody = 4 << 10
	// maxHTTPHeader bounds the headers of that answer.
	maxHTTPHeader = 16 << 10
	// maxCheckOutput is how much of an exec check's output is kept for
	// its error.
	maxCheckOutput = 256
)

// ErrUnhealthy is wrapped by the error of a container whose health check
// did not pass.
var ErrUnhealthy = errors.New("container: health check failed")

// check runs health check h of container id once, within its timeout; nil
// when it passed.
func (m *Manager) check(ctx context.Context, id string, h *provision.HealthCheck, ip string) error {
	ctx, cancel := context.WithTimeout(ctx, h.TimeoutOrDefault())
	defer cancel()
	pid, err := m.runc.initPid(Name(id))
	if err != nil {
		return err
	}
	if ip == "" {
		ip = "127.0.0.1"
	}
	switch {
	case h.TCPPort != 0:
		c, err := dialIn(ctx, pid, net.JoinHostPort(ip, strconv.Itoa(h.TCPPort)))
		if err != nil {
			return err
		}
		return c.Close()
	case h.HTTPPort != 0:
		return httpCheck(ctx, pid, "http://"+net.JoinHostPort(ip, strconv.Itoa(h.HTTPPort))+h.HTTPPath)
	}
	return m.execCheck(ctx, id, pid, h.Exec)
}

// dialIn connects to address over TCP from the network namespace of
// process pid. The socket is made by a locked thread that enters the
// namespace and leaves it again; a thread that cannot leave it stays
// locked and ends with its goroutine.
func dialIn(ctx context.Context, pid int, address string) (net.Conn, error) {
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("opening the container's network namespace: %w", err)
	}
	defer ns.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer self.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("entering the container's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", address)
		if serr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); serr != nil {
			// The thread stays in the container's namespace: keep it
			// locked, so that it ends with this goroutine.
			if c != nil {
				c.Close()
			}
			ch <- result{err: fmt.Errorf("leaving the container's network namespace: %w", serr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// httpCheck GETs url through dialIn: an answer 2xx or 3xx (not followed)
// passes. At most maxHTTPBody bytes of the body are read.
func httpCheck(ctx context.Context, pid int, url string) error {
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			return dialIn(ctx, pid, addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: maxHTTPHeader,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "provisiond-health-check")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.CopyN(io.Discard, resp.Body, maxHTTPBody)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// execCheck runs args inside container id (process pid) with nsenter:
// exit 0 passes. The nsenter process is started stopped (ptrace stops it
// at its exec), moved into the container's cgroups, then let go; at the
// deadline its process group is killed.
func (m *Manager) execCheck(ctx context.Context, id string, pid int, args []string) error {
	cmd := exec.Command(m.nsenter, append([]string{"--target", strconv.Itoa(pid),
		"--user", "--mount", "--net", "--uts", "--ipc", "--pid", "--root", "--wd", "--"}, args...)...)
	cmd.Env = []string{defaultPath}
	out := &tailBuffer{max: maxCheckOutput}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second // a daemon the check left behind may hold the output open
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := m.startInCgroup(cmd, CgroupsPath(Name(id))); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("%s did not end within its timeout: %w %s", args[0], ctx.Err(), out.quoted())
	}
	if err != nil {
		return fmt.Errorf("%s: %w %s", args[0], err, out.quoted())
	}
	return nil
}

// startInCgroup starts cmd, which has SysProcAttr.Ptrace set, moves it
// into cgroup (of every hierarchy that has it) while it is stopped at its
// exec, and lets it go. The thread that starts a traced process is its
// tracer, so one locked thread does all of it.
func (m *Manager) startInCgroup(cmd *exec.Cmd, cgroup string) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	pid := cmd.Process.Pid
	fail := func(err error) error {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.PtraceDetach(pid)
		_ = cmd.Wait()
		return err
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil {
		return fail(fmt.Errorf("waiting for %s to stop: %w", cmd.Path, err))
	}
	if !ws.Stopped() {
		return fail(fmt.Errorf("%s did not stop at its exec (%v)", cmd.Path, ws))
	}
	if err := joinCgroup(cgroupRoot, cgroup, pid); err != nil {
		return fail(err)
	}
	if err := syscall.PtraceDetach(pid); err != nil {
		return fail(fmt.Errorf("letting %s go: %w", cmd.Path, err))
	}
	return nil
}

// joinCgroup moves process pid into cgroup in every hierarchy below root
// that has it (each v1 controller, or the unified v2 tree). It fails when
// none has it: the process would escape the container's limits.
func joinCgroup(root, cgroup string, pid int) error {
	dirs := []string{filepath.Join(root, cgroup)}
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(root, e.Name(), cgroup))
		}
	}
	joined := 0
	for _, d := range dirs {
		p := filepath.Join(d, "cgroup.procs")
		if _, err := os.Stat(p); err != nil {
			continue
		}
		if err := os.WriteFile(p, []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("moving the check into cgroup %s: %w", d, err)
		}
		joined++
	}
	if joined == 0 {
		return fmt.Errorf("the container's cgroup %s is in no hierarchy under %s", cgroup, root)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

// quoted returns the kept output, quoted, or "" when there is none.
func (b *tailBuffer) quoted() string {
	t := bytes.TrimSpace(b.buf)
	if len(t) == 0 {
		return ""
	}
	return fmt.Sprintf("(output: %q)", t)
}
