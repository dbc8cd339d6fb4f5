package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestUpdates changes running workloads with `provctl update` through the
// explorer and a real node: a container's memory live (the same process,
// a new cgroup limit), its env by recreating it (its volume's data and
// its IP kept), a volume grown; a shrink is refused with a signed error
// result while the running version stays; the owner's next version after
// the refusal applies; the version shows in provctl get and provisiond
// cache show.
func TestUpdates(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("skipping: needs the cgroup v1 memory controller")
	}
	image, digest := fixture.Busybox(t)
	ex := harness.StartExplorer(t)
	node := harness.StartNode(t, ex.URL())
	user := harness.NewUser(t, ex.URL())
	nodeID := node.ID(t)

	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "upd", "--ip-range", "10.244.0.0/16", "--subnet", "10.244.1.0/24", "--duration", "1h")
	volID := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h")
	vol2ID := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h") // no container uses it
	user.WaitResult(t, netID, provision.StateOk, within)
	user.WaitResult(t, volID, provision.StateOk, within)
	user.WaitResult(t, vol2ID, provision.StateOk, within)
	ctrID := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", `echo "$STAGE $(date +%s%N)" >> /data/boots; exec sleep 3600`,
		"--env", "STAGE=one", "--mount", volID+":/data", "--network", "upd", "--ip", "10.244.1.10",
		"--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h")
	user.WaitResult(t, ctrID, provision.StateOk, within)
	// On a failure too, the workloads go before the node stops (cleanups
	// run last first): nothing stays on the host.
	deleted := false
	t.Cleanup(func() {
		if deleted {
			return
		}
		for _, id := range []string{ctrID, volID, vol2ID, netID} {
			if _, err := user.Run(t, "delete", id); err != nil {
				t.Errorf("cleanup: delete %s: %v", id, err)
				continue
			}
			waitDeleted(t, user, id)
		}
	})

	limit := func() string {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/provisiond", "prv-"+ctrID, "memory.limit_in_bytes"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	boots := func() []string {
		t.Helper()
		out, err := node.CLI(t, "cache", "show", "--json", volID)
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(out, `"path":"`)
		if i < 0 {
			i = strings.Index(out, `"path": "`)
		}
		if i < 0 {
			t.Fatalf("no volume path in %s", out)
		}
		rest := out[i:]
		rest = rest[strings.Index(rest, `"/`)+1:]
		path := rest[:strings.Index(rest, `"`)]
		b, err := os.ReadFile(filepath.Join(path, "boots"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	if got := limit(); got != fmt.Sprint(64<<20) {
		t.Fatalf("memory limit %s, want 64 MiB", got)
	}
	if b := boots(); len(b) != 1 || !strings.HasPrefix(b[0], "one ") {
		t.Fatalf("boots %q, want one start", b)
	}

	// Memory: live, no restart.
	if _, err := user.Run(t, "update", "container", ctrID, "--memory", "128"); err != nil {
		t.Fatal(err)
	}
	res := user.WaitResult(t, ctrID, provision.StateOk, within)
	r, _ := user.Get(t, ctrID)
	if res.Version != 1 || r.Version != 1 || res.Digest != r.Digest() {
		t.Fatalf("after the memory update: result v%d for %s, reservation v%d %s", res.Version, res.Digest, r.Version, r.Digest())
	}
	if got := limit(); got != fmt.Sprint(128<<20) {
		t.Fatalf("memory limit after the update %s, want 128 MiB", got)
	}
	if b := boots(); len(b) != 1 {
		t.Fatalf("the live update restarted the container: boots %q", b)
	}
	if out, err := node.CLI(t, "cache", "show", ctrID); err != nil || !strings.Contains(out, "version:") || !strings.Contains(out, "1\n") {
		t.Fatalf("cache show: %v\n%s", err, out)
	}

	// Env: recreated, same volume (its data kept) and IP.
	if _, err := user.Run(t, "update", "container", ctrID, "--env", "STAGE=two"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, within, "the container recreated", func() error {
		r, _ := user.Get(t, ctrID)
		if r.Version != 2 || r.Result == nil || r.Result.State != provision.StateOk {
			return fmt.Errorf("version %d, result %+v", r.Version, r.Result)
		}
		if b := boots(); len(b) != 2 || !strings.HasPrefix(b[1], "two ") {
			return fmt.Errorf("boots %q", b)
		}
		return nil
	})
	if res := user.WaitResult(t, ctrID, provision.StateOk, within); !strings.Contains(string(res.Data), "10.244.1.10") {
		t.Fatalf("result data after the recreate %s, want the same IP", res.Data)
	}

	// A volume no container uses grows (online with CAP_SYS_RESOURCE,
	// else offline); a shrink is refused, the grown one stays; the
	// owner's next version after the refusal applies.
	if _, err := user.Run(t, "update", "volume", vol2ID, "--size", "2"); err != nil {
		t.Fatal(err)
	}
	if res := user.WaitResult(t, vol2ID, provision.StateOk, within); res.Version != 1 {
		t.Fatalf("grown volume: %+v", res)
	}
	if out, err := node.CLI(t, "cache", "show", vol2ID); err != nil || !strings.Contains(out, "sru=2") {
		t.Fatalf("cache show of the grown volume: %v\n%s", err, out)
	}
	if _, err := user.Run(t, "update", "volume", vol2ID, "--size", "1"); err != nil {
		t.Fatal(err)
	}
	refused := user.WaitResult(t, vol2ID, provision.StateError, within)
	if refused.Version != 2 || !strings.Contains(refused.Message, "cannot shrink") || !strings.Contains(refused.Message, "version 1 (deployed) keeps running") {
		t.Fatalf("shrink: %s v%d %q", refused.State, refused.Version, refused.Message)
	}
	if _, err := user.Run(t, "update", "volume", vol2ID, "--size", "3"); err != nil {
		t.Fatal(err)
	}
	if res := user.WaitResult(t, vol2ID, provision.StateOk, within); res.Version != 3 {
		t.Fatalf("version 3: %+v", res)
	}

	// The volume the container uses: grown online with CAP_SYS_RESOURCE;
	// without it (as here under a restricted root) the update fails and is
	// rolled back: the error says why, the container and its data run on.
	if _, err := user.Run(t, "update", "volume", volID, "--size", "2"); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, within, "the update of the volume in use answered", func() error {
		r, _ := user.Get(t, volID)
		if r.Version != 1 || r.Result == nil || r.Result.Version != 1 {
			return fmt.Errorf("version %d, result %+v", r.Version, r.Result)
		}
		if r.Result.State == provision.StateError && !strings.Contains(r.Result.Message, "CAP_SYS_RESOURCE") {
			return harness.Permanent(fmt.Errorf("refused for another reason: %s", r.Result.Message))
		}
		t.Logf("the volume in use: %s %q", r.Result.State, r.Result.Message)
		return nil
	})
	if b := boots(); len(b) != 2 {
		t.Fatalf("the volume's data after its update: %q", b)
	}
	if _, err := user.Run(t, "update", "container", ctrID, "--cpu", "2"); err != nil {
		t.Fatal(err)
	}
	if res := user.WaitResult(t, ctrID, provision.StateOk, within); res.Version != 3 {
		t.Fatalf("the container after the volume's update: %+v", res)
	}

	for _, id := range []string{ctrID, volID, vol2ID, netID} {
		if _, err := user.Run(t, "delete", id); err != nil {
			t.Fatal(err)
		}
		waitDeleted(t, user, id)
	}
	deleted = true
}

// waitDeleted waits for the node's "deleted" result of id (an earlier
// error result does not end the wait, as it does for WaitResult).
func waitDeleted(t *testing.T, user *harness.User, id string) {
	t.Helper()
	harness.Eventually(t, within, id+" deleted", func() error {
		r, _ := user.Get(t, id)
		if r.Result == nil || r.Result.State != provision.StateDeleted {
			return fmt.Errorf("result %+v", r.Result)
		}
		return nil
	})
}
