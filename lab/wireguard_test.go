package lab

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

// wgQuick is what the test reads of a wg-quick configuration.
type wgQuick struct {
	privateKey, address, peerKey, endpoint, allowed string
}

func parseWGQuick(t testing.TB, conf string) wgQuick {
	t.Helper()
	var q wgQuick
	sc := bufio.NewScanner(strings.NewReader(conf))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if !ok {
			continue
		}
		switch k {
		case "PrivateKey":
			q.privateKey = v
		case "Address":
			q.address = v
		case "PublicKey":
			q.peerKey = v
		case "Endpoint":
			q.endpoint = v
		case "AllowedIPs":
			q.allowed = v
		}
	}
	if q.privateKey == "" || q.address == "" || q.peerKey == "" || q.endpoint == "" || q.allowed == "" {
		t.Fatalf("incomplete wg-quick configuration:\n%s", conf)
	}
	return q
}

// upWGQuick does in the namespace of h what `wg-quick up` does with q, on
// a userspace device run by `provisiond wireguard` (the host's UAPI
// directory is shared: the interface name is unique).
func (l *lab) upWGQuick(t testing.TB, h *holder, q wgQuick) {
	t.Helper()
	name := fmt.Sprintf("labwg%d", os.Getpid()%100000)
	p := startIn(t, "laptop wireguard", filepath.Join(l.dir, "laptop-wg.log"), []string{"--net=" + h.netnsPath()},
		harness.Bin(t, "provisiond"), "wireguard", "--interface", name)
	t.Cleanup(func() { p.Stop(t) })
	wc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	harness.Eventually(t, 10*time.Second, "laptop wireguard device", func() error {
		_, err := wc.Device(name)
		return err
	})
	priv, err := wgtypes.ParseKey(q.privateKey)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := wgtypes.ParseKey(q.peerKey)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := net.ResolveUDPAddr("udp4", q.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	_, allowed, err := net.ParseCIDR(q.allowed)
	if err != nil {
		t.Fatal(err)
	}
	ka := 25 * time.Second
	if err := wc.ConfigureDevice(name, wgtypes.Config{PrivateKey: &priv, Peers: []wgtypes.PeerConfig{{
		PublicKey: peer, Endpoint: ep, AllowedIPs: []net.IPNet{*allowed}, PersistentKeepaliveInterval: &ka,
	}}}); err != nil {
		t.Fatal(err)
	}
	hh := handleIn(t, h.netnsPath())
	link, err := hh.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := netlink.ParseAddr(q.address)
	if err != nil {
		t.Fatal(err)
	}
	if err := hh.AddrAdd(link, addr); err != nil {
		t.Fatal(err)
	}
	if err := hh.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	if err := hh.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: allowed}); err != nil {
		t.Fatal(err)
	}
}

// ping sends one ICMP echo from the namespace at nsPath (busybox ping).
func ping(nsPath, ip string) error {
	out, err := harness.Command("nsenter", nil, "--net="+nsPath, "--", "busybox", "ping", "-c", "1", "-W", "2", ip)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// helperPID returns the pid of the process whose network namespace is
// the one at nsPath and whose command line runs the wireguard helper; 0
// when there is none.
func helperPID(t testing.TB, nsPath string) int {
	t.Helper()
	var want syscall.Stat_t
	if err := syscall.Stat(nsPath, &want); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "wireguard\x00--interface") {
			return pid
		}
	}
	return 0
}

// stream is a TCP connection that echoes a counter every 50 ms and
// records the first failure and the longest time between two echoes.
type stream struct {
	mu     sync.Mutex
	err    error
	count  int
	last   time.Time     // of the last echo
	maxGap time.Duration // between two echoes
	stop   chan struct{}
	done   chan struct{}
}

