package network

import (
	"net"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func cidrs(t testing.TB, ss ...string) []net.IPNet {
	t.Helper()
	var out []net.IPNet
	for _, s := range ss {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *n)
	}
	return out
}

// A peer whose allowed IPs, endpoint and keepalive are already the
// device's is left alone by a peer update (so its traffic is not touched
// at all); any difference reconfigures it.
func TestSamePeer(t *testing.T) {
	ep := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 11), Port: 51820}
	cur := wgtypes.Peer{Endpoint: ep, PersistentKeepaliveInterval: keepalive, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32")}
	tests := []struct {
		name string
		p    WireGuardPeer
		ka   time.Duration
		want bool
	}{
		{"same", WireGuardPeer{Endpoint: ep, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32")}, keepalive, true},
		{"same-other-order", WireGuardPeer{Endpoint: &net.UDPAddr{IP: net.ParseIP("10.99.0.11").To4(), Port: 51820}, AllowedIPs: cidrs(t, "10.250.254.2/32", "10.250.1.0/24")}, keepalive, true},
		{"an-allowed-ip-more", WireGuardPeer{Endpoint: ep, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32", "10.250.3.0/24")}, keepalive, false},
		{"another-allowed-ip", WireGuardPeer{Endpoint: ep, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.3/32")}, keepalive, false},
		{"another-prefix-length", WireGuardPeer{Endpoint: ep, AllowedIPs: cidrs(t, "10.250.1.0/25", "10.250.254.2/32")}, keepalive, false},
		{"another-endpoint", WireGuardPeer{Endpoint: &net.UDPAddr{IP: net.IPv4(10, 99, 0, 12), Port: 51820}, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32")}, keepalive, false},
		{"another-port", WireGuardPeer{Endpoint: &net.UDPAddr{IP: net.IPv4(10, 99, 0, 11), Port: 51821}, AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32")}, keepalive, false},
		{"no-keepalive", WireGuardPeer{AllowedIPs: cidrs(t, "10.250.1.0/24", "10.250.254.2/32")}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := samePeer(cur, tt.p, tt.ka); got != tt.want {
				t.Errorf("samePeer = %t, want %t", got, tt.want)
			}
		})
	}
	// A peer without an endpoint keeps the one the device learned.
	learned := wgtypes.Peer{Endpoint: ep, AllowedIPs: cidrs(t, "10.250.3.0/24")}
	if !samePeer(learned, WireGuardPeer{AllowedIPs: cidrs(t, "10.250.3.0/24")}, 0) {
		t.Error("a peer without an endpoint is reconfigured because the device learned one")
	}
}
