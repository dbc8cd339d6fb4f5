package reliability

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// TestExplorerOutage stops explorerd while short reservations expire and a
// container crash-loops until the node gives up on it; once explorerd is
// back, every result (deleted, error, ok) and the latest stats arrive,
// each reservation with one final result: the one the node holds.
func TestExplorerOutage(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)

	s := harness.Start(t, harness.SetupOptions{})
	ex, node, user, nodeID := s.Explorer, s.Node, s.User, s.NodeID
	purgeOnCleanup(t, node)
	client, _ := userClient(t, user)
	nodeK := nodeKey(t, node)

	const short = "30s"
	want := map[string]provision.ResultState{}
	for i := range 3 {
		id := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", short, "--reference", fmt.Sprintf("outage-vol-%d", i))
		want[id] = provision.StateDeleted
	}
	shortNet := user.Reserve(t, "network", "--node", nodeID, "--name", "outage-short", "--ip-range", "10.244.0.0/16", "--subnet", "10.244.2.0/24", "--duration", short)
	want[shortNet] = provision.StateDeleted
	keptVol := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--type", "ssd", "--duration", "1h")
	want[keptVol] = provision.StateOk
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "outage", "--ip-range", "10.244.0.0/16", "--subnet", "10.244.1.0/24", "--duration", "1h")
	want[netID] = provision.StateOk
	crasher := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/false", "--network", "outage", "--ip", "10.244.1.10", "--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "1h")
	want[crasher] = provision.StateError

	for id, st := range want {
		if st != provision.StateError {
			user.WaitResult(t, id, provision.StateOk, converge)
		}
	}

	ex.Stop(t)
	down := time.Now()
	// While explorerd is down the node expires the short ones and gives up
	// on the crash-looping container; the results wait in its outbox.
	harness.Eventually(t, 4*time.Minute, "expiry and give-up during the outage", func() error {
		recs := records(t, node)
		for id, st := range want {
			rec, ok := recs[id]
			if !ok {
				return fmt.Errorf("no record of %s", id)
			}
			if rec.Result == nil || rec.Result.State != st {
				return fmt.Errorf("%s %s is %s", rec.Reservation.Type, id, rec.State)
			}
		}
		return nil
	})
	st, err := statusOf(t, node)
	if err != nil {
		t.Fatal(err)
	}
	if st.OutboxDepth == 0 || st.LastPollError == "" {
		t.Errorf("during the outage: outbox depth %d, last poll error %q; want results waiting and the error shown", st.OutboxDepth, st.LastPollError)
	}
	outage := time.Since(down)
	t.Logf("explorer down %s; outbox depth %d; last poll error %q", outage.Round(time.Second), st.OutboxDepth, st.LastPollError)
	if msg := records(t, node)[crasher].Result.Message; !strings.Contains(msg, "crash-loop") {
		t.Errorf("crash-looping container's error result says %q, want it to name the crash loop", msg)
	}

	ex.Start(t)
	up := time.Now()
	settled(t, node, converge)
	recs := records(t, node)
	harness.Eventually(t, converge, "every result at the explorer", func() error {
		for id, st := range want {
			r, err := client.GetReservation(t.Context(), id)
			if err != nil {
				return err
			}
			if r.Result == nil || r.Result.State != st {
				return fmt.Errorf("%s: result %+v, want %s", id, r.Result, st)
			}
			if err := r.Result.Verify(nodeK); err != nil {
				return harness.Permanent(err)
			}
			// One final result: the explorer holds exactly the one the
			// node stored last, not an older one delivered late.
			if r.Result.Signature != recs[id].Result.Signature {
				return harness.Permanent(fmt.Errorf("%s: explorer holds result %+v, node's last is %+v", id, r.Result, recs[id].Result))
			}
		}
		return nil
	})
	t.Logf("every result at the explorer %s after it came back", time.Since(up).Round(time.Millisecond))
	for id := range want {
		if err := historyConsistent(recs[id]); err != nil {
			t.Error(err)
		}
		if r, verified := user.Get(t, id); !verified || r.Result.State != want[id] {
			t.Errorf("provctl get %s: verified %t, state %s, want %s", id, verified, r.Result.State, want[id])
		}
	}

	// The latest stats arrive: what the explorer shows is the node's now.
	local := nodeStats(t, node)
	harness.Eventually(t, converge, "latest stats at the explorer", func() error {
		info, err := client.Node(t.Context(), nodeID)
		if err != nil {
			return err
		}
		if info.Stats == nil {
			return errors.New("no stats")
		}
		if !unitsEqual(info.Stats.Used, local.Used) {
			return fmt.Errorf("explorer shows used %+v, node %+v", info.Stats.Used, local.Used)
		}
		for _, typ := range provision.Types {
			if info.Stats.Workloads[typ] != local.Workloads[typ] {
				return fmt.Errorf("explorer shows %d %s, node %d", info.Stats.Workloads[typ], typ, local.Workloads[typ])
			}
		}
		return nil
	})
	if err := statsMatch(recs, local); err != nil {
		t.Error(err)
	}
	if bad := orphans(t, node, recs); len(bad) > 0 {
		t.Errorf("runtime objects without a live record: %v", bad)
	}
}
