package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestHealthAndRestarts runs containers with health checks and restart
// policies through provctl, the explorer and the daemon: "ok" comes once
// the check passed, a check that never passes is a signed error naming
// it, and the signed status provctl shows follows the container's exits
// and restarts.
func TestHealthAndRestarts(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	ex := harness.StartExplorer(t)
	node := harness.StartNode(t, ex.URL())
	user := harness.NewUser(t, ex.URL())
	nodeID := node.ID(t)
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "health", "--ip-range", "10.242.0.0/16", "--subnet", "10.242.1.0/24", "--duration", "1h")
	user.WaitResult(t, netID, provision.StateOk, within)
	t.Cleanup(func() { remove(t, user, netID) })
	// The node has two cores: at most two of these one-core containers
	// at once.
	container := func(ip, cmd string, flags ...string) string {
		t.Helper()
		id := user.Reserve(t, "container", append([]string{"--node", nodeID, "--image", image, "--image-digest", digest,
			"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", cmd, "--network", "health", "--ip", ip,
			"--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "1h"}, flags...)...)
		t.Cleanup(func() { remove(t, user, id) })
		return id
	}
	ready := container("10.242.1.10", "sleep 2; exec busybox httpd -f -p 8080 -h /tmp", "--health-tcp", "8080", "--health-interval", "1s")
	res := user.WaitResult(t, ready, provision.StateOk, within)
	var data struct{ State, Health string }
	if err := json.Unmarshal(res.Data, &data); err != nil || data.State != "running" || data.Health != "healthy" {
		t.Fatalf("result data of the ready container %s: %v", res.Data, err)
	}
	remove(t, user, ready)
	unready := container("10.242.1.11", "exec sleep 3600", "--health-tcp", "8080", "--health-start-period", "3s", "--health-interval", "1s")
	res = user.WaitResult(t, unready, provision.StateError, within)
	if !strings.Contains(res.Message, "health check tcp port 8080 did not pass within 3s") {
		t.Fatalf("error result of the container whose port never opens says %q", res.Message)
	}
	never := container("10.242.1.12", "sleep 1; exit 3", "--restart", "never")
	always := container("10.242.1.13", "sleep 15; exit 3")
	user.WaitResult(t, never, provision.StateOk, within)

	status := func(id, want string) {
		t.Helper()
		harness.Eventually(t, within, fmt.Sprintf("%s status %q", id, want), func() error {
			out, err := user.Run(t, "get", id)
			if err != nil {
				return err
			}
			if !strings.Contains(out, "verified (owner") {
				return harness.Permanent(fmt.Errorf("result does not verify:\n%s", out))
			}
			if !strings.Contains(out, want) {
				return fmt.Errorf("get says:\n%s", out)
			}
			return nil
		})
	}
	// Left stopped by its policy, still deployed, with its exit code.
	status(never, "exited, 0 restarts, last exit: exited (code 3)")
	// Restarted after its exit, its restart counted.
	status(always, "running, 1 restarts, last exit: exited (code 3)")
	ls, err := node.CLI(t, "cache", "ls", "--json", "--state", "deployed")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{never, always} {
		if !strings.Contains(ls, id) {
			t.Errorf("%s is not deployed: %s", id, ls)
		}
	}
}

// remove deletes reservation id, unless it failed or is deleted already,
// and waits until the node deleted it.
func remove(t testing.TB, user *harness.User, id string) {
	t.Helper()
	r, _ := user.Get(t, id)
	if r.Result != nil && (r.Result.State == provision.StateError || r.Result.State == provision.StateDeleted) {
		return
	}
	if _, err := user.Run(t, "delete", id); err != nil {
		t.Errorf("deleting %s: %v", id, err)
		return
	}
	user.WaitResult(t, id, provision.StateDeleted, within)
}
