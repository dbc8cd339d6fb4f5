package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestUserQuota runs a real node with `--user-quota workloads=2`: each
// user has a network (a workload too: provctl's containers join one) and a
// container; a user's second container gets a signed error result that
// names the quota, the user and the count, which `provctl get` shows;
// another user is not affected; `provisiond stats` shows who uses what;
// once the first container is deleted, the user can reserve again; a
// quota raised in --user-quota-file applies after SIGHUP, and a quota file
// with an error is refused and changes nothing.
func TestUserQuota(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	ex := harness.StartExplorer(t)
	quotaFile := filepath.Join(t.TempDir(), "quotas")
	if err := os.WriteFile(quotaFile, []byte("# per-user overrides\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	node := harness.StartNodeWith(t, ex.URL(), harness.NodeOptions{Args: []string{"--user-quota", "workloads=2", "--user-quota-file", quotaFile}})
	nodeID := node.ID(t)
	alice, bob := harness.NewUser(t, ex.URL()), harness.NewUser(t, ex.URL())
	userID := func(u *harness.User) string {
		out, err := u.Run(t, "key", "show")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	aliceID, bobID := userID(alice), userID(bob)
	nets := map[*harness.User]string{}
	for i, u := range []*harness.User{alice, bob} {
		nets[u] = u.Reserve(t, "network", "--node", nodeID, "--name", "quota", "--ip-range", fmt.Sprintf("10.%d.0.0/16", 244+i),
			"--subnet", fmt.Sprintf("10.%d.1.0/24", 244+i), "--duration", "1h")
		u.WaitResult(t, nets[u], provision.StateOk, within)
	}
	ips := map[*harness.User]int{}
	container := func(u *harness.User) string {
		ips[u]++
		subnet := "10.244.1."
		if u == bob {
			subnet = "10.245.1."
		}
		return u.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
			"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", "exec sleep 3600",
			"--network", "quota", "--ip", fmt.Sprintf("%s%d", subnet, 10+ips[u]),
			"--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h")
	}

	first := container(alice)
	alice.WaitResult(t, first, provision.StateOk, within)
	second := container(alice)
	res := alice.WaitResult(t, second, provision.StateError, within) // verified: signed by the node
	want := "quota: user " + aliceID + " would run 3 of 2 workloads on this node"
	if !strings.Contains(res.Message, want) {
		t.Fatalf("the second container's result %q does not say %q", res.Message, want)
	}
	shown, err := alice.Run(t, "get", second)
	if err != nil || !strings.Contains(shown, "would run 3 of 2 workloads on this node") || !strings.Contains(shown, "error") {
		t.Fatalf("provctl get %s: %v:\n%s", second, err, shown)
	}
	t.Logf("provctl get %s:\n%s", second, shown)

	// Bob's quota is his own.
	other := container(bob)
	bob.WaitResult(t, other, provision.StateOk, within)

	stats := func() (map[string]admin.UserUsage, string) {
		out, err := node.CLI(t, "stats", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var st admin.Stats
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		usage := map[string]admin.UserUsage{}
		for _, u := range st.Users {
			usage[u.User] = u
		}
		return usage, out
	}
	usage, out := stats()
	for _, id := range []string{aliceID, bobID} {
		u := usage[id]
		if u.Used.Workloads != 2 || u.Used.Units.CRU != 1 || u.Quota.Workloads != 2 {
			t.Fatalf("stats of %s: %+v (all: %s)", id, u, out)
		}
	}
	if table, err := node.CLI(t, "stats"); err != nil || !strings.Contains(table, "quota per user: workloads=2") || !strings.Contains(table, aliceID) {
		t.Fatalf("provisiond stats: %v:\n%s", err, table)
	}

	// Deleting the first frees Alice's place.
	if _, err := alice.Run(t, "delete", first); err != nil {
		t.Fatal(err)
	}
	alice.WaitResult(t, first, provision.StateDeleted, within)
	third := container(alice)
	alice.WaitResult(t, third, provision.StateOk, within)

	// The operator changes the quota file and sends SIGHUP (what
	// `systemctl reload provisiond` does). A file with an error changes
	// nothing and the daemon runs on; a good one applies to the next
	// reservation.
	hangup := func(file string) {
		if err := os.WriteFile(quotaFile, []byte(file), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(node.PID(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	hangup(aliceID + " workloads=lots\n")
	harness.Eventually(t, within, "the reload's refusal in the log", func() error {
		if !strings.Contains(node.Log(), "reload failed") {
			return errors.New("not logged yet")
		}
		return nil
	})
	if u, out := stats(); u[aliceID].Quota.Workloads != 2 {
		t.Fatalf("a quota file with an error changed the quota: %s", out)
	}
	// Volumes from here: the node's two cores hold a container each.
	volume := func(u *harness.User) string {
		return u.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h")
	}
	fourth := volume(alice)
	if res := alice.WaitResult(t, fourth, provision.StateError, within); !strings.Contains(res.Message, "would run 3 of 2 workloads") {
		t.Fatalf("the fourth's result: %q", res.Message)
	}

	hangup(aliceID + " workloads=3\n")
	harness.Eventually(t, within, "the raised quota in force", func() error {
		if u, out := stats(); u[aliceID].Quota.Workloads != 3 || u[bobID].Quota.Workloads != 2 {
			return fmt.Errorf("not yet: %s", out)
		}
		return nil
	})
	fifth := volume(alice)
	alice.WaitResult(t, fifth, provision.StateOk, within)

	for _, d := range []struct {
		u  *harness.User
		id string
	}{{alice, third}, {alice, fifth}, {bob, other}, {alice, nets[alice]}, {bob, nets[bob]}} {
		if _, err := d.u.Run(t, "delete", d.id); err != nil {
			t.Fatal(err)
		}
		d.u.WaitResult(t, d.id, provision.StateDeleted, within)
	}
}
