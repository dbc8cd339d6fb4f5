package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
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
// once the first container is deleted, the user can reserve again.
func TestUserQuota(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	ex := harness.StartExplorer(t)
	node := harness.StartNodeWith(t, ex.URL(), harness.NodeOptions{Args: []string{"--user-quota", "workloads=2"}})
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

	for _, d := range []struct {
		u  *harness.User
		id string
	}{{alice, third}, {bob, other}, {alice, nets[alice]}, {bob, nets[bob]}} {
		if _, err := d.u.Run(t, "delete", d.id); err != nil {
			t.Fatal(err)
		}
		d.u.WaitResult(t, d.id, provision.StateDeleted, within)
	}
}
