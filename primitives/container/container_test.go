package container_test

import (
	"context"
	"crypto/rand"
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

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/primitives/internal/fixture"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

func randHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

type env struct {
	dir    string
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
	opts.Network = e.net
	e.m = container.New(opts)
	t.Cleanup(func() { assertNoLeaks(t, e) })
	return e
}

func (e *env) spec(args ...string) container.Spec {
	return container.Spec{Image: e.image, Digest: e.digest, Args: args, CPU: 1, Memory: 64}
}

// network provisions a network and decommissions it at cleanup.
func (e *env) network(t testing.TB, cidr string) string {
	t.Helper()
	id := randHex(t, 8)
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

// exec runs a command inside container id (with CAP_NET_RAW, which ping needs).
func (e *env) exec(t testing.TB, id string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("runc", append([]string{"--root", e.m.RuncRoot(), "exec", "--cap", "CAP_NET_RAW", container.Name(id)}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
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
		if strings.HasPrefix(m.Point, e.dir) {
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

	a, b, c := "ctr-a-"+randHex(t, 3), "ctr-b-"+randHex(t, 3), "ctr-c-"+randHex(t, 3)
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
	if out, err := e.exec(t, a, "sh", "-c", "echo $GREETING; hostname"); err != nil || !strings.Contains(out, "hello") || !strings.Contains(out, container.Name(a)) {
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
