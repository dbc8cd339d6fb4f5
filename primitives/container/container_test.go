package container_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

type env struct {
	dir    string
	runDir string
	net    *network.Manager
	m      *container.Manager
	image  string
	digest string
}

func newEnv(t testing.TB, opts container.Options) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)
	dir := t.TempDir()
	e := &env{dir: dir, net: network.New(zerolog.Nop()), image: image, digest: digest}
	opts.DataDir = dir
	if opts.RunDir == "" {
		opts.RunDir = runDir(t)
	}
	e.runDir = opts.RunDir
	opts.Network = e.net
	opts.LocalImages = filepath.Dir(image)
	if opts.RestartBackoff == 0 {
		// A stopped container is due for its restart after 100 ms, not
		// 10 s.
		opts.RestartBackoff = 100 * time.Millisecond
	}
	e.m = container.New(opts)
	t.Cleanup(func() { assertNoLeaks(t, e) })
	return e
}

// runDir returns a run directory for root filesystems under /run (the
// test's temporary directory is not searchable by others) and removes it
// at cleanup.
func runDir(t testing.TB) string {
	t.Helper()
	d := filepath.Join("/run/provisiond-test", testutil.RandHex(t, 6))
	t.Cleanup(func() {
		if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("run directory left: %v", err)
		}
	})
	return d
}

func (e *env) spec(args ...string) container.Spec {
	return container.Spec{Image: e.image, Digest: e.digest, Args: args, CPU: 1, Memory: 64}
}

// network provisions a network and decommissions it at cleanup.
func (e *env) network(t testing.TB, cidr string) string {
	t.Helper()
	id := testutil.RandHex(t, 8)
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	gw := &net.IPNet{IP: append(net.IP{}, n.IP.To4()...), Mask: n.Mask}
	gw.IP[3]++
	if _, err := e.net.Provision(t.Context(), id, gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.net.Decommission(context.Background(), id); err != nil {
			t.Errorf("Decommission network: %v", err)
		}
	})
	return id
}

// run provisions container id and decommissions it at cleanup.
func (e *env) run(t testing.TB, id string, s container.Spec) container.Info {
	t.Helper()
	t.Cleanup(func() {
		if err := e.m.Decommission(context.Background(), id); err != nil {
			t.Errorf("Decommission %s: %v", id, err)
		}
	})
	info, err := e.m.Provision(t.Context(), id, s)
	if err != nil {
		out, _ := os.ReadFile(e.m.LogPath(id))
		t.Fatalf("Provision %s: %v\nlog:\n%s", id, err, out)
	}
	return info
}

// exec runs a command inside container id (testutil.ContainerExec: with
// CAP_NET_RAW; a container in a network is entered with nsenter).
func (e *env) exec(t testing.TB, id string, args ...string) (string, error) {
	t.Helper()
	return testutil.ContainerExec(e.m.RuncRoot(), container.Name(id), args...)
}

func eventually(t testing.TB, d time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertNoLeaks checks that nothing of e is left: no runc container in its
// root, no mount under its data directory, no container namespace, no
// cgroup.
func assertNoLeaks(t testing.TB, e *env) {
	t.Helper()
	out, err := exec.Command("runc", "--root", e.m.RuncRoot(), "list", "-q").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "no such file") {
		t.Errorf("runc list: %v %s", err, out)
	}
	if s := strings.TrimSpace(string(out)); s != "" && err == nil {
		t.Errorf("runc containers left: %s", s)
	}
	ms, err := mounts.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Point, e.dir) || strings.HasPrefix(m.Point, e.runDir+"/") {
			t.Errorf("mount left at %s", m.Point)
		}
	}
	ids, err := e.m.List(context.Background())
	if err != nil || len(ids) != 0 {
		t.Errorf("List after cleanup = %v, %v", ids, err)
	}
	entries, _ := os.ReadDir(filepath.Join(e.dir, "containers"))
	if len(entries) != 0 {
		t.Errorf("bundles left: %v", entries)
	}
}

func assertNoContainerNS(t testing.TB, id string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(network.NamespaceDir, network.ContainerNamespace(id))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace of %s left (%v)", id, err)
	}
}

