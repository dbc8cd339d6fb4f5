package provision_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/provision"
)

func wgKey(b byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune(b)), 32)))
}

func wgNetwork() *provision.Network {
	return &provision.Network{Name: "mesh", IPRange: "10.250.0.0/16", Subnet: "10.250.1.0/24", WireGuard: &provision.WireGuard{
		PrivateKey: base64.StdEncoding.EncodeToString(make([]byte, 80)),
		ListenPort: 51820,
		Peers: []provision.WireGuardPeer{
			{PublicKey: wgKey('a'), Endpoint: "10.99.0.12:51820", AllowedIPs: []string{"10.250.2.0/24"}},
			{PublicKey: wgKey('b'), AllowedIPs: []string{"10.250.3.0/24", "10.250.254.2/32"}},
		},
	}}
}

// TestWireGuardValidate covers the bad inputs of a WireGuard network:
// each is refused before anything is touched (the engine signs the
// error).
func TestWireGuardValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(n *provision.Network)
		want string // "" for valid
	}{
		{name: "valid", edit: func(*provision.Network) {}},
		{name: "port-zero", edit: func(n *provision.Network) { n.WireGuard.ListenPort = 0 }, want: "listen_port"},
		{name: "port-too-big", edit: func(n *provision.Network) { n.WireGuard.ListenPort = 70000 }, want: "listen_port"},
		{name: "key-not-base64", edit: func(n *provision.Network) { n.WireGuard.Peers[0].PublicKey = "not a key!" }, want: "curve25519"},
		{name: "key-short", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].PublicKey = base64.StdEncoding.EncodeToString(make([]byte, 31))
		}, want: "curve25519"},
		{name: "key-zero", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].PublicKey = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}, want: "all-zero"},
		{name: "key-twice", edit: func(n *provision.Network) { n.WireGuard.Peers[1].PublicKey = wgKey('a') }, want: "twice"},
		{name: "endpoint-no-port", edit: func(n *provision.Network) { n.WireGuard.Peers[0].Endpoint = "10.99.0.12" }, want: "IPv4:port"},
		{name: "endpoint-name", edit: func(n *provision.Network) { n.WireGuard.Peers[0].Endpoint = "node.example:51820" }, want: "IPv4:port"},
		{name: "endpoint-port-zero", edit: func(n *provision.Network) { n.WireGuard.Peers[0].Endpoint = "10.99.0.12:0" }, want: "IPv4:port"},
		{name: "allowed-outside-range", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].AllowedIPs = []string{"10.251.0.0/24"} // another user's subnet
		}, want: "not inside ip_range"},
		{name: "allowed-covers-everything", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].AllowedIPs = []string{"0.0.0.0/0"}
		}, want: "not inside ip_range"},
		{name: "allowed-own-subnet", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].AllowedIPs = []string{"10.250.1.0/25"}
		}, want: "this node's subnet"},
		{name: "allowed-overlap-peers", edit: func(n *provision.Network) {
			n.WireGuard.Peers[1].AllowedIPs = []string{"10.250.2.128/25"}
		}, want: "another peer"},
		{name: "allowed-host-bits", edit: func(n *provision.Network) {
			n.WireGuard.Peers[0].AllowedIPs = []string{"10.250.2.1/24"}
		}, want: "host bits"},
		{name: "no-allowed", edit: func(n *provision.Network) { n.WireGuard.Peers[0].AllowedIPs = nil }, want: "allowed_ips"},
		{name: "sealed-key-missing", edit: func(n *provision.Network) { n.WireGuard.PrivateKey = "" }, want: "private_key"},
		{name: "sealed-key-huge", edit: func(n *provision.Network) { n.WireGuard.PrivateKey = strings.Repeat("A", 400) }, want: "private_key"},
		{name: "too-many-peers", edit: func(n *provision.Network) {
			for i := range provision.MaxPeers {
				n.WireGuard.Peers = append(n.WireGuard.Peers, provision.WireGuardPeer{PublicKey: wgKey(byte('c' + i%20)), AllowedIPs: []string{"10.250.9.0/24"}})
			}
		}, want: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := wgNetwork()
			tt.edit(n)
			err := n.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if !errors.Is(err, provision.ErrBadField) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want ErrBadField naming %q", err, tt.want)
			}
		})
	}
}

// FuzzNetworkWireGuard checks that decoding and validating a network's
// data never panics, and that what validates has peers whose keys parse.
func FuzzNetworkWireGuard(f *testing.F) {
	b, _ := json.Marshal(wgNetwork())
	f.Add(b)
	f.Add([]byte(`{"name":"m","ip_range":"10.0.0.0/8","subnet":"10.1.0.0/24","wireguard":{"private_key":"AA==","listen_port":1,"peers":[{"public_key":"","allowed_ips":["10.2.0.0/16"]}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var n provision.Network
		if provision.DecodeData(data, &n) != nil || n.Validate() != nil || n.WireGuard == nil {
			return
		}
		for _, p := range n.WireGuard.Peers {
			if _, err := provision.ParseWireGuardKey(p.PublicKey); err != nil {
				t.Fatalf("a valid network has a peer key that does not parse: %v", err)
			}
		}
	})
}
