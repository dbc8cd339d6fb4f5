// Package e2e runs explorerd, provisiond and provctl as built binaries,
// with real primitives, through the scenario of `make demo`.
package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

func TestMain(m *testing.M) { harness.Main(m) }

const within = 2 * time.Minute

// TestReserveDeleteAcrossExplorerRestart reserves a network, a volume and
// a container, restarts explorerd in the middle, checks the signed results
// through provctl, the container's write into its volume, the node's CLI
// and /metrics, then deletes everything and checks nothing is left.
func TestReserveDeleteAcrossExplorerRestart(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	s := harness.Start(t, harness.SetupOptions{})
	ex, node, user, nodeID := s.Explorer, s.Node, s.User, s.NodeID

	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "e2e", "--ip-range", "10.241.0.0/16", "--subnet", "10.241.3.0/24", "--duration", "1h")
	volID := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", "1h")

	// The explorer goes away while the node works on them: the results
	// wait in the node's outbox, the reservations in the explorer's store.
	ex.Stop(t)
	ex.Start(t)

	ctrID := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", "echo e2e > /data/hello; exec sleep 3600",
		"--mount", volID+":/data", "--network", "e2e", "--ip", "10.241.3.10",
		"--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h")

	user.WaitResult(t, netID, provision.StateOk, within)
	vol := user.WaitResult(t, volID, provision.StateOk, within)
	ctr := user.WaitResult(t, ctrID, provision.StateOk, within)

	var volData struct{ Path string }
	if err := json.Unmarshal(vol.Data, &volData); err != nil || volData.Path == "" {
		t.Fatalf("volume result data %s: %v", vol.Data, err)
	}
	var ctrData struct{ IP string }
	if err := json.Unmarshal(ctr.Data, &ctrData); err != nil || ctrData.IP != "10.241.3.10" {
		t.Fatalf("container result data %s: %v", ctr.Data, err)
	}
	harness.Eventually(t, within, "the container's write into its volume", func() error {
		b, err := os.ReadFile(filepath.Join(volData.Path, "hello"))
		if err == nil && strings.TrimSpace(string(b)) != "e2e" {
			return harness.Permanent(err)
		}
		return err
	})

	ls, err := node.CLI(t, "cache", "ls", "--json", "--state", "deployed")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct{ ID string }
	if err := json.Unmarshal([]byte(ls), &rows); err != nil || len(rows) != 3 {
		t.Fatalf("cache ls: %v: %s", err, ls)
	}
	scrapeHas(t, node.Metrics, []string{
		`provisiond_reservations{state="deployed",type="container"} 1`,
		`provisiond_reservations{state="deployed",type="volume"} 1`,
		`provisiond_reservations{state="deployed",type="network"} 1`,
		`provisiond_used_units{unit="cru"} 1`,
		`provisiond_used_units{unit="mru"} 0.0625`,
		`provisiond_used_units{unit="sru"} 1.125`,
		`provisiond_outbox_depth 0`,
		`provisiond_transitions_total{state="deployed",type="container"} 1`,
	})

	for _, id := range []string{ctrID, volID, netID} {
		if _, err := user.Run(t, "delete", id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{ctrID, volID, netID} {
		user.WaitResult(t, id, provision.StateDeleted, within)
	}
	scrapeHas(t, node.Metrics, []string{`provisiond_used_units{unit="cru"} 0`, `provisiond_used_units{unit="sru"} 0`})
	if _, err := os.Stat(volData.Path); !os.IsNotExist(err) {
		t.Errorf("volume mount %s still exists: %v", volData.Path, err)
	}
	out, err := exec.Command("runc", "--root", filepath.Join(node.Dir, "data", "runc"), "list", "-q").Output()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runc containers left: %q %v", out, err)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), node.Dir) {
		t.Errorf("mounts under the node's data dir are left:\n%s", mounts)
	}
}

// TestDependencyTimeout gives `provisiond run --dependency-timeout 3s` a
// container whose network never comes: a signed error result names the
// missing network and the wait, and nothing was provisioned.
func TestDependencyTimeout(t *testing.T) {
	s := harness.Start(t, harness.SetupOptions{Node: harness.NodeOptions{Args: []string{"--dependency-timeout", "3s"}}})
	user := s.User
	id := user.Reserve(t, "container", "--node", s.NodeID, "--image", "/srv/none.tar", "--image-digest", strings.Repeat("a", 64),
		"--entrypoint", "/bin/true", "--network", "never", "--ip", "10.242.0.10",
		"--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h")
	start := time.Now()
	res := user.WaitResult(t, id, provision.StateError, within)
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("failed after %s, before the 3 s dependency timeout", waited)
	}
	if !strings.Contains(res.Message, "not deployed within 3s") || !strings.Contains(res.Message, "network") {
		t.Errorf("message %q does not name the missing network and the timeout", res.Message)
	}
}

// scrapeHas polls /metrics until every line in want is present.
func scrapeHas(t *testing.T, addr string, want []string) {
	t.Helper()
	harness.Eventually(t, within, "metrics "+strings.Join(want, ", "), func() error {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		for _, w := range want {
			if !strings.Contains(string(b), w+"\n") {
				return &missing{w}
			}
		}
		return nil
	})
}

type missing struct{ line string }

func (m *missing) Error() string { return "scrape lacks " + m.line }
