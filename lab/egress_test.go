package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

// networkID returns the network id a network reservation's result names.
func networkID(t testing.TB, res *provision.Result) string {
	t.Helper()
	var d struct {
		NetworkID string `json:"network_id"`
	}
	if err := json.Unmarshal(res.Data, &d); err != nil || d.NetworkID == "" {
		t.Fatalf("network result data %s: %v", res.Data, err)
	}
	return d.NetworkID
}

// linkAddrIn returns the IPv4 address of link name in the namespace at
// path.
func linkAddrIn(t testing.TB, path, name string) net.IP {
	t.Helper()
	h := handleIn(t, path)
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, path, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		t.Fatalf("addresses of %s in %s: %v %v", name, path, addrs, err)
	}
	return addrs[0].IP
}

func sleeper(image, digest string) []string {
	return []string{"--image", image, "--image-digest", digest, "--entrypoint", "sleep", "--entrypoint", "3600",
		"--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "1h"}
}

// TestEgressIsolationAndPorts proves, on two lab nodes: containers reach
// the upstream host through their node's uplink (masqueraded to the
// node's address); two users' networks on one node cannot reach each
// other, nor the node's addresses or a service of the node; a published
// port is reached from upstream, is exclusive on its node (a second
// container asking for it gets a signed error, so does a port outside
// the node's range), is freed when its container is deleted; a deleted
// network leaves no link on the node; restarting one node's daemon (its
// orphan cleanup runs) leaves both nodes' containers running and the
// host's /run/netns untouched.
func TestEgressIsolationAndPorts(t *testing.T) {
	requiresLab(t)
	image, digest := fixture.Busybox(t)
	l := newLab(t, 2)
	for _, nd := range l.nodes {
		nd.start(t, l.explorerURL())
	}
	n1, n2 := l.nodes[0], l.nodes[1]
	id1, id2 := n1.id(t), n2.id(t)
	alice, bob := l.newUser(t), l.newUser(t)

	aNet := alice.Reserve(t, "network", "--node", id1, "--name", "web", "--ip-range", "10.241.0.0/16", "--subnet", "10.241.1.0/24", "--duration", "1h")
	aNet2 := alice.Reserve(t, "network", "--node", id2, "--name", "web", "--ip-range", "10.241.0.0/16", "--subnet", "10.241.2.0/24", "--duration", "1h")
	bNet := bob.Reserve(t, "network", "--node", id1, "--name", "web", "--ip-range", "10.242.0.0/16", "--subnet", "10.242.1.0/24", "--duration", "1h")
	aCtr := alice.Reserve(t, "container", append([]string{"--node", id1, "--network", "web", "--ip", "10.241.1.10", "--publish", "8080:80/tcp"}, sleeper(image, digest)...)...)
	aCtr2 := alice.Reserve(t, "container", append([]string{"--node", id2, "--network", "web", "--ip", "10.241.2.10"}, sleeper(image, digest)...)...)
	bCtr := bob.Reserve(t, "container", append([]string{"--node", id1, "--network", "web", "--ip", "10.242.1.10"}, sleeper(image, digest)...)...)
	aNetID := networkID(t, alice.WaitResult(t, aNet, provision.StateOk, within))
	alice.WaitResult(t, aNet2, provision.StateOk, within)
	bNetID := networkID(t, bob.WaitResult(t, bNet, provision.StateOk, within))
	for _, c := range []struct {
		u  *harness.User
		id string
	}{{alice, aCtr}, {alice, aCtr2}, {bob, bCtr}} {
		c.u.WaitResult(t, c.id, provision.StateOk, within)
	}

	up := l.upstream.netnsPath()
	aNS, bNS := n1.containerNetns(aCtr), n1.containerNetns(bCtr)
	serve(t, up, upstreamIP+":9000", "upstream")
	serve(t, n1.hold.netnsPath(), "0.0.0.0:7000", "node-service")
	serve(t, aNS, "0.0.0.0:80", "alice-web")
	serve(t, bNS, "0.0.0.0:80", "bob-web")

	t.Run("egress", func(t *testing.T) {
		for _, c := range []struct{ name, ns, node string }{
			{"alice-node1", aNS, nodeIP(1)}, {"bob-node1", bNS, nodeIP(1)}, {"alice-node2", n2.containerNetns(aCtr2), nodeIP(2)},
		} {
			got := mustReach(t, c.name+" reaches upstream", c.ns, upstreamIP+":9000")
			if want := "upstream " + c.node; got != want {
				t.Errorf("%s: upstream answered %q, want %q (masqueraded to its node's address)", c.name, got, want)
			}
		}
	})

	t.Run("isolation", func(t *testing.T) {
		// Positive controls: each target answers someone.
		if got := mustReach(t, "upstream reaches the node's service", up, nodeIP(1)+":7000"); got != "node-service "+upstreamIP {
			t.Errorf("node service answered %q", got)
		}
		bobUp := linkAddrIn(t, n1.netnsPath(network.Namespace(bNetID)), network.UplinkLink)
		nodeEnd := linkAddrIn(t, n1.hold.netnsPath(), network.UplinkName(aNetID))
		for _, c := range []struct{ what, ns, addr string }{
			{"alice to bob's container", aNS, "10.242.1.10:80"},
			{"alice to bob's network link", aNS, net.JoinHostPort(bobUp.String(), "80")},
			{"bob to alice's container", bNS, "10.241.1.10:80"},
			{"alice to the node's public address", aNS, nodeIP(1) + ":7000"},
			{"alice to the node's end of her link", aNS, net.JoinHostPort(nodeEnd.String(), "7000")},
			{"bob to the node's public address", bNS, nodeIP(1) + ":7000"},
			{"alice to the node's published port (no hairpin)", aNS, nodeIP(1) + ":8080"},
		} {
			mustNotReach(t, c.what, c.ns, c.addr)
		}
	})

	var again string // bob's container that takes the port after alice
	t.Run("published-port", func(t *testing.T) {
		if got := mustReach(t, "upstream reaches alice's published port", up, nodeIP(1)+":8080"); got != "alice-web "+upstreamIP {
			t.Errorf("published port answered %q, want alice-web seeing the client's address", got)
		}
		if got := mustReach(t, "the laptop reaches alice's published port", l.laptop.netnsPath(), nodeIP(1)+":8080"); got != "alice-web "+laptopIP {
			t.Errorf("published port answered the laptop %q", got)
		}
		mustNotReach(t, "node 2 does not publish 8080", up, nodeIP(2)+":8080")
		// The node has 2 cores: bob's first container makes room.
		if _, err := bob.Run(t, "delete", bCtr); err != nil {
			t.Fatal(err)
		}
		bob.WaitResult(t, bCtr, provision.StateDeleted, within)

		taken := bob.Reserve(t, "container", append([]string{"--node", id1, "--network", "web", "--ip", "10.242.1.11", "--publish", "8080:80"}, sleeper(image, digest)...)...)
		res := bob.WaitResult(t, taken, provision.StateError, within)
		if !strings.Contains(res.Message, "already published") || !strings.Contains(res.Message, aCtr) {
			t.Errorf("taken port: message %q does not say 8080 is held by %s", res.Message, aCtr)
		}
		low := bob.Reserve(t, "container", append([]string{"--node", id1, "--network", "web", "--ip", "10.242.1.12", "--publish", "22:80"}, sleeper(image, digest)...)...)
		if res := bob.WaitResult(t, low, provision.StateError, within); !strings.Contains(res.Message, "publishable range") {
			t.Errorf("port 22: message %q does not name the range", res.Message)
		}
		for _, id := range []string{taken, low} {
			if slices.Contains(n1.containers(t), provision.Prefix+id) {
				t.Errorf("refused container %s runs", id)
			}
		}

		if _, err := alice.Run(t, "delete", aCtr); err != nil {
			t.Fatal(err)
		}
		alice.WaitResult(t, aCtr, provision.StateDeleted, within)
		mustNotReach(t, "a deleted container's port", up, nodeIP(1)+":8080")
		again = bob.Reserve(t, "container", append([]string{"--node", id1, "--network", "web", "--ip", "10.242.1.13", "--publish", "8080:80"}, sleeper(image, digest)...)...)
		bob.WaitResult(t, again, provision.StateOk, within)
		serve(t, n1.containerNetns(again), "0.0.0.0:80", "bob-web-2")
		if got := mustReach(t, "the freed port now reaches bob", up, nodeIP(1)+":8080"); got != "bob-web-2 "+upstreamIP {
			t.Errorf("freed port answered %q", got)
		}
	})

	t.Run("per-node-cleanup", func(t *testing.T) {
		// An orphan on each node: node 1's cleanup must remove its own
		// and never see node 2's.
		for _, nd := range l.nodes {
			if out, err := harness.Command("nsenter", nil, append(nd.enter(), "--", "ip", "netns", "add", provision.Prefix+"c-orphan")...); err != nil {
				t.Fatalf("planting an orphan on node %d: %v %s", nd.i, err, out)
			}
		}
		before1, before2 := n1.containers(t), n2.containers(t)
		n1.daemon.Stop(t)
		n1.start(t, l.explorerURL())
		harness.Eventually(t, within, "node 1 removes its orphan", func() error {
			if _, err := os.Stat(n1.netnsPath(provision.Prefix + "c-orphan")); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("still there: %v", err)
			}
			return nil
		})
		if _, err := os.Stat(n2.netnsPath(provision.Prefix + "c-orphan")); err != nil {
			t.Errorf("node 1's cleanup touched node 2's namespace: %v", err)
		}
		if got := n1.containers(t); !slices.Equal(got, before1) {
			t.Errorf("node 1's containers after its restart: %v, want %v", got, before1)
		}
		if got := n2.containers(t); !slices.Equal(got, before2) {
			t.Errorf("node 2's containers after node 1's restart: %v, want %v", got, before2)
		}
		mustReach(t, "alice's node-2 container still reaches upstream", n2.containerNetns(aCtr2), upstreamIP+":9000")
		mustReach(t, "bob still reaches upstream after the restart", n1.containerNetns(again), upstreamIP+":9000")
		host := netnsNames(t)
		for _, name := range []string{network.Namespace(aNetID), network.Namespace(bNetID), provision.Prefix + "c-" + again, provision.Prefix + "c-orphan"} {
			if slices.Contains(host, name) {
				t.Errorf("the lab's namespace %s is in the host's /run/netns", name)
			}
		}
	})

	t.Run("network-removed", func(t *testing.T) {
		for _, id := range n1.containers(t) {
			id = strings.TrimPrefix(id, provision.Prefix)
			for _, u := range []*harness.User{alice, bob} {
				if _, err := u.Run(t, "delete", id); err == nil {
					u.WaitResult(t, id, provision.StateDeleted, within)
				}
			}
		}
		if _, err := bob.Run(t, "delete", bNet); err != nil {
			t.Fatal(err)
		}
		bob.WaitResult(t, bNet, provision.StateDeleted, within)
		h := handleIn(t, n1.hold.netnsPath())
		if _, err := h.LinkByName(network.UplinkName(bNetID)); err == nil {
			t.Errorf("bob's network is deleted but its link %s is left on the node", network.UplinkName(bNetID))
		}
		if _, err := os.Stat(n1.netnsPath(network.Namespace(bNetID))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bob's network namespace is left: %v", err)
		}
		mustReach(t, "alice's network on node 1 still has egress", n1.netnsPath(network.Namespace(aNetID)), upstreamIP+":9000")
	})
}

// netnsNames lists the host's named network namespaces.
func netnsNames(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir(network.NamespaceDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
