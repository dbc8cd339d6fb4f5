package network_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

// newNetwork provisions a network with a random id and removes it (and
// checks it is gone) at cleanup.
func newNetwork(t testing.TB, m *network.Manager, cidr string) (string, *net.IPNet) {
	t.Helper()
	id := testutil.RandHex(t, 8)
	gw := gateway(t, cidr)
	if _, err := m.Provision(t.Context(), id, gw); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Decommission(context.Background(), id); err != nil {
			t.Errorf("Decommission %s: %v", id, err)
		}
		assertNoNamespace(t, network.Namespace(id))
	})
	return id, gw
}

func gateway(t testing.TB, cidr string) *net.IPNet {
	t.Helper()
	n := provision.Network{Name: "n", IPRange: cidr, Subnet: cidr}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	return n.Gateway()
}

func attach(t testing.TB, m *network.Manager, id, cid, ip string) {
	t.Helper()
	p, err := m.Attach(t.Context(), id, cid, net.ParseIP(ip))
	if err != nil {
		t.Fatalf("Attach %s %s: %v", cid, ip, err)
	}
	if want := filepath.Join(network.NamespaceDir, network.ContainerNamespace(cid)); p != want {
		t.Fatalf("Attach path = %s, want %s", p, want)
	}
	t.Cleanup(func() {
		if err := m.Detach(context.Background(), cid); err != nil {
			t.Errorf("Detach %s: %v", cid, err)
		}
		assertNoNamespace(t, network.ContainerNamespace(cid))
	})
}

func assertNoNamespace(t testing.TB, name string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(network.NamespaceDir, name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s left behind (%v)", name, err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), name) {
		t.Errorf("ip netns list still shows %s:\n%s", name, out)
	}
}

// inNS runs a command inside a named namespace.
func inNS(t testing.TB, ns string, args ...string) error {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	if err != nil {
		return errors.Join(err, errors.New(string(out)))
	}
	return nil
}

func TestNetworkLifecycle(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "ip")
	m := network.New(zerolog.Nop())
	ctx := t.Context()
	id, gw := newNetwork(t, m, "10.231.1.0/24")

	// Provision again: same result, nothing duplicated.
	info, err := m.Provision(ctx, id, gw)
	if err != nil {
		t.Fatalf("second Provision: %v", err)
	}
	if info.Namespace != network.Namespace(id) || info.Gateway != "10.231.1.1/24" || info.NetworkID != id {
		t.Fatalf("info = %+v", info)
	}
	if err := m.Inspect(ctx, id); err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if err := inNS(t, network.Namespace(id), "busybox", "ping", "-c1", "-W1", "10.231.1.1"); err != nil {
		t.Fatalf("gateway not reachable inside its namespace: %v", err)
	}

	a, b := "net-a-"+testutil.RandHex(t, 4), "net-b-"+testutil.RandHex(t, 4)
	attach(t, m, id, a, "10.231.1.10")
	attach(t, m, id, b, "10.231.1.11")
	attach(t, m, id, a, "10.231.1.10") // idempotent
	if err := inNS(t, network.ContainerNamespace(a), "busybox", "ping", "-c1", "-W2", "10.231.1.11"); err != nil {
		t.Fatalf("containers of one network cannot reach each other: %v", err)
	}
	if err := inNS(t, network.ContainerNamespace(b), "busybox", "ping", "-c1", "-W2", "10.231.1.1"); err != nil {
		t.Fatalf("container cannot reach its gateway: %v", err)
	}

	// Another network cannot reach them.
	other, _ := newNetwork(t, m, "10.231.1.0/24")
	c := "net-c-" + testutil.RandHex(t, 4)
	attach(t, m, other, c, "10.231.1.12")
	if err := inNS(t, network.ContainerNamespace(c), "busybox", "ping", "-c1", "-W1", "10.231.1.10"); err == nil {
		t.Fatal("a container of another network reached a container of this one")
	}

	err = m.Decommission(ctx, id)
	if !errors.Is(err, network.ErrBusy) || !provision.IsTemporary(err) {
		t.Fatalf("Decommission with attached containers = %v, want temporary ErrBusy", err)
	}

	nets, err := m.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(nets, id) || !slices.Contains(nets, other) {
		t.Fatalf("Networks = %v, want %s and %s", nets, id, other)
	}
	cs, err := m.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{a, b, c} {
		if !slices.Contains(cs, x) {
			t.Fatalf("Containers = %v, missing %s", cs, x)
		}
	}
}

func TestAttachRefuses(t *testing.T) {
	testutil.RequiresRoot(t)
	m := network.New(zerolog.Nop())
	id, _ := newNetwork(t, m, "10.231.2.0/24")
	holder := "holder-" + testutil.RandHex(t, 4)
	attach(t, m, id, holder, "10.231.2.20")

	tests := []struct {
		name      string
		network   string
		ip        string
		want      error
		temporary bool
	}{
		{"ip-in-use", id, "10.231.2.20", network.ErrIPInUse, false},
		{"ip-outside", id, "10.231.3.20", network.ErrIPOutside, false},
		{"ip-gateway", id, "10.231.2.1", network.ErrIPOutside, false},
		{"ip-broadcast", id, "10.231.2.255", network.ErrIPOutside, false},
		{"ip-network-address", id, "10.231.2.0", network.ErrIPOutside, false},
		{"unknown-network", testutil.RandHex(t, 8), "10.231.2.21", network.ErrNotFound, true},
		{"bad-network-id", "../etc", "10.231.2.21", network.ErrBadID, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cid := "refused-" + testutil.RandHex(t, 4)
			err := m.Check(t.Context(), tc.network, cid, net.ParseIP(tc.ip))
			if !errors.Is(err, tc.want) || provision.IsTemporary(err) != tc.temporary {
				t.Fatalf("Check = %v, want %v (temporary %v)", err, tc.want, tc.temporary)
			}
			_, err = m.Attach(t.Context(), tc.network, cid, net.ParseIP(tc.ip))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Attach = %v, want %v", err, tc.want)
			}
			assertNoNamespace(t, network.ContainerNamespace(cid))
		})
	}
}

