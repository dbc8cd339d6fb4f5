package container_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// httpd is a command that serves /tmp of the container on port after a
// pause of delay seconds, with /tmp/index.html holding "ok".
func httpd(delay string, port string) []string {
	return []string{"sh", "-c", "echo ok >/tmp/index.html; sleep " + delay + "; exec busybox httpd -f -p " + port + " -h /tmp"}
}

func TestReadiness(t *testing.T) {
	e := newEnv(t, container.Options{})
	netID := e.network(t, "10.232.6.0/24")
	tests := []struct {
		name  string
		edit  func(s *container.Spec)
		check *provision.HealthCheck
	}{
		{"tcp-in-network", func(s *container.Spec) { s.NetworkID, s.IP = netID, net.ParseIP("10.232.6.10") },
			&provision.HealthCheck{TCPPort: 8080, Interval: 1, StartPeriod: 30}},
		{"http-without-network", func(*container.Spec) {},
			&provision.HealthCheck{HTTPPort: 8080, HTTPPath: "/index.html", Interval: 1, StartPeriod: 30}},
		{"exec", func(*container.Spec) {},
			&provision.HealthCheck{Exec: []string{"busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"}, Interval: 1, StartPeriod: 30}},
		{"exec-in-network", func(s *container.Spec) { s.NetworkID, s.IP = netID, net.ParseIP("10.232.6.11") },
			&provision.HealthCheck{Exec: []string{"busybox", "wget", "-q", "-O", "/dev/null", "http://10.232.6.11:8080/"}, Interval: 1, StartPeriod: 30}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "ready-" + testutil.RandHex(t, 3)
			s := e.spec(httpd("2", "8080")...)
			tt.edit(&s)
			s.Health = tt.check
			began := time.Now()
			info := e.run(t, id, s)
			took := time.Since(began)
			// The port opens 2 s after the start: Provision, hence the
			// "ok", waits for it.
			if took < 2*time.Second {
				t.Fatalf("Provision returned after %s, before the port opened", took)
			}
			if took > 10*time.Second {
				t.Fatalf("Provision returned after %s, long after the port opened", took)
			}
			if info.State != container.StatusRunning || info.Health != container.HealthHealthy || info.Restarts != 0 {
				t.Fatalf("info = %+v", info)
			}
			if err := e.m.Inspect(t.Context(), id); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNeverReady(t *testing.T) {
	e := newEnv(t, container.Options{})
	tests := []struct {
		name  string
		args  []string
		check *provision.HealthCheck
		want  []string
	}{
		{"tcp-port-never-opens", []string{"sleep", "3600"}, &provision.HealthCheck{TCPPort: 8080, Interval: 1, StartPeriod: 2},
			[]string{"health check tcp port 8080 did not pass within 2s", "connection refused"}},
		{"http-404", httpd("0", "8081"), &provision.HealthCheck{HTTPPort: 8081, HTTPPath: "/missing", Interval: 1, StartPeriod: 2},
			[]string{"health check http port 8081 path /missing did not pass within 2s", "404"}},
		{"exec-fails", []string{"sleep", "3600"}, &provision.HealthCheck{Exec: []string{"sh", "-c", "echo not yet; exit 4"}, Interval: 1, StartPeriod: 2},
			[]string{`health check exec ["sh" "-c" "echo not yet; exit 4"] did not pass within 2s`, "exit status 4", "not yet"}},
		{"exec-times-out", []string{"sleep", "3600"}, &provision.HealthCheck{Exec: []string{"sleep", "30"}, Interval: 1, Timeout: 1, StartPeriod: 2},
			[]string{"did not pass within 2s", "did not end within its timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "unready-" + testutil.RandHex(t, 3)
			s := e.spec(tt.args...)
			s.Health = tt.check
			t.Cleanup(func() {
				if err := e.m.Decommission(context.Background(), id); err != nil {
					t.Errorf("Decommission: %v", err)
				}
			})
			_, err := e.m.Provision(t.Context(), id, s)
			if !errors.Is(err, container.ErrUnhealthy) || provision.IsTemporary(err) {
				t.Fatalf("Provision = %v, want a permanent ErrUnhealthy", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestExecCheckInsideContainer checks that an exec check runs in the
// container's namespaces and cgroups.
func TestExecCheckInsideContainer(t *testing.T) {
	e := newEnv(t, container.Options{})
	id := "exec-" + testutil.RandHex(t, 3)
	s := e.spec("sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600")
	s.Health = &provision.HealthCheck{Exec: []string{"sh", "-c", "cat /proc/self/cgroup >/tmp/cgroup; hostname >/tmp/host; test -f /tmp/ready"},
		Interval: 1, StartPeriod: 30}
	e.run(t, id, s)
	out, err := e.exec(t, id, "cat", "/tmp/cgroup", "/tmp/host")
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(out, "pids:/provisiond/"+container.Name(id)) && !strings.Contains(out, "0::/provisiond/"+container.Name(id)) {
		t.Errorf("the check ran outside the container's pids cgroup:\n%s", out)
	}
	if !strings.Contains(out, container.Name(id)) {
		t.Errorf("the check ran outside the container's uts namespace:\n%s", out)
	}
}

func TestRestartBackoff(t *testing.T) {
	var changes atomic.Int64
	e := newEnv(t, container.Options{
		RestartBackoff:    300 * time.Millisecond,
		RestartBackoffMax: 1200 * time.Millisecond,
		MaxExits:          10,
		OnChange:          func(string) { changes.Add(1) },
	})
	id := "backoff-" + testutil.RandHex(t, 3)
	s := e.spec("sh", "-c", "sleep 0.2; exit 3")
	s.Restart = provision.RestartAlways
	e.run(t, id, s)
	want := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond, 1200 * time.Millisecond, 1200 * time.Millisecond}
	for i, backoff := range want {
		stopped := e.waitState(t, id, container.StatusRestarting)
		info, err := e.restartWhenDue(t, id, s)
		if err != nil {
			t.Fatalf("restart #%d: %v", i+1, err)
		}
		waited := time.Since(stopped.LastExit.At)
		if waited < backoff || waited > backoff+3*time.Second {
			t.Errorf("restart #%d came %s after the exit, want %s (+ polling)", i+1, waited, backoff)
		}
		if info.Restarts != i+1 || info.State != container.StatusRunning || info.LastExit == nil ||
			info.LastExit.Code != 3 || info.LastExit.Reason != "exited" {
			t.Fatalf("status after restart #%d = %+v", i+1, info)
		}
	}
	// Once per exit at least (the supervisor's call when the restart is
	// due may be cut short by this test's own polling restart).
	if changes.Load() < int64(len(want)) {
		t.Errorf("OnChange called %d times, want at least once per exit", changes.Load())
	}
}

func TestRestartPolicies(t *testing.T) {
	e := newEnv(t, container.Options{})
	tests := []struct {
		name   string
		policy provision.RestartPolicy
		code   string
		state  string
	}{
		{"never", provision.RestartNever, "7", container.StatusExited},
		{"on-failure-success", provision.RestartOnFailure, "0", container.StatusExited},
		{"on-failure-failure", provision.RestartOnFailure, "5", container.StatusRestarting},
		{"always-success", provision.RestartAlways, "0", container.StatusRestarting},
		{"default-success", provision.RestartDefault, "0", container.StatusRestarting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "policy-" + testutil.RandHex(t, 3)
			s := e.spec("sh", "-c", "sleep 0.3; exit "+tt.code)
			s.Restart = tt.policy
			e.run(t, id, s)
			info := e.waitState(t, id, tt.state)
			if info.LastExit == nil || info.LastExit.Code != atoi(t, tt.code) || info.Restarts != 0 {
				t.Fatalf("status = %+v", info)
			}
			if tt.state == container.StatusRestarting {
				if info, err := e.restartWhenDue(t, id, s); err != nil || info.Restarts != 1 {
					t.Fatalf("restart = %+v, %v", info, err)
				}
				return
			}
			// Left stopped: Inspect is content, and Provision (a repair
			// after a daemon restart) does not start it.
			time.Sleep(500 * time.Millisecond) // longer than the backoff
			if err := e.m.Inspect(t.Context(), id); err != nil {
				t.Fatalf("Inspect of a container its policy left stopped = %v", err)
			}
			info, err := e.m.Provision(t.Context(), id, s)
			if err != nil || info.State != container.StatusExited || info.Restarts != 0 || info.LastExit.Code != atoi(t, tt.code) {
				t.Fatalf("Provision = %+v, %v", info, err)
			}
			logs, err := os.ReadFile(e.m.LogPath(id))
			if err != nil {
				t.Fatal(err)
			}
			if st, _ := e.m.Status(t.Context(), id); st.State != container.StatusExited {
				t.Fatalf("status after Provision = %+v (log %q)", st, logs)
			}
		})
	}
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestUnhealthyRestarted(t *testing.T) {
	var changes atomic.Int64
	e := newEnv(t, container.Options{OnChange: func(string) { changes.Add(1) }})
	id := "sick-" + testutil.RandHex(t, 3)
	// Serves for 3 s, then stops serving but keeps running.
	s := e.spec("sh", "-c", "echo started; busybox httpd -f -p 8080 -h /tmp & sleep 3; kill $!; exec sleep 3600")
	s.Health = &provision.HealthCheck{TCPPort: 8080, Interval: 1, Failures: 2, StartPeriod: 10}
	info := e.run(t, id, s)
	if info.Health != container.HealthHealthy {
		t.Fatalf("info = %+v", info)
	}
	stopped := e.waitState(t, id, container.StatusRestarting)
	if stopped.Health != container.HealthUnhealthy || stopped.LastExit == nil || stopped.LastExit.Code != 137 ||
		!strings.HasPrefix(stopped.LastExit.Reason, "unhealthy: health check tcp port 8080 failed 2 times in a row") {
		t.Fatalf("status = %+v", stopped)
	}
	info, err := e.restartWhenDue(t, id, s)
	if err != nil {
		t.Fatal(err)
	}
	// A restart after the first readiness does not wait for it again:
	// the supervisor checks, from "starting".
	if info.Restarts != 1 || info.State != container.StatusRunning || info.Health != container.HealthStarting {
		t.Fatalf("status after the restart = %+v", info)
	}
	eventually(t, 10*time.Second, func() error {
		st, err := e.m.Status(t.Context(), id)
		if err == nil && st.Health != container.HealthHealthy {
			err = errors.New("not healthy again: " + st.Health)
		}
		return err
	})
	if changes.Load() == 0 {
		t.Error("OnChange never called")
	}
}

// TestRestartsSurviveDaemonRestart checks that the restart count, the
// last exit and the exits of the crash-loop window carry over to a new
// Manager, as across a daemon restart.
func TestRestartsSurviveDaemonRestart(t *testing.T) {
	var gaveUp atomic.Int64
	opts := container.Options{MaxExits: 2, ExitWindow: time.Minute,
		OnGiveUp: func(_ context.Context, _, _ string) error { gaveUp.Add(1); return nil }}
	e := newEnv(t, opts)
	id := "durable-" + testutil.RandHex(t, 3)
	s := e.spec("sh", "-c", "sleep 0.2; exit 3")
	e.run(t, id, s)
	if info, err := e.restartWhenDue(t, id, s); err != nil || info.Restarts != 1 {
		t.Fatalf("restart = %+v, %v", info, err)
	}
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	opts.DataDir, opts.RunDir, opts.Network, opts.LocalImages = e.dir, e.runDir, e.net, filepath.Dir(e.image)
	opts.RestartBackoff = 100 * time.Millisecond
	first := e.m
	e.m = container.New(opts)
	defer func() { e.m.Close(); e.m = first }()
	info := e.waitState(t, id, container.StatusRestarting)
	if info.Restarts != 1 || info.LastExit == nil || info.LastExit.Code != 3 {
		t.Fatalf("status from a new Manager = %+v", info)
	}
	if info, err := e.restartWhenDue(t, id, s); err != nil || info.Restarts != 2 {
		t.Fatalf("restart from a new Manager = %+v, %v", info, err)
	}
	// The third exit within the window is a crash loop: the first two
	// were counted by the first Manager.
	if _, err := e.restartWhenDue(t, id, s); !errors.Is(err, container.ErrCrashLoop) {
		t.Fatalf("third exit = %v, want ErrCrashLoop", err)
	}
	if gaveUp.Load() != 1 {
		t.Fatalf("OnGiveUp called %d times", gaveUp.Load())
	}
}

// TestRebootIsNoCrash checks that a container that stopped with the node
// (its shim and runc died with it, its runc state is stale) restarts at
// once, whatever its backoff, and that the reboot is no exit of a crash
// loop.
func TestRebootIsNoCrash(t *testing.T) {
	opts := container.Options{BootID: "boot-1", RestartBackoff: time.Hour, MaxExits: 1, ExitWindow: time.Hour}
	e := newEnv(t, opts)
	id := "reboot-" + testutil.RandHex(t, 3)
	s := e.spec("sleep", "3600")
	e.run(t, id, s)
	pid := runcPid(t, e, id)
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	// The reboot: the shim (the shell, then its runc) and the container die
	// at once; the runc state on disk stays.
	runc := atoi(t, status(t, pid)["PPid"])
	shim := atoi(t, status(t, runc)["PPid"])
	for _, p := range []int{shim, runc, pid} {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatal(err)
		}
	}
	eventually(t, 10*time.Second, func() error {
		if syscall.Kill(pid, 0) == nil {
			return errors.New("container still runs")
		}
		return nil
	})
	opts.DataDir, opts.RunDir, opts.Network, opts.LocalImages = e.dir, e.runDir, e.net, filepath.Dir(e.image)
	opts.BootID = "boot-2"
	first := e.m
	e.m = container.New(opts)
	defer func() { e.m.Close(); e.m = first }()
	// Due at once, although a crash would wait an hour.
	if err := e.m.Inspect(t.Context(), id); !errors.Is(err, provision.ErrVanished) {
		t.Fatalf("Inspect after the reboot = %v, want ErrVanished (restart due)", err)
	}
	info, err := e.m.Provision(t.Context(), id, s)
	if err != nil {
		t.Fatalf("Provision after the reboot: %v (a reboot must not count towards a crash loop)", err)
	}
	if info.State != container.StatusRunning || info.Restarts != 1 || info.LastExit == nil ||
		info.LastExit.Code != container.UnknownExitCode || info.LastExit.Reason != "the node rebooted" {
		t.Fatalf("status after the reboot = %+v", info)
	}
	if runcPid(t, e, id) == pid {
		t.Fatal("the container was not started again")
	}
}

// TestNoStatusWithoutLifecycle checks that a container of an earlier
// release (no lifecycle in its bundle) reports no status: its result is
// left as that release signed it.
func TestNoStatusWithoutLifecycle(t *testing.T) {
	e := newEnv(t, container.Options{})
	id := "oldstatus-" + testutil.RandHex(t, 3)
	e.run(t, id, e.spec("sleep", "3600"))
	if err := os.Remove(filepath.Join(e.m.Bundle(id), "lifecycle.json")); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Inspect(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if info, err := e.m.Status(t.Context(), id); !errors.Is(err, container.ErrNoStatus) {
		t.Fatalf("Status = %+v, %v; want ErrNoStatus", info, err)
	}
}

// A new version that changes only the restart policy keeps the process
// (the policy applies from its next exit); one that changes the health
// check recreates it, and "ok" again waits for the new check: a check
// that never passes fails the new version (the Engine then rolls back),
// and the old version provisioned again runs and is healthy.
func TestUpdateHealthAndPolicy(t *testing.T) {
	e := newEnv(t, container.Options{})
	id := "hupd-" + testutil.RandHex(t, 3)
	s := e.spec(httpd("0", "8080")...)
	s.Health = &provision.HealthCheck{TCPPort: 8080, Interval: 1, StartPeriod: 10}
	if info := e.run(t, id, s); info.Health != container.HealthHealthy {
		t.Fatalf("info = %+v", info)
	}
	pid := runcPid(t, e, id)

	// The same check written with its defaults spelled out: nothing to do.
	same := s
	same.Health = &provision.HealthCheck{TCPPort: 8080, Interval: 1, StartPeriod: 10,
		Timeout: provision.DefaultHealthTimeout, Failures: provision.DefaultHealthFailures}
	same.Restart = provision.RestartNever
	if info, err := e.m.Provision(t.Context(), id, same); err != nil || info.State != container.StatusRunning {
		t.Fatalf("policy update = %+v, %v", info, err)
	}
	if p := runcPid(t, e, id); p != pid {
		t.Fatalf("a restart policy update restarted the container (pid %d → %d)", pid, p)
	}

	// A check of a port nothing listens on: recreated, never ready.
	bad := same
	bad.Health = &provision.HealthCheck{TCPPort: 8081, Interval: 1, StartPeriod: 2}
	began := time.Now()
	_, err := e.m.Provision(t.Context(), id, bad)
	if !errors.Is(err, container.ErrUnhealthy) || provision.IsTemporary(err) || !strings.Contains(err.Error(), "tcp port 8081") {
		t.Fatalf("update to a check that never passes = %v, want a permanent ErrUnhealthy naming it", err)
	}
	if took := time.Since(began); took < 2*time.Second {
		t.Fatalf("the update failed after %s, before the new check's start period", took)
	}
	if p := runcPid(t, e, id); p == pid {
		t.Fatal("a health check update did not recreate the container")
	}

	// Rolled back: the first version again, ready and healthy.
	info, err := e.m.Provision(t.Context(), id, same)
	if err != nil || info.State != container.StatusRunning || info.Health != container.HealthHealthy {
		t.Fatalf("rollback = %+v, %v", info, err)
	}

	// The policy took: an exit now leaves it stopped (never), where the
	// first version's default (always) restarted it.
	if err := syscall.Kill(runcPid(t, e, id), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := e.waitState(t, id, container.StatusExited); st.LastExit == nil || st.Restarts != 0 {
		t.Fatalf("status after the kill = %+v", st)
	}
}
