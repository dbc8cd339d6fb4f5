package reliability

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// soakKills is how many times TestKillSoak kills the daemon: SOAK_KILLS,
// default 10 (the short variant inside `make test`; `make soak` runs 100).
func soakKills(t testing.TB) int {
	t.Helper()
	v := os.Getenv("SOAK_KILLS")
	if v == "" {
		return 10
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("SOAK_KILLS=%q is not a positive number", v)
	}
	return n
}

// Limits of the soak's live set: two containers of one core fit any node
// the tests run on; volumes are sparse.
const (
	soakMaxContainers = 2
	soakMaxVolumes    = 24
	soakMarker        = "soak-marker"
	soakProvctlChecks = 40
)

// tracked is a reservation the soak made, and the fingerprint of its side
// effect taken at its first ok result.
type tracked struct {
	id      string
	kind    provision.ReservationType
	deleted bool   // provctl delete succeeded
	ok      bool   // an ok result was seen
	print   string // fingerprint of the side effect at the first ok
	mount   string // a volume's mount path
	nsPath  string // a network's namespace file
}

// soak drives reservations and deletes while the daemon gets killed.
type soak struct {
	t      *testing.T
	node   *harness.Node
	user   *harness.User
	client *explorer.Client
	nodeID string
	nodeK  ed25519.PublicKey
	image  string
	digest string
	ctrNet string // the network containers join

	mu       sync.Mutex
	all      []*tracked
	networks int
	ctrs     int
	seq      int
}

// TestKillSoak kills provisiond with SIGKILL at random moments under a
// steady stream of reservations (volumes, networks, containers) and owner
// deletes, then proves: one final verified result per reservation; no
// workload provisioned twice (side-effect fingerprints unchanged, history
// enters each state once); no runtime object of ours without a live
// record; stats equal stats.Compute over the records; a clean database.
func TestKillSoak(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	image, digest := fixture.Busybox(t)
	kills := soakKills(t)

	setup := harness.Start(t, harness.SetupOptions{Node: harness.NodeOptions{Args: []string{"--reserve-cru", "0"}}})
	node, user := setup.Node, setup.User
	purgeOnCleanup(t, node)
	client, _ := userClient(t, user)
	s := &soak{t: t, node: node, user: user, client: client, nodeID: setup.NodeID, image: image, digest: digest}
	s.nodeK = nodeKey(t, node)

	s.ctrNet = "soak-ctr"
	ctrNetID := user.Reserve(t, "network", "--node", s.nodeID, "--name", s.ctrNet, "--ip-range", "10.242.0.0/16", "--subnet", "10.242.0.0/24", "--duration", "2h")
	s.all = append(s.all, &tracked{id: ctrNetID, kind: provision.NetworkReservation})

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { s.drive(ctx, true) })
	wg.Go(func() { s.drive(ctx, false) }) // a second stream of volumes and networks

	start := time.Now()
	var restarts time.Duration
	for i := range kills {
		delay := 500*time.Millisecond + rand.N(2500*time.Millisecond)
		select {
		case <-time.After(delay):
		case <-t.Context().Done():
			t.Fatal("test context ended")
		}
		node.Kill()
		r := time.Now()
		node.Start(t)
		restarts += time.Since(r)
		if t.Failed() {
			t.Fatalf("after kill %d", i+1)
		}
	}
	stop()
	wg.Wait()
	t.Logf("%d kills in %s (restart to admin socket: mean %s)", kills, time.Since(start).Round(time.Second), (restarts / time.Duration(kills)).Round(time.Millisecond))

	s.mu.Lock()
	all := s.all
	s.mu.Unlock()
	counts := map[string]int{}
	for _, tr := range all {
		key := string(tr.kind)
		if tr.deleted {
			key += "-deleted"
		}
		counts[key]++
	}
	t.Logf("%d reservations: %v", len(all), counts)

	// Convergence: every reservation has its final verified result.
	conv := time.Now()
	harness.Eventually(t, converge, "final results of every reservation", func() error {
		for _, tr := range all {
			want := provision.StateOk
			if tr.deleted {
				want = provision.StateDeleted
			}
			res, err := s.result(t.Context(), tr.id)
			if err != nil {
				return err
			}
			if res == nil || res.State != want {
				if res != nil && res.State == provision.StateError {
					return harness.Permanent(fmt.Errorf("%s %s failed: %s", tr.kind, tr.id, res.Message))
				}
				return fmt.Errorf("%s %s: result %v, want %s", tr.kind, tr.id, res, want)
			}
		}
		return nil
	})
	settled(t, node, converge)
	t.Logf("converged %s after the last kill", time.Since(conv).Round(time.Second))
	s.fingerprintAll(t.Context())

	// provctl verifies the results against the node's key as a user
	// would (every result was verified in-process above; provctl takes
	// about a second a call, so at most soakProvctlChecks of them).
	for i, tr := range all {
		if i >= soakProvctlChecks {
			break
		}
		r, verified := user.Get(t, tr.id)
		want := provision.StateOk
		if tr.deleted {
			want = provision.StateDeleted
		}
		if !verified || r.Result == nil || r.Result.State != want || r.Result.Digest != r.Digest() || r.Result.ID != tr.id {
			t.Errorf("provctl get %s: verified %t result %+v, want %s for digest %s", tr.id, verified, r.Result, want, r.Digest())
		}
	}

	t.Logf("provctl verified %d results", min(len(all), soakProvctlChecks))
	recs := records(t, node)
	for _, tr := range all {
		rec, ok := recs[tr.id]
		if !ok {
			t.Errorf("%s %s: no record on the node", tr.kind, tr.id)
			continue
		}
		if err := historyConsistent(rec); err != nil {
			t.Error(err)
		}
		if rec.Result == nil || rec.Result.Signature == "" {
			t.Errorf("%s: no signed result stored", tr.id)
		}
		if !tr.deleted {
			if tr.print == "" {
				t.Errorf("%s %s: no fingerprint taken", tr.kind, tr.id)
			} else if now, err := s.fingerprint(tr); err != nil || now != tr.print {
				t.Errorf("%s %s provisioned again: fingerprint %q at first ok, %q now (%v)", tr.kind, tr.id, tr.print, now, err)
			}
		}
	}
	if len(recs) != len(all) {
		t.Errorf("node holds %d records, the soak made %d reservations", len(recs), len(all))
	}
	if bad := orphans(t, node, recs); len(bad) > 0 {
		t.Errorf("runtime objects without a live record: %v", bad)
	}
	if err := statsMatch(recs, nodeStats(t, node)); err != nil {
		t.Error(err)
	}
	stopAt := time.Now()
	node.Stop(t)
	t.Logf("clean stop took %s", time.Since(stopAt).Round(time.Millisecond))
	checkDatabase(t, node)
}