func TestHalfDone(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "ip")
	m := network.New(zerolog.Nop())
	ctx := t.Context()

	t.Run("namespace-without-bridge", func(t *testing.T) {
		id := testutil.RandHex(t, 8)
		ns := network.Namespace(id)
		if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
		if err := m.Inspect(ctx, id); !errors.Is(err, provision.ErrVanished) {
			t.Fatalf("Inspect of a namespace without bridge = %v, want ErrVanished", err)
		}
		if _, err := m.Provision(ctx, id, gateway(t, "10.231.4.0/24")); err != nil {
			t.Fatalf("Provision completing a half-done network: %v", err)
		}
		if err := m.Inspect(ctx, id); err != nil {
			t.Fatalf("Inspect after completion: %v", err)
		}
		if err := m.Decommission(ctx, id); err != nil {
			t.Fatal(err)
		}
		assertNoNamespace(t, ns)
	})

	t.Run("stale-namespace-file", func(t *testing.T) {
		id := testutil.RandHex(t, 8)
		p := filepath.Join(network.NamespaceDir, network.Namespace(id))
		if err := os.MkdirAll(network.NamespaceDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(p) })
		if err := m.Inspect(ctx, id); !errors.Is(err, provision.ErrVanished) {
			t.Fatalf("Inspect of a stale file = %v, want ErrVanished", err)
		}
		if _, err := m.Provision(ctx, id, gateway(t, "10.231.5.0/24")); err != nil {
			t.Fatalf("Provision over a stale file: %v", err)
		}
		if err := m.Decommission(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := m.Decommission(ctx, id); err != nil {
			t.Fatalf("second Decommission: %v", err)
		}
		assertNoNamespace(t, network.Namespace(id))
	})

	t.Run("changed-gateway", func(t *testing.T) {
		id, _ := newNetwork(t, m, "10.231.6.0/24")
		if _, err := m.Provision(ctx, id, gateway(t, "10.231.7.0/24")); err != nil {
			t.Fatal(err)
		}
		if err := m.Check(ctx, id, "x", net.ParseIP("10.231.6.9")); !errors.Is(err, network.ErrIPOutside) {
			t.Fatalf("old subnet still accepted: %v", err)
		}
		if err := m.Check(ctx, id, "x", net.ParseIP("10.231.7.9")); err != nil {
			t.Fatalf("new subnet refused: %v", err)
		}
	})

	t.Run("port-with-changed-ip", func(t *testing.T) {
		id, _ := newNetwork(t, m, "10.231.8.0/24")
		cid := "moved-" + testutil.RandHex(t, 4)
		attach(t, m, id, cid, "10.231.8.5")
		attach(t, m, id, cid, "10.231.8.6")
		if err := inNS(t, network.ContainerNamespace(cid), "busybox", "ping", "-c1", "-W1", "10.231.8.1"); err != nil {
			t.Fatal(err)
		}
		// The old address is free again.
		if err := m.Check(ctx, id, "other", net.ParseIP("10.231.8.5")); err != nil {
			t.Fatalf("old address still held: %v", err)
		}
	})
}

func TestDetachFreesAtOnce(t *testing.T) {
	testutil.RequiresRoot(t)
	m := network.New(zerolog.Nop())
	ctx := t.Context()
	id := testutil.RandHex(t, 8)
	if _, err := m.Provision(ctx, id, gateway(t, "10.231.9.0/24")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Decommission(context.Background(), id) })
	for i := range 3 {
		cid := fmt.Sprintf("quick-%d-%s", i, testutil.RandHex(t, 3))
		if _, err := m.Attach(ctx, id, cid, net.ParseIP("10.231.9.5")); err != nil {
			t.Fatalf("Attach #%d with the address just freed: %v", i+1, err)
		}
		if err := m.Detach(ctx, cid); err != nil {
			t.Fatal(err)
		}
		assertNoNamespace(t, network.ContainerNamespace(cid))
	}
	// The dying ports do not keep the network busy.
	if err := m.Decommission(ctx, id); err != nil {
		t.Fatalf("Decommission right after Detach: %v", err)
	}
	assertNoNamespace(t, network.Namespace(id))
}

func TestForeignNamespacesIgnored(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "ip")
	m := network.New(zerolog.Nop())
	foreign := "foreign-test-" + testutil.RandHex(t, 4)
	if out, err := exec.Command("ip", "netns", "add", foreign).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", foreign).Run() })
	nets, err := m.Networks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := m.Containers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range append(nets, cs...) {
		if strings.Contains(x, "foreign") {
			t.Fatalf("listed a foreign namespace: %s", x)
		}
	}
	if err := m.Decommission(t.Context(), foreign); !errors.Is(err, network.ErrBadID) {
		t.Fatalf("Decommission of a foreign name = %v, want ErrBadID", err)
	}
	if _, err := os.Stat(filepath.Join(network.NamespaceDir, foreign)); err != nil {
		t.Fatalf("foreign namespace touched: %v", err)
	}
}

func BenchmarkPortName(b *testing.B) {
	for b.Loop() {
		_ = network.PortName("some-container-id")
	}
}
