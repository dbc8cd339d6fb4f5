package reliability

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/stats"
)

func TestMain(m *testing.M) { harness.Main(m) }

// converge bounds how long a node may take to settle after a disturbance.
const converge = 3 * time.Minute

// dataDir is the node's --data-dir.
func dataDir(n *harness.Node) string { return filepath.Join(n.Dir, "data") }

// runcRoot is the runc state directory the node's containers live in.
func runcRoot(n *harness.Node) string { return filepath.Join(dataDir(n), "runc") }

// volumeImage is the image file of an ssd volume.
func volumeImage(n *harness.Node, id string) string {
	return filepath.Join(dataDir(n), "volumes", "ssd", provision.Prefix+id+".img")
}

// records returns the node's records by ID, read through `cache export`.
func records(t testing.TB, n *harness.Node) map[string]*provision.Record {
	t.Helper()
	out, err := n.CLI(t, "cache", "export")
	if err != nil {
		t.Fatal(err)
	}
	recs := map[string]*provision.Record{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var rec provision.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("cache export line %q: %v", sc.Text(), err)
		}
		recs[rec.ID()] = &rec
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return recs
}

// nodeStats returns `provisiond stats --json`.
func nodeStats(t testing.TB, n *harness.Node) provision.Stats {
	t.Helper()
	out, err := n.CLI(t, "stats", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var s provision.Stats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats --json: %v: %s", err, out)
	}
	return s
}

func unitsEqual(a, b provision.Units) bool {
	near := func(x, y float64) bool { return math.Abs(x-y) < 1e-9 }
	return a.CRU == b.CRU && near(a.MRU, b.MRU) && near(a.SRU, b.SRU) && near(a.HRU, b.HRU)
}

// statsMatch checks that the node's used units equal stats.Compute over
// its records, with each record's units computed again by stats.Units
// from its reservation (so a drifted stored tally shows).
func statsMatch(recs map[string]*provision.Record, got provision.Stats) error {
	list := make([]*provision.Record, 0, len(recs))
	for _, rec := range recs {
		u, err := stats.Units(rec.Reservation)
		if err != nil && rec.State.Active() {
			return fmt.Errorf("units of active %s: %v", rec.ID(), err)
		}
		if rec.State.Active() && !unitsEqual(u, rec.Units) {
			return fmt.Errorf("record %s stores units %+v, stats.Units says %+v", rec.ID(), rec.Units, u)
		}
		cp := *rec
		cp.Units = u
		list = append(list, &cp)
	}
	want := stats.Compute(list, got.Capacity, time.Now())
	if !unitsEqual(want.Used, got.Used) {
		return fmt.Errorf("used units %+v, stats.Compute over the records says %+v", got.Used, want.Used)
	}
	for _, typ := range provision.Types {
		if want.Workloads[typ] != got.Workloads[typ] {
			return fmt.Errorf("%s workloads %d, stats.Compute says %d", typ, got.Workloads[typ], want.Workloads[typ])
		}
	}
	return nil
}

// historyConsistent checks that a record's history only takes allowed
// steps and never enters a state twice (a second "deployed" would be a
// second provisioning).
func historyConsistent(rec *provision.Record) error {
	seen := map[provision.State]bool{}
	for i, tr := range rec.History {
		if seen[tr.State] {
			return fmt.Errorf("%s enters %s twice: %+v", rec.ID(), tr.State, rec.History)
		}
		seen[tr.State] = true
		if i > 0 && !provision.CanMove(rec.History[i-1].State, tr.State) {
			return fmt.Errorf("%s moves %s → %s: %+v", rec.ID(), rec.History[i-1].State, tr.State, rec.History)
		}
	}
	if n := len(rec.History); n > 0 && rec.History[n-1].State != rec.State {
		return fmt.Errorf("%s is %s but its history ends in %s", rec.ID(), rec.State, rec.History[n-1].State)
	}
	return nil
}

// netnsNames lists the network namespaces of the machine.
func netnsNames(t testing.TB) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	var mps []string
	for _, m := range ms {
		if strings.HasPrefix(m.Mountpoint, dir+"/") {
			mps = append(mps, m.Mountpoint)
		}
	}
	return mps
}

// loopsUnder maps loop devices to backing files below dir.
func loopsUnder(t testing.TB, dir string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	loops := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if strings.HasPrefix(backing, dir+"/") {
			loops["/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f)))] = backing
		}
	}
	return loops
}

