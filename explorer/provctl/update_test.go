package provctl_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/provision"
)

// provctl update TYPE ID signs the next version with reserve's flags: the
// flags given change, the others keep the current version's values; the
// version shows in get and get --json.
func TestProvctlUpdate(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")

	net := strings.TrimSpace(c.must("reserve", "network", "--node", nodeID, "--name", "lan", "--ip-range", "10.9.0.0/16", "--subnet", "10.9.1.0/24"))
	vol := strings.TrimSpace(c.must("reserve", "volume", "--node", nodeID, "--size", "2", "--reference", "data"))
	ct := strings.TrimSpace(c.must("reserve", "container", "--node", nodeID, "--image", "/images/a.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sleep", "--entrypoint", "60", "--env", "A=1", "--mount", vol+":/data", "--network", "lan", "--ip", "10.9.1.5", "--cpu", "1", "--memory", "256"))
	_ = net

	v1 := xs.Reservation(t, vol)
	if out := c.must("update", "volume", vol, "--size", "5"); strings.TrimSpace(out) != vol {
		t.Fatalf("update printed %q, want the ID", out)
	}
	v2 := xs.Reservation(t, vol)
	var w provision.Volume
	if err := json.Unmarshal(v2.Data, &w); err != nil || w.Size != 5 || w.Type != provision.SSD {
		t.Fatalf("version 2 data %s, %v", v2.Data, err)
	}
	if v2.Version != v1.Version+1 || v2.Previous != v1.Digest() || !v2.Created.Equal(v1.Created) || v2.Duration != v1.Duration ||
		v2.Reference != "data" || v2.NodeID != nodeID || v2.Verify() != nil {
		t.Fatalf("version 2 %+v does not follow version 1 %+v", v2, v1)
	}
	if out := c.must("get", vol); !strings.Contains(out, "version:     1") || !strings.Contains(out, "previous:    "+v1.Digest()) {
		t.Fatalf("get does not show the version:\n%s", out)
	}
	var got struct {
		Version  uint32 `json:"version"`
		Previous string `json:"previous"`
	}
	if err := json.Unmarshal([]byte(c.must("get", "--json", vol)), &got); err != nil || got.Version != v2.Version || got.Previous != v1.Digest() {
		t.Fatalf("get --json: %+v, %v", got, err)
	}

	// A container: change the memory and the env; the rest stays, the
	// network found back by its name.
	c.must("update", "container", ct, "--memory", "512", "--env", "A=2", "--env", "B=3")
	r := xs.Reservation(t, ct)
	cw, err := r.Workload()
	if err != nil {
		t.Fatal(err)
	}
	spec := cw.(*provision.Container)
	if spec.Capacity.Memory != 512 || spec.Capacity.CPU != 1 || spec.Env["A"] != "2" || spec.Env["B"] != "3" || len(spec.Env) != 2 ||
		spec.Image != "/images/a.tar" || strings.Join(spec.Entrypoint, " ") != "/bin/sleep 60" || len(spec.Mounts) != 1 || spec.Mounts[0].VolumeID != vol ||
		spec.Network.IP != "10.9.1.5" || spec.Network.NetworkID != provision.NetworkID(r.UserID, "lan") || r.Version != 1 {
		t.Fatalf("container version 2: %s (version %d)", r.Data, r.Version)
	}
	if err := provision.CheckUpdate(&provision.Reservation{}, "", r); err == nil {
		t.Fatal("CheckUpdate accepted an update of nothing")
	}

	// A health check and a restart policy are kept through an update that
	// does not name them, and change when it does.
	hc := strings.TrimSpace(c.must("reserve", "container", "--node", nodeID, "--image", "/images/a.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sleep", "--memory", "256", "--network", "lan", "--ip", "10.9.1.6", "--health-cmd", `sh -c 'test -e "/it'"'"'s ready"'`, "--health-interval", "5s",
		"--restart", "on-failure"))
	before, _ := xs.Reservation(t, hc).Workload()
	c.must("update", "container", hc, "--memory", "512")
	hr := xs.Reservation(t, hc)
	after, err := hr.Workload()
	if err != nil {
		t.Fatal(err)
	}
	b, a := before.(*provision.Container), after.(*provision.Container)
	if a.Capacity.Memory != 512 || a.Restart != provision.RestartOnFailure || a.Health == nil ||
		strings.Join(a.Health.Exec, "|") != `sh|-c|test -e "/it's ready"` || a.Health.IntervalOrDefault() != b.Health.IntervalOrDefault() {
		t.Fatalf("container with a health check, version 2: %s", hr.Data)
	}
	c.must("update", "container", hc, "--restart", "never", "--health-tcp", "8080")
	third, err := xs.Reservation(t, hc).Workload()
	if err != nil {
		t.Fatal(err)
	}
	if w := third.(*provision.Container); w.Restart != provision.RestartNever || w.Health == nil || w.Health.TCPPort != 8080 || len(w.Health.Exec) != 0 || w.Capacity.Memory != 512 {
		t.Fatalf("container with a new health check and policy, version 3: %+v", w)
	}

	// Refusals: the wrong type, an unknown ID.
	if _, err := c.run("update", "network", vol, "--subnet", "10.9.2.0/24"); err == nil || !strings.Contains(err.Error(), "is a volume") {
		t.Fatalf("update of a volume as a network: %v", err)
	}
	if _, err := c.run("update", "volume", "nope", "--size", "3"); err == nil {
		t.Fatal("update of an unknown reservation succeeded")
	}
}
