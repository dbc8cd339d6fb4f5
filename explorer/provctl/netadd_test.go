package provctl_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// netFile is what the test reads of a network's local file.
type netFile struct {
	Members []struct {
		Node        string `json:"node"`
		Subnet      string `json:"subnet"`
		PublicKey   string `json:"public_key"`
		Reservation string `json:"reservation"`
	} `json:"members"`
	AccessKey string `json:"access_private_key"`
}

func readNetFile(t testing.TB, path string) netFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var n netFile
	if err := json.Unmarshal(b, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

func wireGuardOf(t testing.TB, r *provision.Reservation) *provision.WireGuard {
	t.Helper()
	w, err := r.Workload()
	if err != nil {
		t.Fatal(err)
	}
	n := w.(*provision.Network)
	if n.WireGuard == nil {
		t.Fatalf("reservation %s has no WireGuard", r.ID)
	}
	return n.WireGuard
}

// failingProxy passes requests to target, except PUTs of a reservation
// whose ID is in refuse, answered 400 (a final error).
func failingProxy(t testing.TB, target string, refuse *atomic.Value) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if id, _ := refuse.Load().(string); id != "" && r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/"+id) {
			http.Error(w, `{"error":"refused by the test"}`, http.StatusBadRequest)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// provctl network add reserves the network on the new node and signs the
// next version of each member whose peers change; a run that fails
// halfway leaves the network file alone and a rerun finishes the change
// without creating anything twice.
func TestNetworkAdd(t *testing.T) {
	xs := explorertest.New(t)
	a, b, cNode := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	xs.RegisterNode(t, a)
	xs.RegisterNode(t, b)
	xs.RegisterNode(t, cNode)
	ida, idb, idc := explorertest.NodeID(a), explorertest.NodeID(b), explorertest.NodeID(cNode)
	var refuse atomic.Value
	c := cli{t: t, explorer: failingProxy(t, xs.URL(), &refuse), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	out := c.must("network", "create", "--name", "mesh", "--ip-range", "10.250.0.0/16", "--access", "10.250.254.2/32",
		"--member", ida+"=10.250.1.0/24@10.99.0.11", "--member", idb+"=10.250.2.0/24@10.99.0.12")
	ids := strings.Fields(out)
	if len(ids) != 2 {
		t.Fatalf("create printed %q", out)
	}
	file, pending := c.key+".net-mesh.json", c.key+".net-mesh.pending.json"
	before, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	// Bad input: nothing signed, nothing written.
	for _, bad := range []struct{ name, member, want string }{
		{"already-a-member", idb + "=10.250.3.0/24", "member of network"},
		{"outside-the-range", idc + "=10.251.3.0/24", "not inside"},
		{"overlaps-a-member", idc + "=10.250.1.128/25", "overlaps 10.250.1.0/24"},
		{"holds-the-access-address", idc + "=10.250.254.0/24", "access address"},
		{"bad-node", "nope=10.250.3.0/24", "nope"},
		{"bad-public-address", idc + "=10.250.3.0/24@example.com", "not IPv4"},
	} {
		if _, err := c.run("network", "add", "--name", "mesh", "--member", bad.member); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error saying %q", bad.name, err, bad.want)
		}
	}
	if _, err := os.Stat(pending); err == nil {
		t.Fatal("a refused add left a pending change")
	}
	if _, err := c.run("network", "add", "--name", "nope", "--member", idc+"=10.250.3.0/24"); err == nil || !strings.Contains(err.Error(), "network file") {
		t.Errorf("add to an unknown network: %v", err)
	}

	// B's update fails: C is created, A updated, the file unchanged.
	refuse.Store(ids[1])
	if _, err := c.run("network", "add", "--name", "mesh", "--member", idc+"=10.250.3.0/24"); err == nil || !strings.Contains(err.Error(), "run the same command again") {
		t.Fatalf("add with B refused: %v", err)
	}
	if after, _ := os.ReadFile(file); string(after) != string(before) {
		t.Fatal("a failed add changed the network file")
	}
	if r := xs.Reservation(t, ids[0]); r.Version != 1 {
		t.Fatalf("A is at version %d, want 1", r.Version)
	}
	if r := xs.Reservation(t, ids[1]); r.Version != 0 {
		t.Fatalf("B is at version %d, want 0", r.Version)
	}
	// A different add is refused while this one is unfinished.
	if _, err := c.run("network", "add", "--name", "mesh", "--member", idc+"=10.250.4.0/24"); err == nil || !strings.Contains(err.Error(), "unfinished") {
		t.Fatalf("another add over an unfinished one: %v", err)
	}
	// As if the run had died before recording C's reservation: the rerun
	// must find it at the explorer.
	var ch map[string]json.RawMessage
	raw, err := os.ReadFile(pending)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &ch); err != nil {
		t.Fatal(err)
	}
	var pn map[string]any
	if err := json.Unmarshal(ch["network"], &pn); err != nil {
		t.Fatal(err)
	}
	members := pn["members"].([]any)
	cRes := members[2].(map[string]any)["reservation"].(string)
	delete(members[2].(map[string]any), "reservation")
	ch["network"], _ = json.Marshal(pn)
	raw, _ = json.Marshal(ch)
	if err := os.WriteFile(pending, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	refuse.Store("")
	out = c.must("network", "add", "--name", "mesh", "--member", idc+"=10.250.3.0/24")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantLines := []string{cRes + " unchanged v0 " + idc, ids[0] + " unchanged v1 " + ida, ids[1] + " updated v1 " + idb}
	if !slices.Equal(lines, wantLines) {
		t.Fatalf("rerun printed\n%s\nwant\n%s", out, strings.Join(wantLines, "\n"))
	}
	if _, err := os.Stat(pending); err == nil {
		t.Fatal("the pending change is left after the add")
	}
	var list []provision.Reservation
	if err := json.Unmarshal([]byte(c.must("ls", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("the user holds %d reservations, want 3", len(list))
	}

	// The network file: three members; the peers at the explorer follow
	// it. C has no public address: the hub A learns it, B reaches it
	// through A, C knows only A.
	n := readNetFile(t, file)
	if len(n.Members) != 3 || n.Members[2].Node != idc || n.Members[2].Reservation != cRes {
		t.Fatalf("network file members %+v", n.Members)
	}
	key := func(i int) string { return n.Members[i].PublicKey }
	ak, err := wgtypes.ParseKey(n.AccessKey)
	if err != nil {
		t.Fatal(err)
	}
	access := ak.PublicKey().String()
	ra, rb, rc := xs.Reservation(t, ids[0]), xs.Reservation(t, ids[1]), xs.Reservation(t, cRes)
	wa, wb, wc := wireGuardOf(t, ra), wireGuardOf(t, rb), wireGuardOf(t, rc)
	wantA := []provision.WireGuardPeer{
		{PublicKey: key(1), Endpoint: "10.99.0.12:51820", AllowedIPs: []string{"10.250.2.0/24"}},
		{PublicKey: key(2), AllowedIPs: []string{"10.250.3.0/24"}},
		{PublicKey: access, AllowedIPs: []string{"10.250.254.2/32"}},
	}
	wantB := []provision.WireGuardPeer{{PublicKey: key(0), Endpoint: "10.99.0.11:51820", AllowedIPs: []string{"10.250.1.0/24", "10.250.254.2/32", "10.250.3.0/24"}}}
	wantC := []provision.WireGuardPeer{{PublicKey: key(0), Endpoint: "10.99.0.11:51820", AllowedIPs: []string{"10.250.1.0/24", "10.250.254.2/32", "10.250.2.0/24"}}}
	for _, got := range []struct {
		name      string
		got, want []provision.WireGuardPeer
	}{{"A", wa.Peers, wantA}, {"B", wb.Peers, wantB}, {"C", wc.Peers, wantC}} {
		if gj, wj := mustJSON(t, got.got), mustJSON(t, got.want); gj != wj {
			t.Errorf("peers of %s:\n%s\nwant\n%s", got.name, gj, wj)
		}
	}
	// An update keeps what it does not change and follows its version.
	r0 := xs.Reservation(t, ids[0])
	if r0.Previous == "" || r0.Duration == 0 || r0.Verify() != nil || wa.ListenPort != 51820 {
		t.Fatalf("A's version 1: %+v", r0)
	}
	// C's key is sealed to C and is the key whose public half the file holds.
	sealed, err := identity.Open(cNode, wc.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := wgtypes.NewKey(sealed)
	if err != nil || ck.PublicKey().String() != key(2) {
		t.Fatalf("C's sealed key: %v", err)
	}
	// The same add again: the node is a member.
	if _, err := c.run("network", "add", "--name", "mesh", "--member", idc+"=10.250.3.0/24"); err == nil || !strings.Contains(err.Error(), "member of network") {
		t.Fatalf("add of a member: %v", err)
	}
	// provctl update network cannot carry WireGuard: it says where to go.
	if _, err := c.run("update", "network", ids[0], "--reference", "x"); err == nil || !strings.Contains(err.Error(), "network add") {
		t.Fatalf("update of a WireGuard network: %v", err)
	}
	if r := xs.Reservation(t, ids[0]); r.Version != 1 {
		t.Fatalf("A is at version %d after a refused update, want 1", r.Version)
	}

	// network remove: not the hub, not a stranger; a failed run is
	// finished by the same command.
	if _, err := c.run("network", "remove", "--name", "mesh", "--node", ida); err == nil || !strings.Contains(err.Error(), "hub") {
		t.Fatalf("remove of the hub: %v", err)
	}
	if _, err := c.run("network", "remove", "--name", "mesh", "--node", explorertest.NodeID(explorertest.NewKey(t))); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("remove of a stranger: %v", err)
	}
	refuse.Store(ids[1])
	if _, err := c.run("network", "remove", "--name", "mesh", "--node", idc); err == nil || !strings.Contains(err.Error(), "run the same command again") {
		t.Fatalf("remove with B refused: %v", err)
	}
	if _, err := c.run("network", "add", "--name", "mesh", "--member", idc+"=10.250.4.0/24"); err == nil || !strings.Contains(err.Error(), "network remove") {
		t.Fatalf("add over an unfinished remove: %v", err)
	}
	if len(readNetFile(t, file).Members) != 3 || xs.Reservation(t, cRes).ToDelete {
		t.Fatal("a failed remove changed the network file or deleted the member")
	}
	refuse.Store("")
	out = c.must("network", "remove", "--name", "mesh", "--node", idc)
	wantLines = []string{ids[0] + " unchanged v2 " + ida, ids[1] + " updated v2 " + idb, cRes + " deleted v0 " + idc}
	if lines := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(lines, wantLines) {
		t.Fatalf("remove printed\n%s\nwant\n%s", out, strings.Join(wantLines, "\n"))
	}
	if !xs.Reservation(t, cRes).ToDelete || len(readNetFile(t, file).Members) != 2 {
		t.Fatal("after the remove: C's reservation is not deleted or the file still lists it")
	}
	wantA = append(wantA[:1], wantA[2])
	wantB = []provision.WireGuardPeer{{PublicKey: key(0), Endpoint: "10.99.0.11:51820", AllowedIPs: []string{"10.250.1.0/24", "10.250.254.2/32"}}}
	if gj, wj := mustJSON(t, wireGuardOf(t, xs.Reservation(t, ids[0])).Peers), mustJSON(t, wantA); gj != wj {
		t.Errorf("A's peers after the remove:\n%s\nwant\n%s", gj, wj)
	}
	if gj, wj := mustJSON(t, wireGuardOf(t, xs.Reservation(t, ids[1])).Peers), mustJSON(t, wantB); gj != wj {
		t.Errorf("B's peers after the remove:\n%s\nwant\n%s", gj, wj)
	}

	// A member with a public address: the members with one (A, B) reach
	// it directly, at its endpoint.
	d := explorertest.NewKey(t)
	xs.RegisterNode(t, d)
	idd := explorertest.NodeID(d)
	out = c.must("network", "add", "--name", "mesh", "--member", idd+"=10.250.4.0/24@10.99.0.14", "--port", "51821")
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasSuffix(lines[0], " created v0 "+idd) || lines[1] != ids[0]+" updated v3 "+ida || lines[2] != ids[1]+" updated v3 "+idb {
		t.Fatalf("add of a public member printed\n%s", out)
	}
	n = readNetFile(t, file)
	dPeer := provision.WireGuardPeer{PublicKey: n.Members[2].PublicKey, Endpoint: "10.99.0.14:51821", AllowedIPs: []string{"10.250.4.0/24"}}
	wantA = []provision.WireGuardPeer{wantA[0], dPeer, wantA[1]}
	wantB = []provision.WireGuardPeer{dPeer, wantB[0]}
	rd := xs.Reservation(t, strings.Fields(lines[0])[0])
	wantD := []provision.WireGuardPeer{
		{PublicKey: key(1), Endpoint: "10.99.0.12:51820", AllowedIPs: []string{"10.250.2.0/24"}},
		{PublicKey: key(0), Endpoint: "10.99.0.11:51820", AllowedIPs: []string{"10.250.1.0/24", "10.250.254.2/32"}},
	}
	for _, got := range []struct {
		name string
		r    *provision.Reservation
		want []provision.WireGuardPeer
	}{{"A", xs.Reservation(t, ids[0]), wantA}, {"B", xs.Reservation(t, ids[1]), wantB}, {"D", rd, wantD}} {
		if gj, wj := mustJSON(t, wireGuardOf(t, got.r).Peers), mustJSON(t, got.want); gj != wj {
			t.Errorf("peers of %s after adding a public member:\n%s\nwant\n%s", got.name, gj, wj)
		}
	}
	if wireGuardOf(t, rd).ListenPort != 51821 {
		t.Errorf("D listens on %d, want 51821", wireGuardOf(t, rd).ListenPort)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
