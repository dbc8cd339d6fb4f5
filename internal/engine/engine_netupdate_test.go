package engine_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

func peerKey(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune(b)), 32)))
}

// meshNetwork is a WireGuard network of range 10.250.0.0/16 with subnet
// 10.250.1.0/24 on this node and peers.
func meshNetwork(peers ...provision.WireGuardPeer) provision.Network {
	return provision.Network{Name: "mesh", IPRange: "10.250.0.0/16", Subnet: "10.250.1.0/24", WireGuard: &provision.WireGuard{
		PrivateKey: base64.StdEncoding.EncodeToString(make([]byte, 80)), ListenPort: 51820, Peers: peers,
	}}
}

// A network's peers change by an owner-signed update, applied in place
// (the primitive provisions the new version; nothing is decommissioned).
// An update with bad peers (issue 18's bad input: a key that is not a
// curve25519 key, an endpoint that is not IP:port, allowed IPs over
// another user's subnet) gets a signed error naming the version that
// keeps running, the primitive is not touched, and the owner's next,
// valid version (naming the refused one, as the explorer holds it) is
// applied.
func TestEngineNetworkPeersUpdate(t *testing.T) {
	nodeB := provision.WireGuardPeer{PublicKey: peerKey('b'), Endpoint: "10.99.0.12:51820", AllowedIPs: []string{"10.250.2.0/24"}}
	nodeC := provision.WireGuardPeer{PublicKey: peerKey('c'), AllowedIPs: []string{"10.250.3.0/24"}}
	bad := map[string]struct {
		peer provision.WireGuardPeer
		want string
	}{
		"key-not-curve25519":                    {provision.WireGuardPeer{PublicKey: base64.StdEncoding.EncodeToString([]byte("short")), AllowedIPs: []string{"10.250.3.0/24"}}, "not a curve25519 key"},
		"endpoint-not-ip-port":                  {provision.WireGuardPeer{PublicKey: peerKey('c'), Endpoint: "node-c.example:51820", AllowedIPs: []string{"10.250.3.0/24"}}, "not IPv4:port"},
		"allowed-ips-over-another-users-subnet": {provision.WireGuardPeer{PublicKey: peerKey('c'), AllowedIPs: []string{"10.251.1.0/24"}}, "not inside ip_range"},
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				h.start(nil)
				// Bob's network holds 10.251.0.0/16 on the node.
				bob := provisiontest.NewUser(2)
				bn := bob.Reservation("bob-net", testNode, provision.NetworkReservation,
					provision.Network{Name: "b", IPRange: "10.251.0.0/16", Subnet: "10.251.1.0/24"}, time.Now(), time.Hour)
				h.deliver(bn)
				v1 := h.user.Reservation("n", testNode, provision.NetworkReservation, meshNetwork(nodeB), time.Now(), time.Hour)
				h.deliver(v1)
				settle(0)
				h.wantVersion("bob-net", bn)
				h.wantVersion("n", v1)

				// The peers change: applied in place.
				v2 := h.user.Update(v1, meshNetwork(nodeB, nodeC))
				h.deliver(v2)
				settle(0)
				h.wantVersion("n", v2)
				if h.prims.Provisions("n") != 2 || h.prims.Decommissions("n") != 0 {
					t.Fatalf("the peers' update: %d provisions, %d decommissions; want 2 and 0", h.prims.Provisions("n"), h.prims.Decommissions("n"))
				}

				// Bad peers: refused, version 2 keeps running.
				v3 := h.user.Update(v2, meshNetwork(nodeB, b.peer))
				h.deliver(v3)
				settle(0)
				rec := h.wantRunning("n", v2)
				if h.prims.Provisions("n") != 2 || h.prims.Decommissions("n") != 0 {
					t.Fatal("the refused update reached the primitive")
				}
				last := h.lastResult("n")
				if last.State != provision.StateError || last.Digest != v3.Digest() || last.Version != v3.Version ||
					!strings.Contains(last.Message, b.want) || !strings.Contains(last.Message, "version 2 (deployed) keeps running") || last.Verify(h.nodeKey()) != nil {
					t.Fatalf("refusal: %s v%d %q", last.State, last.Version, last.Message)
				}
				if rec.Result == nil || rec.Result.State != provision.StateOk || rec.Result.Digest != v2.Digest() {
					t.Fatalf("the running version's result changed: %+v", rec.Result)
				}

				// The owner's next version builds on the refused one.
				v4 := h.user.Update(v3, meshNetwork(nodeC))
				h.deliver(v4)
				settle(0)
				h.wantVersion("n", v4)
				h.wantVersion("bob-net", bn)
				h.checkStats(h.store)
			})
		})
	}
}