func startStream(t testing.TB, nsPath, addr string) *stream {
	t.Helper()
	c, err := dialIn(nsPath, addr, 5*time.Second)
	if err != nil {
		t.Fatalf("stream to %s: %v", addr, err)
	}
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil { // the greeting
		t.Fatal(err)
	}
	s := &stream{stop: make(chan struct{}), done: make(chan struct{}), last: time.Now()}
	go func() {
		defer close(s.done)
		defer c.Close()
		for i := 0; ; i++ {
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			msg := fmt.Sprintf("tick %d\n", i)
			_, err := c.Write([]byte(msg))
			var got string
			if err == nil {
				got, err = r.ReadString('\n')
			}
			if err == nil && got != msg {
				err = fmt.Errorf("echo %q, want %q", got, msg)
			}
			s.mu.Lock()
			if err != nil {
				s.err = err
			} else {
				s.count++
				now := time.Now()
				s.maxGap = max(s.maxGap, now.Sub(s.last))
				s.last = now
			}
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *stream) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *stream) state() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.err
}

// gap returns the longest time the stream went without an echo so far
// (until now, when it is the current wait), and resets it.
func (s *stream) gap() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := max(s.maxGap, time.Since(s.last))
	s.maxGap = 0
	return g
}

// waitTicks waits until the stream echoed n more ticks, failing on its
// first error.
func (s *stream) waitTicks(t testing.TB, what string, n int) {
	t.Helper()
	start, _ := s.state()
	harness.Eventually(t, 30*time.Second, what, func() error {
		c, err := s.state()
		if err != nil {
			return harness.Permanent(fmt.Errorf("the stream broke: %w", err))
		}
		if c < start+n {
			return fmt.Errorf("%d ticks", c-start)
		}
		return nil
	})
}

// directClient returns an explorer client signing with u's key, and the
// key: what a user who bypasses provctl's checks sends, from the upstream
// namespace (where the explorer listens).
func (l *lab) directClient(t testing.TB, u *harness.User) (*explorer.Client, ed25519.PrivateKey) {
	t.Helper()
	key, err := identity.Load(u.Key)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
		return dialIn(l.upstream.netnsPath(), addr, 5*time.Second)
	}}
	return explorer.NewUserClient(l.explorerURL(), key, explorer.ClientOptions{Transport: tr}), key
}