func TestRunInNetwork(t *testing.T) {
	e := newEnv(t, container.Options{})
	ctx := t.Context()
	netA := e.network(t, "10.232.1.0/24")
	netB := e.network(t, "10.232.1.0/24")

	a, b, c := "ctr-a-"+testutil.RandHex(t, 3), "ctr-b-"+testutil.RandHex(t, 3), "ctr-c-"+testutil.RandHex(t, 3)
	sa := e.spec("sleep", "3600")
	sa.NetworkID, sa.IP = netA, net.ParseIP("10.232.1.10")
	sa.Env = map[string]string{"GREETING": "hello"}
	info := e.run(t, a, sa)
	if info.ID != a || info.IP != "10.232.1.10" {
		t.Fatalf("info = %+v", info)
	}
	sb := e.spec("sleep", "3600")
	sb.NetworkID, sb.IP = netA, net.ParseIP("10.232.1.11")
	e.run(t, b, sb)
	sc := e.spec("sleep", "3600")
	sc.NetworkID, sc.IP = netB, net.ParseIP("10.232.1.12")
	e.run(t, c, sc)

	if err := e.m.Inspect(ctx, a); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if out, err := e.exec(t, a, "ping", "-c1", "-W2", "10.232.1.11"); err != nil {
		t.Fatalf("a cannot ping b of the same network: %v\n%s", err, out)
	}
	if out, err := e.exec(t, b, "ping", "-c1", "-W2", "10.232.1.10"); err != nil {
		t.Fatalf("b cannot ping a: %v\n%s", err, out)
	}
	if out, err := e.exec(t, c, "ping", "-c1", "-W1", "10.232.1.10"); err == nil {
		t.Fatalf("c of another network reached a:\n%s", out)
	}
	if out, err := e.exec(t, a, "sh", "-c", `tr '\0' '\n' </proc/1/environ; hostname`); err != nil || !strings.Contains(out, "hello") || !strings.Contains(out, container.Name(a)) {
		t.Fatalf("environment/hostname inside: %q, %v", out, err)
	}

	// Provision again: same container, not a second one.
	pid := runcPid(t, e, a)
	if _, err := e.m.Provision(ctx, a, sa); err != nil {
		t.Fatal(err)
	}
	if got := runcPid(t, e, a); got != pid {
		t.Fatalf("second Provision restarted the container (pid %d → %d)", pid, got)
	}

	// The network refuses to go while containers are attached.
	if err := e.net.Decommission(ctx, netA); !errors.Is(err, network.ErrBusy) {
		t.Fatalf("network Decommission with containers = %v, want ErrBusy", err)
	}
	for i := range 2 {
		if err := e.m.Decommission(ctx, a); err != nil {
			t.Fatalf("Decommission #%d: %v", i+1, err)
		}
	}
	assertNoContainerNS(t, a)
	if err := e.m.Inspect(ctx, a); !errors.Is(err, provision.ErrVanished) {
		t.Fatalf("Inspect after Decommission = %v, want ErrVanished", err)
	}
}

func runcPid(t testing.TB, e *env, id string) int {
	t.Helper()
	out, err := exec.Command("runc", "--root", e.m.RuncRoot(), "state", container.Name(id)).Output()
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	for _, f := range strings.Split(string(out), "\n") {
		if strings.Contains(f, `"pid"`) {
			fmt.Sscanf(strings.TrimSpace(strings.Split(f, ":")[1]), "%d", &pid)
		}
	}
	if pid == 0 {
		t.Fatalf("no pid in %s", out)
	}
	return pid
}

