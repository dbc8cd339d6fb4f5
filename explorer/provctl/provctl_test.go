package provctl_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/provctl"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// cli runs provctl in-process against an explorer with a key file.
type cli struct {
	t        testing.TB
	explorer string
	key      string
}

func (c cli) run(args ...string) (string, error) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	argv := append([]string{"provctl", "--explorer", c.explorer, "--key", c.key}, args...)
	err := provctl.Run(c.t.Context(), argv, &out, &errOut)
	return out.String(), err
}

func (c cli) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("provctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// answer has the node sign and deliver a result for reservation id.
func answer(t testing.TB, xs *explorertest.Server, node ed25519.PrivateKey, id string, state provision.ResultState) {
	t.Helper()
	r := xs.Reservation(t, id)
	res := &provision.Result{Type: r.Type, ID: id, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: state}
	if err := res.Sign(provision.KeySigner(node)); err != nil {
		t.Fatal(err)
	}
	if err := xs.NodeClient(node).Feedback(t.Context(), r.NodeID, res); err != nil {
		t.Fatal(err)
	}
}

func TestProvctlAgainstExplorer(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "provctl", "key")}

	if _, err := c.run("ls"); err == nil || !strings.Contains(err.Error(), "provctl key new") {
		t.Fatalf("ls without a key: %v, want a hint to create one", err)
	}
	user := strings.TrimSpace(c.must("key", "new"))
	key, err := identity.Load(c.key)
	if err != nil || identity.UserID(key.Public().(ed25519.PublicKey)) != user {
		t.Fatalf("key new printed %q; the file holds %v", user, err)
	}
	if _, err := c.run("key", "new"); err == nil {
		t.Fatal("key new overwrote an existing key")
	}
	if got := strings.TrimSpace(c.must("key", "show")); got != user {
		t.Fatalf("key show = %q, want %q", got, user)
	}

	vol := strings.TrimSpace(c.must("reserve", "volume", "--node", nodeID, "--size", "2", "--type", "hdd", "--duration", "2h"))
	if err := provision.ValidName("id", vol); err != nil {
		t.Fatalf("reserve printed %q: %v", vol, err)
	}
	netOut := strings.TrimSpace(c.must("reserve", "network", "--node", nodeID, "--name", "lan", "--ip-range", "10.1.0.0/16", "--subnet", "10.1.2.0/24"))
	ctr := strings.TrimSpace(c.must("reserve", "container", "--node", nodeID, "--image", "/images/rootfs.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", "sleep 1", "--env", "A=1", "--mount", vol+":/data",
		"--network", "lan", "--ip", "10.1.2.10", "--cpu", "1", "--memory", "64", "--disk", "256"))

	var listed []*provision.Reservation
	if err := json.Unmarshal([]byte(c.must("ls", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 {
		t.Fatalf("ls --json listed %d reservations, want 3", len(listed))
	}
	byID := map[string]*provision.Reservation{}
	for _, r := range listed {
		byID[r.ID] = r
		if err := provision.Validate(r, nodeID, time.Now()); err != nil {
			t.Fatalf("reservation %s would be refused by the node: %v", r.ID, err)
		}
	}
	var ct provision.Container
	if err := provision.DecodeData(byID[ctr].Data, &ct); err != nil {
		t.Fatal(err)
	}
	if ct.Network.NetworkID != provision.NetworkID(user, "lan") || ct.Env["A"] != "1" || ct.Mounts[0].VolumeID != vol || len(ct.Entrypoint) != 3 {
		t.Fatalf("container data %+v does not hold the flags", ct)
	}
	if byID[netOut] == nil || byID[vol].Duration != 2*time.Hour {
		t.Fatalf("ls --json: %+v", listed)
	}
	if table := c.must("ls"); !strings.Contains(table, "STATE") || !strings.Contains(table, vol) || !strings.Contains(table, "pending") {
		t.Fatalf("ls table:\n%s", table)
	}

	if out := c.must("get", vol); !strings.Contains(out, "result:    none yet") && !strings.Contains(out, "none yet") {
		t.Fatalf("get before a result:\n%s", out)
	}
	answer(t, xs, node, vol, provision.StateOk)
	if out := c.must("get", vol); !strings.Contains(out, "signature:") || !strings.Contains(out, "verified (node "+nodeID) {
		t.Fatalf("get after the result:\n%s", out)
	}
	if out := c.must("watch", vol, "--until", "ok", "--timeout", "10s", "--interval", "10ms"); !strings.Contains(out, "ok (signature verified)") {
		t.Fatalf("watch: %s", out)
	}
	if _, err := c.run("watch", vol, "--until", "error", "--timeout", "10s", "--interval", "10ms"); !errors.Is(err, provctl.ErrWatch) {
		t.Fatalf("watch --until error on an ok result: %v", err)
	}

	if out := c.must("delete", vol); !strings.Contains(out, "delete signed") {
		t.Fatalf("delete: %s", out)
	}
	answer(t, xs, node, vol, provision.StateDeleted)
	c.must("watch", vol, "--until", "deleted", "--timeout", "10s", "--interval", "10ms")
	if !xs.Reservation(t, vol).ToDelete {
		t.Fatal("the explorer does not hold the delete")
	}

	// Another user cannot delete it.
	other := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	other.must("key", "new")
	if _, err := other.run("delete", ctr); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("delete by another user: %v, want a 403", err)
	}
}

func TestProvctlRefusesBadInput(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad-node", []string{"reserve", "volume", "--node", "nope", "--size", "1"}, "--node"},
		{"bad-disk-type", []string{"reserve", "volume", "--node", nodeID, "--size", "1", "--type", "tape"}, "type"},
		{"zero-size", []string{"reserve", "volume", "--node", nodeID, "--size", "0"}, "size"},
		{"bad-env", []string{"reserve", "container", "--node", nodeID, "--image", "/x.tar", "--image-digest", strings.Repeat("0", 64), "--env", "NOEQUALS", "--network", "n", "--ip", "10.0.0.2"}, "K=V"},
		{"bad-mount", []string{"reserve", "container", "--node", nodeID, "--image", "/x.tar", "--image-digest", strings.Repeat("0", 64), "--mount", "nocolon", "--network", "n", "--ip", "10.0.0.2"}, "VOLID:/path"},
		{"get-without-id", []string{"get"}, "exactly one"},
		{"get-unknown", []string{"get", "missing"}, "404"},
		{"watch-bad-state", []string{"watch", "x", "--until", "done"}, "--until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.run(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

// A compromised explorer can relay a result it forged; get must say so.
func TestGetDetectsForgedResult(t *testing.T) {
	user, node, forger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Sign(user)
	r.ID = "abc"
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(forger)); err != nil {
		t.Fatal(err)
	}
	r.Result = res
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(r)
	}))
	defer fake.Close()
	c := cli{t: t, explorer: fake.URL, key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	out, err := c.run("get", "abc")
	if !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("get of a forged result: %v\n%s", err, out)
	}
}