// TestWireGuardAcrossNodes proves a user network over three lab nodes:
// created on nodes 1 and 2 (both with a public address; node 1 is the
// hub), then node 3, without a public address, is added with `provctl
// network add` (an owner-signed next version of both members, the peers
// changed in place) while a TCP stream runs between nodes 1 and 2: the
// stream is never cut nor stalled, and node 3 reaches the others through
// the hub. Containers reach each other across nodes (ping and TCP, the
// source address kept); the laptop reaches them with the configuration
// `provctl network access` prints; the explorer holds only sealed keys;
// kill -9 and restart of a daemon do not cut a TCP stream between nodes;
// a killed WireGuard helper is restored by the reconcile loop.
func TestWireGuardAcrossNodes(t *testing.T) {
	requiresLab(t)
	image, digest := fixture.Busybox(t)
	l := newLab(t, 3)
	for _, nd := range l.nodes {
		nd.start(t, l.explorerURL())
	}
	ids := []string{l.nodes[0].id(t), l.nodes[1].id(t), l.nodes[2].id(t)}
	alice := l.newUser(t)
	out, err := alice.Run(t, "network", "create", "--name", "mesh", "--ip-range", "10.250.0.0/16",
		"--member", ids[0]+"=10.250.1.0/24@"+nodeIP(1), "--member", ids[1]+"=10.250.2.0/24@"+nodeIP(2),
		"--access", "10.250.254.2/32", "--duration", "1h")
	if err != nil {
		t.Fatal(err)
	}
	netRes := strings.Fields(out)
	if len(netRes) != 2 {
		t.Fatalf("network create printed %q, want 2 reservation ids", out)
	}
	var netID string
	for _, id := range netRes {
		netID = networkID(t, alice.WaitResult(t, id, provision.StateOk, within))
	}

	t.Run("explorer-holds-sealed-keys", func(t *testing.T) {
		got, err := alice.Run(t, "get", "--json", netRes[0])
		if err != nil {
			t.Fatal(err)
		}
		var r provision.Reservation
		if err := json.Unmarshal([]byte(got), &r); err != nil {
			t.Fatal(err)
		}
		var n provision.Network
		if err := json.Unmarshal(r.Data, &n); err != nil || n.WireGuard == nil {
			t.Fatalf("network data %s: %v", r.Data, err)
		}
		sealed, err := base64.StdEncoding.DecodeString(n.WireGuard.PrivateKey)
		// A 32-byte key sealed in an anonymous box: 32 (ephemeral key) + 16 (tag) + 32.
		if err != nil || len(sealed) != 80 {
			t.Errorf("private_key at the explorer is %d bytes (%v), want an 80-byte sealed box", len(sealed), err)
		}
	})

	ctrs := make([]string, 3)
	ns := make([]string, 3)
	runContainer := func(i int) {
		ctrs[i] = alice.Reserve(t, "container", append([]string{"--node", ids[i], "--network", "mesh", "--ip", fmt.Sprintf("10.250.%d.10", i+1)}, sleeper(image, digest)...)...)
		alice.WaitResult(t, ctrs[i], provision.StateOk, within)
		ns[i] = l.nodes[i].containerNetns(ctrs[i])
		serve(t, ns[i], "0.0.0.0:80", fmt.Sprintf("c%d", i+1))
	}
	runContainer(0)
	runContainer(1)

	// Node 3 joins while a stream runs between nodes 1 and 2, once the
	// tunnel between them is up (a first handshake sent before the
	// peer's device was up is retried by WireGuard after 5 s).
	mustReach(t, "c1 reaches c2 before the stream", ns[0], "10.250.2.10:80")
	live := startStream(t, ns[0], "10.250.2.10:80")
	live.waitTicks(t, "the stream flows before the add", 5)
	live.gap()
	t.Run("add-member", func(t *testing.T) {
		out, err := alice.Run(t, "network", "add", "--name", "mesh", "--member", ids[2]+"=10.250.3.0/24")
		if err != nil {
			t.Fatal(err)
		}
		// One line per member: ID, what was done, the version the explorer
		// holds, the node; the new member first.
		want := []string{" created v0 " + ids[2], netRes[0] + " updated v1 " + ids[0], netRes[1] + " updated v1 " + ids[1]}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasSuffix(lines[0], want[0]) || lines[1] != want[1] || lines[2] != want[2] {
			t.Fatalf("network add printed\n%s\nwant lines ending in %q", out, want)
		}
		netRes = append(netRes, strings.Fields(lines[0])[0])
		for i, id := range netRes {
			res := alice.WaitResult(t, id, provision.StateOk, within)
			r, verified := alice.Get(t, id)
			if wantV := []uint32{1, 1, 0}[i]; !verified || r.Version != wantV || res.Digest != r.Digest() {
				t.Fatalf("member %d's network %s: version %d (verified %t), want an ok result for version %d", i+1, id, r.Version, verified, wantV)
			}
		}
		// The version shows in provctl get.
		got, err := alice.Run(t, "get", netRes[0])
		if err != nil || !slices.ContainsFunc(strings.Split(got, "\n"), func(l string) bool { return slices.Equal(strings.Fields(l), []string{"version:", "1"}) }) {
			t.Errorf("get %s does not show version 1 (%v):\n%s", netRes[0], err, got)
		}
		g := live.gap()
		t.Logf("the stream between nodes 1 and 2: longest time without an echo during the add %s", g)
		if g > 2*time.Second {
			t.Errorf("the stream between nodes 1 and 2 stalled %s during the add", g)
		}
	})
	runContainer(2)

	t.Run("across-nodes", func(t *testing.T) {
		for _, c := range []struct{ from, to int }{{0, 1}, {1, 0}, {2, 1}, {1, 2}, {2, 0}, {0, 2}} {
			dst := fmt.Sprintf("10.250.%d.10", c.to+1)
			what := fmt.Sprintf("c%d reaches c%d", c.from+1, c.to+1)
			got := mustReach(t, what, ns[c.from], dst+":80")
			if want := fmt.Sprintf("c%d 10.250.%d.10", c.to+1, c.from+1); got != want {
				t.Errorf("%s: answer %q, want %q (the source kept across the tunnel)", what, got, want)
			}
			if err := ping(ns[c.from], dst); err != nil {
				t.Errorf("%s: ping: %v", what, err)
			}
		}
	})

	t.Run("laptop-access", func(t *testing.T) {
		conf, err := alice.Run(t, "network", "access", "--name", "mesh")
		if err != nil {
			t.Fatal(err)
		}
		q := parseWGQuick(t, conf)
		if q.endpoint != nodeIP(1)+":51820" || q.allowed != "10.250.0.0/16" || q.address != "10.250.254.2/32" {
			t.Errorf("access configuration %+v", q)
		}
		l.upWGQuick(t, l.laptop, q)
		for i := range 3 {
			got := mustReach(t, fmt.Sprintf("the laptop reaches c%d", i+1), l.laptop.netnsPath(), fmt.Sprintf("10.250.%d.10:80", i+1))
			if want := fmt.Sprintf("c%d 10.250.254.2", i+1); got != want {
				t.Errorf("laptop to c%d: %q, want %q", i+1, got, want)
			}
		}
	})

	t.Run("stream-kept-through-the-add", func(t *testing.T) {
		live.waitTicks(t, "the stream flows after the add", 10)
		n, err := live.state()
		if g := live.gap(); err != nil || g > 2*time.Second {
			t.Errorf("the stream between nodes 1 and 2, open since before the add: %d echoes, error %v, longest stall %s since the add", n, err, g)
		}
		t.Logf("the stream between nodes 1 and 2 echoed %d ticks from before the add to now, none lost", n)
		live.close()
	})

	t.Run("restart-keeps-streams", func(t *testing.T) {
		direct := startStream(t, ns[0], "10.250.2.10:80")  // node 1 to node 2
		relayed := startStream(t, ns[2], "10.250.2.10:80") // node 3 through node 1 to node 2
		direct.waitTicks(t, "streams flow", 5)
		for _, i := range []int{0, 1} {
			nd := l.nodes[i]
			nd.daemon.Kill()
			direct.waitTicks(t, fmt.Sprintf("direct stream with node %d's daemon killed", i+1), 10)
			relayed.waitTicks(t, fmt.Sprintf("relayed stream with node %d's daemon killed", i+1), 10)
			nd.start(t, l.explorerURL())
			direct.waitTicks(t, fmt.Sprintf("direct stream after node %d's restart", i+1), 20)
			relayed.waitTicks(t, fmt.Sprintf("relayed stream after node %d's restart", i+1), 20)
		}
		for _, s := range []*stream{direct, relayed} {
			n, err := s.state()
			if err != nil {
				t.Errorf("stream broke after %d ticks: %v", n, err)
			}
		}
	})

	t.Run("bad-input", func(t *testing.T) {
		bob := l.newUser(t)
		bNet := bob.Reserve(t, "network", "--node", ids[0], "--name", "b", "--ip-range", "10.9.0.0/16", "--subnet", "10.9.0.0/24", "--duration", "1h")
		bob.WaitResult(t, bNet, provision.StateOk, within)
		// The network's listen port is a node port like any other.
		taken := bob.Reserve(t, "container", append([]string{"--node", ids[0], "--network", "b", "--ip", "10.9.0.10", "--publish", "51820:80/udp"}, sleeper(image, digest)...)...)
		if res := bob.WaitResult(t, taken, provision.StateError, within); !strings.Contains(res.Message, "held by wg."+netID) {
			t.Errorf("port 51820/udp: message %q does not name alice's network", res.Message)
		}
		nft, err := harness.Command("nsenter", nil, append(l.nodes[0].enter(), "--", "nft", "list", "table", "ip", "prv-node")...)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(nft, taken) {
			t.Errorf("the refused container left rules:\n%s", nft)
		}
		// Overlapping members, a member outside the range: provctl refuses
		// before signing; the explorer holds nothing of them.
		for _, members := range [][]string{
			{ids[0] + "=10.251.1.0/24@" + nodeIP(1), ids[1] + "=10.251.1.128/25@" + nodeIP(2)},
			{ids[0] + "=10.251.1.0/24@" + nodeIP(1), ids[1] + "=10.99.0.0/24@" + nodeIP(2)},
		} {
			args := []string{"network", "create", "--name", "bad", "--ip-range", "10.251.0.0/16", "--access", "10.251.254.2/32"}
			for _, m := range members {
				args = append(args, "--member", m)
			}
			if out, err := bob.Run(t, args...); err == nil {
				t.Errorf("network create %v was accepted: %s", members, out)
			}
		}
		out, err := bob.Run(t, "ls", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var rs []provision.Reservation
		if err := json.Unmarshal([]byte(out), &rs); err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Type == provision.NetworkReservation && r.ID != bNet {
				t.Errorf("the explorer holds a refused network of bob: %s %s", r.ID, r.Data)
			}
		}
	})

	t.Run("bad-input-signed", func(t *testing.T) {
		// Reservations provctl would refuse, signed by their owner and sent
		// straight to the explorer (which relays data it does not read):
		// the node answers each with a signed error and keeps nothing.
		bob := l.newUser(t)
		client, key := l.directClient(t, bob)
		pub, _ := identity.PublicKey(ids[0])
		sealed, err := identity.Seal(pub, make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		good := provision.WireGuardPeer{PublicKey: base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))), Endpoint: nodeIP(2) + ":51820", AllowedIPs: []string{"10.252.2.0/24"}}
		for _, c := range []struct {
			name string
			edit func(w *provision.WireGuard)
			want string
		}{
			{"key-not-curve25519", func(w *provision.WireGuard) { w.Peers[0].PublicKey = "bm90IGEga2V5" }, "not a curve25519 key"},
			{"endpoint-not-ip-port", func(w *provision.WireGuard) { w.Peers[0].Endpoint = "node2.example" }, "is not IPv4:port"},
			{"allowed-covers-another-subnet", func(w *provision.WireGuard) { w.Peers[0].AllowedIPs = []string{"10.250.0.0/16"} }, "not inside ip_range"},
			{"port-out-of-range", func(w *provision.WireGuard) { w.ListenPort = 65536 }, "listen_port"},
			{"port-taken", func(w *provision.WireGuard) {}, "held by wg." + netID},
			{"port-below-range", func(w *provision.WireGuard) { w.ListenPort = 500 }, "publishable range"},
		} {
			w := &provision.WireGuard{PrivateKey: sealed, ListenPort: 51820, Peers: []provision.WireGuardPeer{good}}
			c.edit(w)
			data, err := json.Marshal(provision.Network{Name: c.name, IPRange: "10.252.0.0/16", Subnet: "10.252.1.0/24", WireGuard: w})
			if err != nil {
				t.Fatal(err)
			}
			r := &provision.Reservation{NodeID: ids[0], Type: provision.NetworkReservation, Data: data, Created: time.Now().UTC(), Duration: time.Hour}
			r.Sign(key)
			id, err := client.CreateReservation(t.Context(), r)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			res := bob.WaitResult(t, id, provision.StateError, within)
			if !strings.Contains(res.Message, c.want) {
				t.Errorf("%s: message %q does not say %q", c.name, res.Message, c.want)
			}
			nid := provision.NetworkID(identity.UserID(key.Public().(ed25519.PublicKey)), c.name)
			if _, err := os.Stat(l.nodes[0].netnsPath(network.Namespace(nid))); err == nil {
				t.Errorf("%s: the refused network's namespace is left on node 1", c.name)
			}
		}
		nft, err := harness.Command("nsenter", nil, append(l.nodes[0].enter(), "--", "nft", "list", "table", "ip", "prv-node")...)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(nft, "prv-wg."); n != 1 {
			t.Errorf("node 1 holds %d wireguard ports, want alice's only:\n%s", n, nft)
		}
	})

	t.Run("bad-update-signed", func(t *testing.T) {
		// Next versions of node 2's network with bad peers, signed by alice
		// and sent straight to the explorer (which relays data it does not
		// read): each gets a signed error naming the version that keeps
		// running, and the tunnels keep working; then a good version,
		// naming the last refused one as the explorer holds it, is applied.
		client, key := l.directClient(t, alice)
		id := netRes[1]
		good, err := client.GetReservation(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		running := good.Version
		next := func(edit func(w *provision.WireGuard)) *provision.Reservation {
			cur, err := client.GetReservation(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			var n provision.Network
			if err := json.Unmarshal(good.Data, &n); err != nil {
				t.Fatal(err)
			}
			edit(n.WireGuard)
			data, err := json.Marshal(n)
			if err != nil {
				t.Fatal(err)
			}
			r := &provision.Reservation{ID: id, NodeID: cur.NodeID, Type: cur.Type, Data: data, Created: cur.Created, Duration: cur.Duration,
				Reference: cur.Reference, Version: cur.Version + 1, Previous: cur.Digest()}
			r.Sign(key)
			if err := client.UpdateReservation(t.Context(), r); err != nil {
				t.Fatal(err)
			}
			return r
		}
		for _, c := range []struct {
			name string
			edit func(w *provision.WireGuard)
			want string
		}{
			{"key-not-curve25519", func(w *provision.WireGuard) { w.Peers[0].PublicKey = "bm90IGEga2V5" }, "not a curve25519 key"},
			{"endpoint-not-ip-port", func(w *provision.WireGuard) { w.Peers[0].Endpoint = "node1.example" }, "is not IPv4:port"},
			{"allowed-covers-another-subnet", func(w *provision.WireGuard) { w.Peers[0].AllowedIPs = append(w.Peers[0].AllowedIPs, "10.9.0.0/24") }, "not inside ip_range"},
		} {
			r := next(c.edit)
			res := alice.WaitResult(t, id, provision.StateError, within)
			if res.Version != r.Version || !strings.Contains(res.Message, c.want) || !strings.Contains(res.Message, fmt.Sprintf("version %d (deployed) keeps running", running)) {
				t.Errorf("%s: result v%d %q, want an error for v%d saying %q and that version %d keeps running", c.name, res.Version, res.Message, r.Version, c.want, running)
			}
			for _, from := range []int{0, 2} {
				mustReach(t, fmt.Sprintf("%s: c%d still reaches c2", c.name, from+1), ns[from], "10.250.2.10:80")
			}
		}
		r := next(func(*provision.WireGuard) {})
		if res := alice.WaitResult(t, id, provision.StateOk, within); res.Version != r.Version {
			t.Fatalf("the good version %d after the refused ones: result for version %d", r.Version, res.Version)
		}
		mustReach(t, "c3 reaches c2 at the good version", ns[2], "10.250.2.10:80")
	})

	t.Run("killed-device-restored", func(t *testing.T) {
		nd := l.nodes[1]
		nsPath := nd.netnsPath(network.Namespace(netID))
		pid := helperPID(t, nsPath)
		if pid == 0 {
			t.Fatalf("no wireguard helper in %s", nsPath)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		harness.Eventually(t, within, "the reconcile loop restores node 2's device", func() error {
			p := helperPID(t, nsPath)
			if p == pid || p == 0 {
				return fmt.Errorf("helper %d", p)
			}
			_, err := hello(ns[0], "10.250.2.10:80", 2*time.Second)
			return err
		})
	})
}