func cgroupFile(t testing.TB, controller, id, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, container.CgroupsPath(container.Name(id)), file))
	if err != nil {
		t.Fatalf("reading cgroup file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestLimitsAndVolume(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("skipping: needs the cgroup v1 memory controller")
	}
	e := newEnv(t, container.Options{})
	ctx := t.Context()
	id := "limits-" + testutil.RandHex(t, 3)
	vol := t.TempDir()
	s := e.spec("sleep", "3600")
	s.Mounts = []container.Mount{{Source: vol, Destination: "/data"}}
	e.run(t, id, s)

	if got := cgroupFile(t, "cpu", id, "cpu.cfs_quota_us"); got != "100000" {
		t.Fatalf("cpu quota = %s, want 100000 (1 CPU)", got)
	}
	if got := cgroupFile(t, "memory", id, "memory.limit_in_bytes"); got != fmt.Sprint(64<<20) {
		t.Fatalf("memory limit = %s, want 64 MiB", got)
	}
	// Tenants die before the daemon: their OOM score comes from the spec,
	// whatever the daemon's own.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", runcPid(t, e, id))); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(container.OOMScoreAdj) {
		t.Fatalf("container oom_score_adj = %q, %v; want %d", b, err, container.OOMScoreAdj)
	}

	// The volume is writable from inside and visible on the host.
	if out, err := e.exec(t, id, "sh", "-c", "echo from-inside > /data/hello"); err != nil {
		t.Fatalf("writing the volume: %v %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "hello")); err != nil || string(b) != "from-inside\n" {
		t.Fatalf("host sees %q, %v", b, err)
	}

	// Allocating past 64 MiB gets the process OOM-killed: awk doubles a
	// string until it no longer fits.
	out, err := e.exec(t, id, "awk", `BEGIN { s = "0123456789abcdef"; while (length(s) < 512*1024*1024) s = s s; print length(s) }`)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 137 {
		t.Fatalf("allocating 512 MiB under a 64 MiB limit: %v (want exit 137, SIGKILL)\n%s", err, out)
	}
	// (memory.failcnt stays 0 on recent kernels; oom_control counts kills.)
	if oc := cgroupFile(t, "memory", id, "memory.oom_control"); !strings.Contains(oc, "oom_kill ") || strings.Contains(oc, "oom_kill 0") {
		t.Fatalf("memory.oom_control shows no OOM kill:\n%s", oc)
	}
	if got := cgroupFile(t, "memory", id, "memory.max_usage_in_bytes"); got != fmt.Sprint(64<<20) {
		t.Fatalf("peak memory = %s, want the 64 MiB limit", got)
	}
	// The container itself survives its killed child.
	if err := e.m.Inspect(ctx, id); err != nil {
		t.Fatalf("Inspect after the OOM kill: %v", err)
	}
}

func TestRefuses(t *testing.T) {
	e := newEnv(t, container.Options{})
	netID := e.network(t, "10.232.2.0/24")
	holder := "holder-" + testutil.RandHex(t, 3)
	hs := e.spec("sleep", "3600")
	hs.NetworkID, hs.IP = netID, net.ParseIP("10.232.2.10")
	e.run(t, holder, hs)

	other := make([]byte, 32)
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(passwd)
	passwdDigest := hex.EncodeToString(sum[:])
	tests := []struct {
		name      string
		edit      func(*container.Spec)
		want      error
		temporary bool
	}{
		{"no-cpu", func(s *container.Spec) { s.CPU = 0 }, container.ErrNoCPU, false},
		{"memory-too-low", func(s *container.Spec) { s.Memory = provision.MinContainerMemory - 1 }, container.ErrMemoryTooLow, false},
		{"no-entrypoint", func(s *container.Spec) { s.Args = nil }, container.ErrNoEntrypoint, false},
		{"bad-digest", func(s *container.Spec) { s.Digest = "sha256:xyz" }, container.ErrBadDigest, false},
		{"digest-mismatch", func(s *container.Spec) { s.Digest = hex.EncodeToString(other) }, container.ErrDigestMismatch, false},
		{"image-not-found", func(s *container.Spec) {
			s.Image, s.Digest = filepath.Join(filepath.Dir(e.image), "nonexistent.tar"), hex.EncodeToString(other)
		}, container.ErrImageNotFound, false},
		{"image-outside-local-images", func(s *container.Spec) {
			s.Image, s.Digest = "/etc/passwd", passwdDigest
		}, container.ErrBadImage, false},
		{"unknown-network", func(s *container.Spec) { s.NetworkID, s.IP = testutil.RandHex(t, 8), net.ParseIP("10.232.2.11") }, network.ErrNotFound, true},
		{"ip-outside", func(s *container.Spec) { s.NetworkID, s.IP = netID, net.ParseIP("10.232.3.11") }, network.ErrIPOutside, false},
		{"ip-in-use", func(s *container.Spec) { s.NetworkID, s.IP = netID, net.ParseIP("10.232.2.10") }, network.ErrIPInUse, false},
		{"relative-mount", func(s *container.Spec) { s.Mounts = []container.Mount{{Source: "vol", Destination: "/data"}} }, container.ErrBadMount, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "refused-" + testutil.RandHex(t, 3)
			s := e.spec("sleep", "3600")
			tc.edit(&s)
			_, err := e.m.Provision(t.Context(), id, s)
			if err == nil {
				e.m.Decommission(context.Background(), id)
			}
			if !errors.Is(err, tc.want) || provision.IsTemporary(err) != tc.temporary {
				t.Fatalf("Provision = %v, want %v (temporary %v)", err, tc.want, tc.temporary)
			}
			ids, err := e.m.List(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range ids {
				if x == id {
					t.Fatalf("refused container %s left something behind", id)
				}
			}
			assertNoContainerNS(t, id)
			images, _ := os.ReadDir(filepath.Join(e.dir, "images"))
			for _, im := range images {
				if im.Name() != e.digest {
					t.Fatalf("image directory %s left behind", im.Name())
				}
			}
		})
	}
}