// runcContainer is one line of `runc list --format json`.
type runcContainer struct {
	ID      string    `json:"id"`
	Pid     int       `json:"pid"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
}

// runcList lists the containers under a runc root.
func runcList(t testing.TB, root string) map[string]runcContainer {
	t.Helper()
	m, err := listRunc(root)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func listRunc(root string) (map[string]runcContainer, error) {
	out, err := exec.Command("runc", "--root", root, "list", "--format", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("runc --root %s list: %v", root, err)
	}
	var list []runcContainer
	if s := strings.TrimSpace(string(out)); s != "" && s != "null" {
		if err := json.Unmarshal(out, &list); err != nil {
			return nil, fmt.Errorf("runc list: %v: %s", err, out)
		}
	}
	m := map[string]runcContainer{}
	for _, c := range list {
		m[c.ID] = c
	}
	return m, nil
}

// inode returns the inode number of path.
func inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// networkName is the network name inside a network reservation's data.
func networkName(r *provision.Reservation) string {
	var n provision.Network
	_ = json.Unmarshal(r.Data, &n)
	return n.Name
}

// idOfPrv returns the reservation ID a prv- object name stands for.
func idOfPrv(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".img")
	if !strings.HasPrefix(name, provision.Prefix) {
		return "", false
	}
	return strings.TrimPrefix(name, provision.Prefix), true
}

// orphans lists every runtime object of node that has no live record:
// namespaces named after its records (the machine's other prv- namespaces
// belong to other tests running beside this one), every mount and loop
// device below its directory, every container in its runc root.
func orphans(t testing.TB, n *harness.Node, recs map[string]*provision.Record) []string {
	t.Helper()
	live := func(id string) bool { rec, ok := recs[id]; return ok && !rec.State.Final() }
	nsOwner := map[string]bool{} // namespace name → some record of its is live
	for id, rec := range recs {
		switch rec.Reservation.Type {
		case provision.NetworkReservation:
			name := provision.Prefix + provision.NetworkID(rec.Reservation.UserID, networkName(rec.Reservation))
			nsOwner[name] = nsOwner[name] || live(id)
		case provision.ContainerReservation:
			nsOwner[provision.Prefix+"c-"+id] = live(id)
		}
	}
	var bad []string
	for _, ns := range netnsNames(t) {
		if l, ours := nsOwner[ns]; ours && !l {
			bad = append(bad, "netns "+ns)
		}
	}
	// ownerOf is the id of the first prv- component of a path below the
	// data directory: a volume's image or mount, a container's bundle
	// (its disk image, idmapped mounts).
	ownerOf := func(p string) string {
		rel, _ := filepath.Rel(dataDir(n), p)
		for _, part := range strings.Split(rel, "/") {
			if i, ok := idOfPrv(part); ok {
				return i
			}
		}
		return ""
	}
	for _, mp := range mountsUnder(t, n.Dir) {
		if id := ownerOf(mp); id == "" || !live(id) {
			bad = append(bad, "mount "+mp)
		}
	}
	for dev, backing := range loopsUnder(t, n.Dir) {
		if id := ownerOf(backing); id == "" || !live(id) {
			bad = append(bad, "loop "+dev+" on "+backing)
		}
	}
	for name := range runcList(t, runcRoot(n)) {
		if id, ok := idOfPrv(name); !ok || !live(id) {
			bad = append(bad, "runc container "+name)
		}
	}
	sort.Strings(bad)
	return bad
}

// checkDatabase opens the stopped node's database and runs its check.
func checkDatabase(t testing.TB, n *harness.Node) {
	t.Helper()
	s, err := cache.Open(filepath.Join(dataDir(n), "provisiond.db"), cache.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the database after a clean stop: %v", err)
	}
	defer s.Close()
	if err := s.Check(); err != nil {
		t.Errorf("database check after a clean stop: %v", err)
	}
}

// userClient returns an in-process explorer client holding u's key, for
// fast polling and for requests provctl refuses to build.
func userClient(t testing.TB, u *harness.User) (*explorer.Client, ed25519.PrivateKey) {
	t.Helper()
	key, err := identity.Load(u.Key)
	if err != nil {
		t.Fatal(err)
	}
	return explorer.NewUserClient(u.Explorer, key, explorer.ClientOptions{}), key
}

// nodeKey returns the node's public key.
func nodeKey(t testing.TB, n *harness.Node) ed25519.PublicKey {
	t.Helper()
	pub, err := identity.PublicKey(n.ID(t))
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// statusOf returns the running daemon's status, or an error when it does
// not answer.
func statusOf(t testing.TB, n *harness.Node) (admin.Status, error) {
	t.Helper()
	out, err := n.CLI(t, "status", "--json")
	if err != nil {
		return admin.Status{}, err
	}
	var s admin.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return admin.Status{}, fmt.Errorf("status --json: %v: %s", err, out)
	}
	return s, nil
}

// settled waits until the node runs, caught up, with nothing queued,
// waiting, busy or undelivered.
func settled(t testing.TB, n *harness.Node, within time.Duration) {
	t.Helper()
	settledHolding(t, n, within, 0)
}

// settledHolding is settled for a node that holds exactly held
// reservations waiting for a dependency (`status` counts them as queued).
func settledHolding(t testing.TB, n *harness.Node, within time.Duration, held int) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("the node's last warnings and errors:\n%s", warnings(n, 40))
		}
	}()
	harness.Eventually(t, within, "node settled", func() error {
		s, err := statusOf(t, n)
		switch {
		case err != nil:
			return err
		case !s.Running || !s.CaughtUp:
			return fmt.Errorf("running %t caught up %t", s.Running, s.CaughtUp)
		case s.Queued != held || s.Busy+s.OutboxDepth > 0:
			return fmt.Errorf("queued %d busy %d outbox %d", s.Queued, s.Busy, s.OutboxDepth)
		}
		return nil
	})
}

// wipeRuntime removes every runtime object of node behind its back, as a
// reboot would: its runc containers, the mounts and loop devices below its
// directory and the namespaces named after its records. Files stay.
func wipeRuntime(t testing.TB, n *harness.Node, recs map[string]*provision.Record) {
	t.Helper()
	root := runcRoot(n)
	if list, err := listRunc(root); err == nil {
		for name := range list {
			_ = exec.Command("runc", "--root", root, "kill", name, "KILL").Run()
			if out, err := exec.Command("runc", "--root", root, "delete", "--force", name).CombinedOutput(); err != nil {
				t.Errorf("runc delete %s: %v: %s", name, err, out)
			}
		}
	}
	for _, err := range dropMounts(t, n.Dir) {
		t.Error(err)
	}
	for _, ns := range namespacesOf(recs) {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err == nil {
			if out, err := exec.Command("ip", "netns", "delete", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns delete %s: %v: %s", ns, err, out)
			}
		}
	}
}

// dropMounts does what a reboot does to the mounts and loop devices below
// dir: it unmounts them, deepest first, and detaches the loop devices. It
// returns what failed.
func dropMounts(t testing.TB, dir string) []error {
	t.Helper()
	var errs []error
	mps := mountsUnder(t, dir)
	sort.Sort(sort.Reverse(sort.StringSlice(mps))) // deepest first
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			errs = append(errs, fmt.Errorf("unmounting %s: %v", mp, err))
		}
	}
	for dev := range loopsUnder(t, dir) {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("losetup -d %s: %v: %s", dev, err, out))
		}
	}
	return errs
}

// namespacesOf lists the namespace names the records' workloads use.
func namespacesOf(recs map[string]*provision.Record) []string {
	var names []string
	for id, rec := range recs {
		switch rec.Reservation.Type {
		case provision.NetworkReservation:
			names = append(names, provision.Prefix+provision.NetworkID(rec.Reservation.UserID, networkName(rec.Reservation)))
		case provision.ContainerReservation:
			names = append(names, provision.Prefix+"c-"+id)
		}
	}
	return names
}

// purgeOnCleanup stops node at the end of the test and removes whatever
// runtime objects it left (containers outlive the daemon by design).
func purgeOnCleanup(t testing.TB, n *harness.Node) {
	t.Helper()
	t.Cleanup(func() {
		n.Stop(t)
		wipeRuntime(t, n, records(t, n))
	})
}

// warnings returns the last max warn and error lines of node's log.
func warnings(n *harness.Node, max int) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "provisiond.log"))
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) {
			if len(line) > 600 {
				line = line[:600] + "…"
			}
			lines = append(lines, line)
		}
	}
	if len(lines) > max {
		lines = lines[len(lines)-max:]
	}
	return strings.Join(lines, "\n")
}