// drive makes reservations and deletes until ctx ends; when full is false
// only volumes and networks (so that one stream keeps the container count
// under soakMaxContainers).
func (s *soak) drive(ctx context.Context, full bool) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s.step(full)
		if full {
			s.fingerprintAll(ctx)
		}
	}
}

// step does one random action.
func (s *soak) step(full bool) {
	s.mu.Lock()
	liveVols, liveCtrs := 0, 0
	var deletable []*tracked
	for i, tr := range s.all {
		if tr.deleted || i == 0 { // the containers' network stays
			continue
		}
		deletable = append(deletable, tr)
		switch tr.kind {
		case provision.VolumeReservation:
			liveVols++
		case provision.ContainerReservation:
			liveCtrs++
		}
	}
	s.mu.Unlock()

	p := rand.N(100)
	if !full {
		p = 15 + rand.N(60) // a volume or a network
	}
	switch {
	case p < 15 || (p < 50 && liveVols >= soakMaxVolumes) || (p >= 75 && p < 85 && liveCtrs >= soakMaxContainers):
		if len(deletable) == 0 {
			return
		}
		tr := deletable[rand.N(len(deletable))]
		if _, err := s.user.Run(s.t, "delete", tr.id); err != nil {
			s.t.Errorf("delete %s: %v", tr.id, err)
			return
		}
		s.mu.Lock()
		tr.deleted = true
		s.mu.Unlock()
	case p < 50:
		s.reserve(provision.VolumeReservation, "--size", "1", "--type", "ssd", "--duration", "2h")
	case p < 75:
		s.mu.Lock()
		s.networks++
		n := s.networks
		s.mu.Unlock()
		s.reserve(provision.NetworkReservation, "--name", fmt.Sprintf("soak-%d", n), "--ip-range", "10.243.0.0/16",
			"--subnet", fmt.Sprintf("10.243.%d.0/24", n%256), "--duration", "2h")
	case p < 85:
		s.mu.Lock()
		s.ctrs++
		n := s.ctrs
		s.mu.Unlock()
		s.reserve(provision.ContainerReservation, "--image", s.image, "--image-digest", s.digest,
			"--entrypoint", "/bin/sleep", "--entrypoint", "3600", "--network", s.ctrNet,
			"--ip", fmt.Sprintf("10.242.0.%d", 10+n%200), "--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "2h")
	default:
		// a quiet moment: the daemon only works on what it has
	}
}

func (s *soak) reserve(kind provision.ReservationType, args ...string) {
	// provctl signs created at one-second precision: two equal requests in
	// the same second have one digest and the second is refused as a
	// replay (409), so each carries its own reference.
	s.mu.Lock()
	s.seq++
	ref := fmt.Sprintf("soak-%d", s.seq)
	s.mu.Unlock()
	args = append([]string{"reserve", string(kind), "--node", s.nodeID, "--reference", ref}, args...)
	out, err := s.user.Run(s.t, args...)
	if err != nil {
		s.t.Errorf("reserve %s: %v", kind, err)
		return
	}
	id := trimID(out)
	s.mu.Lock()
	s.all = append(s.all, &tracked{id: id, kind: kind})
	s.mu.Unlock()
}

func trimID(out string) string {
	for len(out) > 0 && (out[len(out)-1] == '\n' || out[len(out)-1] == ' ') {
		out = out[:len(out)-1]
	}
	return out
}

// result returns the explorer's result of id after verifying its
// signature against the node's key; nil when there is none yet.
func (s *soak) result(ctx context.Context, id string) (*provision.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := s.client.GetReservation(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.Result == nil {
		return nil, nil
	}
	if err := r.Result.Verify(s.nodeK); err != nil {
		return nil, harness.Permanent(fmt.Errorf("result of %s: %v", id, err))
	}
	return r.Result, nil
}

// fingerprintAll takes the fingerprint of every reservation that got its
// first ok result since the last call.
func (s *soak) fingerprintAll(ctx context.Context) {
	s.mu.Lock()
	var todo []*tracked
	for _, tr := range s.all {
		if !tr.ok && !tr.deleted {
			todo = append(todo, tr)
		}
	}
	s.mu.Unlock()
	for _, tr := range todo {
		res, err := s.result(ctx, tr.id)
		if err != nil || res == nil || res.State != provision.StateOk {
			continue
		}
		if tr.kind == provision.VolumeReservation {
			var d struct{ Path string }
			if err := json.Unmarshal(res.Data, &d); err != nil || d.Path == "" {
				s.t.Errorf("volume %s result data %s: %v", tr.id, res.Data, err)
				continue
			}
			tr.mount = d.Path
			// A marker in the filesystem: a second mkfs would erase it.
			if err := os.WriteFile(filepath.Join(d.Path, soakMarker), []byte(tr.id), 0o600); err != nil {
				s.mu.Lock()
				deleted := tr.deleted
				s.mu.Unlock()
				if !deleted {
					s.t.Errorf("writing the marker into volume %s: %v", tr.id, err)
				}
				continue
			}
		}
		if tr.kind == provision.NetworkReservation {
			r, err := s.client.GetReservation(ctx, tr.id)
			if err != nil {
				continue
			}
			tr.nsPath = filepath.Join("/run/netns", provision.Prefix+provision.NetworkID(r.UserID, networkName(r)))
			// A marker in the namespace, the alias of its loopback: a
			// namespace made anew lacks it even when the kernel reuses
			// the inode number.
			if out, err := exec.Command("ip", "-n", filepath.Base(tr.nsPath), "link", "set", "lo", "alias", soakMarker).CombinedOutput(); err != nil {
				s.mu.Lock()
				deleted := tr.deleted
				s.mu.Unlock()
				if !deleted {
					s.t.Errorf("marking network %s: %v: %s", tr.id, err, out)
				}
				continue
			}
		}
		print, err := s.fingerprint(tr)
		if err != nil {
			s.mu.Lock()
			deleted := tr.deleted
			s.mu.Unlock()
			if !deleted {
				s.t.Errorf("fingerprint of %s %s after its ok result: %v", tr.kind, tr.id, err)
			}
			continue
		}
		s.mu.Lock()
		tr.ok, tr.print = true, print
		s.mu.Unlock()
	}
}

// fingerprint identifies a workload's side effect so that provisioning it
// again shows: a volume's image inode and the marker in its filesystem; a
// network's namespace inode and the marker on its loopback; a container's runc
// creation time and pid.
func (s *soak) fingerprint(tr *tracked) (string, error) {
	switch tr.kind {
	case provision.VolumeReservation:
		ino, err := inode(volumeImage(s.node, tr.id))
		if err != nil {
			return "", err
		}
		marker, err := os.ReadFile(filepath.Join(tr.mount, soakMarker))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("image inode %d, marker %s", ino, marker), nil
	case provision.NetworkReservation:
		ino, err := inode(tr.nsPath)
		if err != nil {
			return "", err
		}
		out, err := exec.Command("ip", "-n", filepath.Base(tr.nsPath), "link", "show", "lo").Output()
		if err != nil {
			return "", fmt.Errorf("ip link show lo in %s: %v", tr.nsPath, err)
		}
		mark := "without"
		if strings.Contains(string(out), "alias "+soakMarker) {
			mark = "with"
		}
		return fmt.Sprintf("netns inode %d %s marker", ino, mark), nil
	case provision.ContainerReservation:
		list, err := listRunc(runcRoot(s.node))
		if err != nil {
			return "", err
		}
		c, ok := list[provision.Prefix+tr.id]
		if !ok {
			return "", errors.New("no runc container")
		}
		if c.Status != "running" {
			return "", fmt.Errorf("runc container is %s", c.Status)
		}
		return fmt.Sprintf("runc created %s pid %d", c.Created.Format(time.RFC3339Nano), c.Pid), nil
	}
	return "", fmt.Errorf("unknown kind %s", tr.kind)
}