// restartWhenDue waits until Inspect says that container id's restart
// is due, and provisions it again, as the Engine does.
func (e *env) restartWhenDue(t testing.TB, id string, s container.Spec) (container.Info, error) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		err := e.m.Inspect(t.Context(), id)
		if errors.Is(err, provision.ErrVanished) {
			return nil
		}
		return fmt.Errorf("restart not due: Inspect = %v", err)
	})
	return e.m.Provision(t.Context(), id, s)
}

// waitState waits until container id's status is state, and returns it.
func (e *env) waitState(t testing.TB, id, state string) container.Info {
	t.Helper()
	var info container.Info
	eventually(t, 30*time.Second, func() error {
		if err := e.m.Inspect(t.Context(), id); err != nil && !errors.Is(err, provision.ErrVanished) {
			return err
		}
		var err error
		if info, err = e.m.Status(t.Context(), id); err != nil {
			return err
		}
		if info.State != state {
			return fmt.Errorf("status %+v, want %s", info, state)
		}
		return nil
	})
	return info
}

func TestRestartAndCrashLoop(t *testing.T) {
	type giveUp struct{ id, reason string }
	var gaveUp []giveUp
	e := newEnv(t, container.Options{
		MaxExits:   2,
		ExitWindow: time.Minute,
		OnGiveUp: func(_ context.Context, id, reason string) error {
			gaveUp = append(gaveUp, giveUp{id, reason})
			return nil
		},
	})
	id := "crashy-" + testutil.RandHex(t, 3)
	s := e.spec("sh", "-c", "echo started; exit 3")
	e.run(t, id, s)

	// Two exits are tolerated: each is restarted once due.
	for i := range 2 {
		info, err := e.restartWhenDue(t, id, s)
		if err != nil {
			t.Fatalf("restart #%d: %v", i+1, err)
		}
		if info.Restarts != i+1 || info.LastExit == nil || info.LastExit.Code != 3 {
			t.Fatalf("status after restart #%d = %+v", i+1, info)
		}
	}
	_, err := e.restartWhenDue(t, id, s)
	if !errors.Is(err, container.ErrCrashLoop) || provision.IsTemporary(err) {
		t.Fatalf("third exit within the window = %v, want permanent ErrCrashLoop", err)
	}
	if len(gaveUp) != 1 || gaveUp[0].id != id || !strings.HasPrefix(gaveUp[0].reason, "crash-looping: 3 exits in 1m0s, the last: exited (code 3)") {
		t.Fatalf("OnGiveUp calls = %+v", gaveUp)
	}
	logs, err := os.ReadFile(e.m.LogPath(id))
	if err != nil || strings.Count(string(logs), "started") != 3 {
		t.Fatalf("log = %q, %v; want three starts", logs, err)
	}
}

