package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestOwnerLogs runs a real container that prints numbered lines and a
// marker it computes (so the marker is in no reservation), then asks for
// its tail with `provctl logs` through the explorer: the owner gets the
// last bytes; another user, a network's ID and a stopped node get clear
// errors; and the explorer's database, read after it stopped, holds no
// byte of the plaintext.
func TestOwnerLogs(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	ex := harness.StartExplorer(t)
	node := harness.StartNode(t, ex.URL())
	user := harness.NewUser(t, ex.URL())
	nodeID := node.ID(t)
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "logs", "--ip-range", "10.243.0.0/16", "--subnet", "10.243.1.0/24", "--duration", "1h")
	ctrID := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/sh", "--entrypoint", "-c",
		"--entrypoint", `i=0; while [ $i -lt 300 ]; do echo "line $i of the output"; i=$((i+1)); done; echo "marker-$((4000+321))-end"; exec sleep 3600`,
		"--network", "logs", "--ip", "10.243.1.10", "--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h")
	user.WaitResult(t, netID, provision.StateOk, within)
	user.WaitResult(t, ctrID, provision.StateOk, within)

	const marker = "marker-4321-end\n"
	var out string
	harness.Eventually(t, within, "provctl logs with the container's last line", func() error {
		start := time.Now()
		o, err := user.Run(t, "logs", ctrID, "--tail", "100")
		if err != nil {
			return err
		}
		if !strings.HasSuffix(o, marker) {
			return fmt.Errorf("tail %q does not end with the marker yet", o)
		}
		t.Logf("provctl logs answered in %s", time.Since(start).Round(time.Millisecond))
		out = o
		return nil
	})
	if len(out) != 100 || !strings.Contains(out, "line 299 of the output\n") {
		t.Fatalf("tail of %d bytes %q, want the last 100 bytes", len(out), out)
	}
	full, err := user.Run(t, "logs", ctrID, "--tail", "65536")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(full, "line 0 of the output\n") || !strings.HasSuffix(full, marker) {
		t.Fatalf("the whole output (%d bytes) does not run from line 0 to the marker", len(full))
	}

	stranger := harness.NewUser(t, ex.URL())
	if _, err := stranger.Run(t, "logs", ctrID); err == nil || !strings.Contains(err.Error(), "only its owner may read its logs") {
		t.Fatalf("another user's provctl logs: %v", err)
	}
	if _, err := user.Run(t, "logs", netID); err == nil || !strings.Contains(err.Error(), "not a container") {
		t.Fatalf("provctl logs of a network: %v", err)
	}
	if _, err := user.Run(t, "logs", "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "404") && !strings.Contains(err.Error(), "not found") {
		t.Fatalf("provctl logs of an unknown ID: %v", err)
	}
	if _, err := user.Run(t, "logs", ctrID, "--tail", "70000"); err == nil || !strings.Contains(err.Error(), "--tail") {
		t.Fatalf("provctl logs past the tail limit: %v", err)
	}

	node.Stop(t)
	if _, err := user.Run(t, "logs", ctrID, "--timeout", "3s"); err == nil || !strings.Contains(err.Error(), "did not answer within 3s") {
		t.Fatalf("provctl logs of a stopped node: %v", err)
	}
	node.Start(t)

	ex.Stop(t)
	db, err := os.ReadFile(filepath.Join(ex.Dir, "data", "explorer.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"marker-4321", "line 299 of the output", "line 0 of the output"} {
		if bytes.Contains(db, []byte(leak)) {
			t.Fatalf("the explorer's database holds the plaintext %q", leak)
		}
	}
	if !bytes.Contains(db, []byte(`"sealed"`)) {
		t.Fatal("the explorer's database holds no sealed answer: the check above proves nothing")
	}
	ex.Start(t)
	if _, err := user.Run(t, "delete", ctrID); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, ctrID, provision.StateDeleted, within)
}

// TestHeartbeatsRebootAndDown runs a node with --heartbeat 1s: the
// explorer shows its boot and full availability; the node restarted with
// another boot id (what a reboot changes) shows as one reboot; stopped, it
// is marked down after three intervals (seconds, where the last-seen rule
// takes 3 minutes).
func TestHeartbeatsRebootAndDown(t *testing.T) {
	testutil.RequiresRoot(t)
	bootFile := filepath.Join(t.TempDir(), "boot_id")
	if err := os.WriteFile(bootFile, []byte("boot-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ex := harness.StartExplorer(t)
	node := harness.StartNodeWith(t, ex.URL(), harness.NodeOptions{Args: []string{"--heartbeat", "1s", "--boot-id-file", bootFile}})
	user := harness.NewUser(t, ex.URL())
	nodeID := node.ID(t)
	summary := func() (*explorer.NodeSummary, error) {
		out, err := user.Run(t, "nodes", "-o", "json")
		if err != nil {
			return nil, err
		}
		var reply explorer.NodesReply
		if err := json.Unmarshal([]byte(out), &reply); err != nil {
			return nil, harness.Permanent(err)
		}
		for _, n := range reply.Nodes {
			if n.NodeID == nodeID {
				return &n, nil
			}
		}
		return nil, errors.New("node not listed")
	}
	harness.Eventually(t, within, "heartbeats of boot-one", func() error {
		s, err := summary()
		if err != nil {
			return err
		}
		if a := s.Availability; a == nil || a.BootID != "boot-one" || s.Status != explorer.NodeUp || a.Percent30d < 99 {
			return fmt.Errorf("%s %+v", s.Status, s.Availability)
		}
		return nil
	})

	node.Stop(t)
	if err := os.WriteFile(bootFile, []byte("boot-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	node.Start(t)
	harness.Eventually(t, within, "a reboot to boot-two", func() error {
		s, err := summary()
		if err != nil {
			return err
		}
		if a := s.Availability; a == nil || a.BootID != "boot-two" || a.Reboots30d != 1 || a.LastReboot == nil {
			return fmt.Errorf("%s %+v", s.Status, s.Availability)
		}
		return nil
	})
	table, err := user.Run(t, "nodes")
	if err != nil || !strings.Contains(table, "(1 reboots)") {
		t.Fatalf("provctl nodes does not show the reboot: %v\n%s", err, table)
	}

	node.Stop(t)
	stopped := time.Now()
	harness.Eventually(t, within, "the stopped node marked down", func() error {
		s, err := summary()
		if err != nil {
			return err
		}
		if s.Status != explorer.NodeDown || s.Availability.DownSince == nil {
			return fmt.Errorf("%s %+v", s.Status, s.Availability)
		}
		if s.Availability.Percent30d >= 100 {
			return harness.Permanent(fmt.Errorf("a node down for seconds has %.2f %% availability", s.Availability.Percent30d))
		}
		return nil
	})
	if took := time.Since(stopped); took > time.Minute {
		t.Fatalf("marked down %s after it stopped: the heartbeat rule (3 × 1 s) did not apply", took)
	}
	t.Logf("marked down %s after the node stopped", time.Since(stopped).Round(100*time.Millisecond))
}