func TestHalfDone(t *testing.T) {
	e := newEnv(t, container.Options{})
	ctx := t.Context()
	netID := e.network(t, "10.232.4.0/24")
	spec := func(ip string) container.Spec {
		s := e.spec("sleep", "3600")
		s.NetworkID, s.IP = netID, net.ParseIP(ip)
		return s
	}
	runc := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("runc", append([]string{"--root", e.m.RuncRoot()}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("runc %v: %v %s", args, err, out)
		}
	}

	t.Run("overlay-mounted-runc-missing", func(t *testing.T) {
		id := "half-a-" + testutil.RandHex(t, 3)
		e.run(t, id, spec("10.232.4.10"))
		runc("delete", "--force", container.Name(id))
		// Its shim saw it end: it is restarted once its backoff passed.
		if _, err := e.restartWhenDue(t, id, spec("10.232.4.10")); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Inspect(ctx, id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("runc-created-not-started", func(t *testing.T) {
		id := "half-b-" + testutil.RandHex(t, 3)
		e.run(t, id, spec("10.232.4.11"))
		runc("delete", "--force", container.Name(id))
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer devnull.Close()
		cmd := exec.Command("runc", "--root", e.m.RuncRoot(), "create", "--bundle", e.m.Bundle(id), container.Name(id))
		cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
		if err := cmd.Run(); err != nil {
			t.Fatalf("runc create: %v", err)
		}
		if _, err := e.m.Provision(ctx, id, spec("10.232.4.11")); err != nil {
			t.Fatal(err)
		}
		if err := e.m.Inspect(ctx, id); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("after-reboot", func(t *testing.T) {
		// The process died, the overlay and the namespace are gone; the runc
		// state directory on disk still names the container.
		id := "half-c-" + testutil.RandHex(t, 3)
		e.run(t, id, spec("10.232.4.12"))
		runc("kill", container.Name(id), "KILL")
		eventually(t, 10*time.Second, func() error {
			if err := e.m.Inspect(ctx, id); !errors.Is(err, provision.ErrVanished) {
				return fmt.Errorf("still running: %v", err)
			}
			return nil
		})
		if err := e.net.Detach(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := mounts.Unmount(filepath.Join(e.runDir, container.Name(id))); err != nil {
			t.Fatal(err)
		}
		restarted := container.New(container.Options{DataDir: e.dir, RunDir: e.runDir, Network: e.net, LocalImages: filepath.Dir(e.image)})
		defer restarted.Close()
		if _, err := restarted.Provision(ctx, id, spec("10.232.4.12")); err != nil {
			t.Fatal(err)
		}
		if out, err := e.exec(t, id, "ping", "-c1", "-W2", "10.232.4.1"); err != nil {
			t.Fatalf("re-created container has no network: %v %s", err, out)
		}
	})

	t.Run("changed-spec", func(t *testing.T) {
		id := "half-d-" + testutil.RandHex(t, 3)
		e.run(t, id, spec("10.232.4.13"))
		before := runcPid(t, e, id)
		// A new IP is applied to the running container's namespace.
		info, err := e.m.Provision(ctx, id, spec("10.232.4.14"))
		if err != nil || info.IP != "10.232.4.14" {
			t.Fatalf("Provision with a new ip = %+v, %v", info, err)
		}
		if runcPid(t, e, id) != before {
			t.Fatal("container restarted for an address change")
		}
		// A new configuration replaces the container.
		s := spec("10.232.4.14")
		s.Env = map[string]string{"V": "2"}
		if _, err := e.m.Provision(ctx, id, s); err != nil {
			t.Fatal(err)
		}
		if runcPid(t, e, id) == before {
			t.Fatal("container not restarted with its new configuration")
		}
		if out, err := e.exec(t, id, "ip", "-4", "addr", "show", "eth0"); err != nil || !strings.Contains(out, "10.232.4.14/24") || strings.Contains(out, "10.232.4.13") {
			t.Fatalf("eth0 inside: %v\n%s", err, out)
		}
	})
}

func TestSurvivesDaemonRestart(t *testing.T) {
	e := newEnv(t, container.Options{})
	id := "survivor-" + testutil.RandHex(t, 3)
	e.run(t, id, e.spec("sleep", "3600"))
	pid := runcPid(t, e, id)
	// The old daemon is gone: nothing reads the logs until the new one.
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := container.New(container.Options{DataDir: e.dir, RunDir: e.runDir, Network: e.net, LocalImages: filepath.Dir(e.image)})
	defer restarted.Close()
	if err := restarted.Inspect(t.Context(), id); err != nil {
		t.Fatalf("Inspect from a new Manager: %v", err)
	}
	if _, err := restarted.Provision(t.Context(), id, e.spec("sleep", "3600")); err != nil {
		t.Fatal(err)
	}
	if runcPid(t, e, id) != pid {
		t.Fatal("a restarted daemon restarted a healthy container")
	}
	// One image directory, unpacked once for both provisions.
	images, err := os.ReadDir(filepath.Join(e.dir, "images"))
	if err != nil || len(images) != 1 || images[0].Name() != e.digest {
		t.Fatalf("images = %v, %v; want only %s", images, err, e.digest)
	}
}

// TestUnderNotifySocket is the daemon under its Type=notify unit: systemd
// sets NOTIFY_SOCKET. Handed to runc, `runc run --detach` passes it into
// the container and waits for a READY=1 no tenant sends, so Provision
// hung until its timeout. runc must not see it.
func TestUnderNotifySocket(t *testing.T) {
	e := newEnv(t, container.Options{})
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	id := "notify-" + testutil.RandHex(t, 3)
	t.Cleanup(func() {
		if err := e.m.Decommission(context.Background(), id); err != nil {
			t.Errorf("Decommission %s: %v", id, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := e.m.Provision(ctx, id, e.spec("sleep", "3600")); err != nil {
		t.Fatalf("Provision with NOTIFY_SOCKET set: %v", err)
	}
	if err := e.m.Inspect(ctx, id); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
}
