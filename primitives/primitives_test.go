package primitives_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/primitives/internal/mounts"
	"github.com/edgeprov/provisiond/primitives/network"
	"github.com/edgeprov/provisiond/provision"
)

// env is a Table on a temporary data directory with a reservation store
// for Lookup.
type env struct {
	dir    string
	p      *primitives.Table
	image  string
	digest string
	store  map[string]*provision.Reservation
	gaveUp []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	testutil.RequiresCommand(t, "mkfs.ext4")
	image, digest := fixture.Busybox(t)
	e := &env{dir: t.TempDir(), image: image, digest: digest, store: map[string]*provision.Reservation{}}
	e.p = primitives.New(primitives.Options{
		DataDir:     e.dir,
		LocalImages: filepath.Dir(image),
		// A stopped container is restarted after 50 ms (then 100, 200).
		ContainerRestartBackoff:    50 * time.Millisecond,
		ContainerRestartBackoffMax: 200 * time.Millisecond,
		Lookup: func(id string) (*provision.Reservation, error) {
			r, ok := e.store[id]
			if !ok {
				return nil, provision.ErrNotFound
			}
			return r, nil
		},
	})
	e.p.GiveUpTo(e)
	return e
}

// DecommissionCached records that the primitives gave up on id.
func (e *env) DecommissionCached(_ context.Context, id, reason string) error {
	e.gaveUp = append(e.gaveUp, id+": "+reason)
	return nil
}

func (e *env) reservation(t testing.TB, user string, typ provision.ReservationType, w any) *provision.Reservation {
	t.Helper()
	data, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	r := &provision.Reservation{ID: string(typ) + "-" + testutil.RandHex(t, 4), UserID: user, Type: typ, Data: data}
	if _, err := r.Workload(); err != nil {
		t.Fatalf("invalid test workload: %v", err)
	}
	e.store[r.ID] = r
	return r
}

// provision provisions r and decommissions it at cleanup.
func (e *env) provision(t testing.TB, r *provision.Reservation) any {
	t.Helper()
	t.Cleanup(func() {
		if err := e.p.Decommission(context.Background(), r); err != nil {
			t.Errorf("Decommission %s: %v", r.ID, err)
		}
	})
	res, err := e.p.Provision(t.Context(), r)
	if err != nil {
		t.Fatalf("Provision %s: %v", r.ID, err)
	}
	return res
}

func (e *env) container(net string, ip string, mounts ...provision.Mount) *provision.Container {
	c := &provision.Container{
		Image: e.image, ImageDigest: e.digest, Entrypoint: []string{"sleep", "3600"},
		Mounts: mounts, Capacity: provision.ContainerCapacity{CPU: 1, Memory: 64},
	}
	if net != "" {
		c.Network = provision.ContainerNetwork{NetworkID: net, IP: ip}
	}
	return c
}

func (e *env) exec(id string, args ...string) (string, error) {
	return testutil.ContainerExec(filepath.Join(e.dir, "runc"), container.Name(id), args...)
}

func asJSON(t testing.TB, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// assertGone checks the machine for anything left of e's workloads: the
// names List would report, namespaces, mounts, loop devices and runc
// containers.
func assertGone(t testing.TB, e *env, names ...string) {
	t.Helper()
	res, err := e.p.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		for _, n := range names {
			if r.Name == n || r.ID == n {
				t.Errorf("List still reports %+v", r)
			}
		}
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left:\n%s", n, out)
		}
	}
	ms, err := mounts.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Point, e.dir) {
			t.Errorf("mount left at %s", m.Point)
		}
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		if b, _ := os.ReadFile(f); strings.HasPrefix(string(b), e.dir) {
			t.Errorf("loop device %s left for %s", f, b)
		}
	}
	out, _ = exec.Command("runc", "--root", filepath.Join(e.dir, "runc"), "list", "-q").Output()
	for _, name := range strings.Fields(string(out)) {
		if strings.HasPrefix(name, provision.Prefix) {
			t.Errorf("runc container %s left", name)
		}
	}
}

func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	alice, bob := testutil.RandHex(t, 32), testutil.RandHex(t, 32)

	netA := e.reservation(t, alice, provision.NetworkReservation, &provision.Network{Name: "lan", IPRange: "10.240.0.0/16", Subnet: "10.240.1.0/24"})
	netB := e.reservation(t, bob, provision.NetworkReservation, &provision.Network{Name: "lan", IPRange: "10.240.0.0/16", Subnet: "10.240.1.0/24"})
	vol := e.reservation(t, alice, provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.SSD})
	idA, idB := provision.NetworkID(alice, "lan"), provision.NetworkID(bob, "lan")
	c1 := e.reservation(t, alice, provision.ContainerReservation, e.container(idA, "10.240.1.10", provision.Mount{VolumeID: vol.ID, Mountpoint: "/data"}))
	c2 := e.reservation(t, alice, provision.ContainerReservation, e.container(idA, "10.240.1.11"))
	c3 := e.reservation(t, bob, provision.ContainerReservation, e.container(idB, "10.240.1.12"))
	all := []*provision.Reservation{netA, netB, vol, c1, c2, c3}

	// Provision everything twice: the second round changes nothing.
	results := map[string]map[string]any{}
	for round := range 2 {
		for _, r := range all {
			res, err := e.p.Provision(ctx, r)
			if err != nil {
				t.Fatalf("round %d: Provision %s: %v", round+1, r.ID, err)
			}
			if round == 0 {
				results[r.ID] = asJSON(t, res)
			} else if fmt.Sprint(asJSON(t, res)) != fmt.Sprint(results[r.ID]) {
				t.Fatalf("second Provision of %s = %v, first %v", r.ID, asJSON(t, res), results[r.ID])
			}
		}
	}
	t.Cleanup(func() {
		for _, r := range all {
			e.p.Decommission(context.Background(), r)
		}
	})
	if got := results[netA.ID]; got["network_id"] != idA || got["namespace"] != "prv-"+idA || got["gateway"] != "10.240.1.1/24" {
		t.Fatalf("network result = %v", got)
	}
	volPath := filepath.Join(e.dir, "mounts", "prv-"+vol.ID)
	if got := results[vol.ID]; got["id"] != vol.ID || got["path"] != volPath {
		t.Fatalf("volume result = %v", got)
	}
	if got := results[c1.ID]; got["id"] != c1.ID || got["ip"] != "10.240.1.10" {
		t.Fatalf("container result = %v", got)
	}
	for _, r := range all {
		if err := e.p.Inspect(ctx, r); err != nil {
			t.Fatalf("Inspect %s: %v", r.ID, err)
		}
	}

	if out, err := e.exec(c1.ID, "ping", "-c1", "-W2", "10.240.1.11"); err != nil {
		t.Fatalf("containers of one network cannot ping each other: %v\n%s", err, out)
	}
	if out, err := e.exec(c3.ID, "ping", "-c1", "-W1", "10.240.1.10"); err == nil {
		t.Fatalf("another user's container reached alice's:\n%s", out)
	}
	if out, err := e.exec(c1.ID, "sh", "-c", "echo written-inside > /data/proof && sync"); err != nil {
		t.Fatalf("writing the volume from inside: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(volPath, "proof")); err != nil || string(b) != "written-inside\n" {
		t.Fatalf("host reads %q, %v", b, err)
	}

	// The network cannot go while its containers run.
	if err := e.p.Decommission(ctx, netA); !errors.Is(err, network.ErrBusy) || !provision.IsTemporary(err) {
		t.Fatalf("Decommission of a busy network = %v, want temporary ErrBusy", err)
	}

	// Decommission everything, twice, containers first.
	order := []*provision.Reservation{c1, c2, c3, vol, netA, netB}
	for round := range 2 {
		for _, r := range order {
			if err := e.p.Decommission(ctx, r); err != nil {
				t.Fatalf("round %d: Decommission %s: %v", round+1, r.ID, err)
			}
		}
	}
	for _, r := range all {
		if err := e.p.Inspect(ctx, r); !errors.Is(err, provision.ErrVanished) {
			t.Fatalf("Inspect %s after Decommission = %v, want ErrVanished", r.ID, err)
		}
	}
	assertGone(t, e, "prv-"+idA, "prv-"+idB, vol.ID, c1.ID, c2.ID, c3.ID)
}

func TestContainerRefusesVolumes(t *testing.T) {
	e := newEnv(t)
	alice, bob := testutil.RandHex(t, 32), testutil.RandHex(t, 32)
	bobs := e.reservation(t, bob, provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.HDD})
	net := e.reservation(t, alice, provision.NetworkReservation, &provision.Network{Name: "n", IPRange: "10.241.0.0/24", Subnet: "10.241.0.0/24"})
	tests := []struct {
		name   string
		volume string
		want   error
	}{
		{"volume-of-another-user", bobs.ID, primitives.ErrForeignVolume},
		{"not-a-volume", net.ID, primitives.ErrNotVolume},
		{"unknown-volume", "volume-nope", primitives.ErrUnknownVolume},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.reservation(t, alice, provision.ContainerReservation, e.container("", "", provision.Mount{VolumeID: tc.volume, Mountpoint: "/data"}))
			_, err := e.p.Provision(t.Context(), c)
			if !errors.Is(err, tc.want) || provision.IsTemporary(err) {
				t.Fatalf("Provision = %v, want permanent %v", err, tc.want)
			}
			assertGone(t, e, c.ID)
		})
	}
}

func TestInvalidWorkloadIsPermanent(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name string
		r    *provision.Reservation
		want error
	}{
		{"bad-data", &provision.Reservation{ID: "x", Type: provision.VolumeReservation, Data: []byte(`{"size":`)}, provision.ErrBadData},
		{"memory-too-low", &provision.Reservation{ID: "x", Type: provision.ContainerReservation,
			Data: fmt.Appendf(nil, `{"image":"/i.tar","image_digest":"%s","entrypoint":["sh"],"network":{},"capacity":{"cpu":1,"memory":8}}`, strings.Repeat("a", 64))}, provision.ErrBadSize},
		{"cpu-zero", &provision.Reservation{ID: "x", Type: provision.ContainerReservation,
			Data: fmt.Appendf(nil, `{"image":"/i.tar","image_digest":"%s","entrypoint":["sh"],"network":{},"capacity":{"cpu":0,"memory":64}}`, strings.Repeat("a", 64))}, provision.ErrBadField},
		{"unknown-type", &provision.Reservation{ID: "x", Type: "vm", Data: []byte(`{}`)}, provision.ErrUnknownType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.p.Provision(t.Context(), tc.r)
			if !errors.Is(err, tc.want) || provision.IsTemporary(err) {
				t.Fatalf("Provision = %v, want permanent %v", err, tc.want)
			}
		})
	}
}

// foreignContainer runs a runc container that is not ours, in root, and
// deletes it at cleanup.
func foreignContainer(t testing.TB, e *env, root, name string) {
	t.Helper()
	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", e.image, "-C", rootfs).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v %s", err, out)
	}
	var s specs.Spec
	cfg := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"sleep", "3600"}
	if b, err = json.Marshal(&s); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// A detached container inherits runc's stdio: give it a file, not a
	// pipe that would never be closed.
	log, err := os.Create(filepath.Join(bundle, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", bundle, name)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(log.Name())
		t.Fatalf("runc run %s: %v %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("runc", "--root", root, "delete", "--force", name).CombinedOutput(); err != nil {
			t.Errorf("deleting foreign container: %v %s", err, out)
		}
	})
}

func runcState(root, name string) string {
	out, err := exec.Command("runc", "--root", root, "state", name).Output()
	if err != nil {
		return "absent"
	}
	var st struct{ Status string }
	json.Unmarshal(out, &st)
	return st.Status
}

func TestListAndRemoveOnlyOurs(t *testing.T) {
	e := newEnv(t)
	testutil.RequiresCommand(t, "ip")
	testutil.RequiresCommand(t, "tar")
	ctx := t.Context()
	ourRoot := filepath.Join(e.dir, "runc")
	otherRoot := t.TempDir()
	fns := "foreign-test-" + testutil.RandHex(t, 4)
	if out, err := exec.Command("ip", "netns", "add", fns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", fns).Run() })
	fSame, fOther := "foreign-test-"+testutil.RandHex(t, 4), "foreign-test-"+testutil.RandHex(t, 4)
	foreignContainer(t, e, ourRoot, fSame)
	foreignContainer(t, e, otherRoot, fOther)

	// Orphans of ours: a network, a volume, a container, and a half-made
	// container (its namespace only, as a crash right after attaching leaves it).
	user := testutil.RandHex(t, 32)
	netR := e.reservation(t, user, provision.NetworkReservation, &provision.Network{Name: "orphan", IPRange: "10.242.0.0/24", Subnet: "10.242.0.0/24"})
	volR := e.reservation(t, user, provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.SSD})
	netID := provision.NetworkID(user, "orphan")
	ctrR := e.reservation(t, user, provision.ContainerReservation, e.container(netID, "10.242.0.10"))
	for _, r := range []*provision.Reservation{netR, volR, ctrR} {
		e.provision(t, r)
	}
	half := "half-" + testutil.RandHex(t, 4)
	nets := network.New(zerolog.Nop())
	if _, err := nets.Attach(ctx, netID, half, []byte{10, 242, 0, 11}); err != nil {
		t.Fatal(err)
	}

	res, err := e.p.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]provision.ReservationType{"prv-" + netID: provision.NetworkReservation, "prv-" + volR.ID: provision.VolumeReservation,
		"prv-" + ctrR.ID: provision.ContainerReservation, "prv-" + half: provision.ContainerReservation}
	found := map[string]bool{}
	for _, r := range res {
		if !strings.HasPrefix(r.Name, provision.Prefix) || r.Name != provision.Prefix+r.ID {
			t.Errorf("List reported %+v without our prefix", r)
		}
		if strings.Contains(r.Name, "foreign") {
			t.Errorf("List reported a foreign object %+v", r)
		}
		if typ, ok := want[r.Name]; ok {
			if r.Type != typ {
				t.Errorf("%s listed as %s, want %s", r.Name, r.Type, typ)
			}
			found[r.Name] = true
		}
	}
	if len(found) != len(want) {
		t.Fatalf("List = %+v, want all of %v", res, want)
	}

	for _, bad := range []provision.Resource{
		{Type: provision.ContainerReservation, ID: fSame, Name: fSame},
		{Type: provision.NetworkReservation, ID: fns, Name: fns},
		{Type: provision.ContainerReservation, ID: "../" + fSame, Name: "prv-../" + fSame},
	} {
		if err := e.p.Remove(ctx, bad); !errors.Is(err, primitives.ErrNotOurs) {
			t.Fatalf("Remove(%+v) = %v, want ErrNotOurs", bad, err)
		}
	}
	// Remove the orphans: containers first (the network refuses while they are attached).
	for _, name := range []string{"prv-" + ctrR.ID, "prv-" + half, "prv-" + volR.ID, "prv-" + netID} {
		for _, r := range res {
			if r.Name == name {
				if err := e.p.Remove(ctx, r); err != nil {
					t.Fatalf("Remove %+v: %v", r, err)
				}
			}
		}
	}
	assertGone(t, e, "prv-"+netID, volR.ID, ctrR.ID, half)

	if st := runcState(ourRoot, fSame); st != "running" {
		t.Fatalf("foreign container in our root is %s", st)
	}
	if st := runcState(otherRoot, fOther); st != "running" {
		t.Fatalf("foreign container in another root is %s", st)
	}
	if _, err := os.Stat(filepath.Join(network.NamespaceDir, fns)); err != nil {
		t.Fatalf("foreign namespace touched: %v", err)
	}
}

func TestCrashLoopGivesUp(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	c := e.container("", "")
	c.Entrypoint = []string{"false"}
	r := e.reservation(t, testutil.RandHex(t, 32), provision.ContainerReservation, c)
	e.provision(t, r)
	var err error
	for range container.DefaultMaxExits + 1 {
		deadline := time.Now().Add(10 * time.Second)
		for e.p.Inspect(ctx, r) == nil {
			if time.Now().After(deadline) {
				t.Fatal("container never stopped")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err = e.p.Provision(ctx, r); err != nil {
			break
		}
	}
	if !errors.Is(err, container.ErrCrashLoop) || provision.IsTemporary(err) {
		t.Fatalf("Provision of a crash-looping container = %v, want permanent ErrCrashLoop", err)
	}
	want := fmt.Sprintf("%s: crash-looping: %d exits in %s, the last: exited (code 1)", r.ID, container.DefaultMaxExits+1, container.DefaultExitWindow)
	if len(e.gaveUp) != 1 || !strings.HasPrefix(e.gaveUp[0], want) {
		t.Fatalf("OnGiveUp calls = %q, want [%q]", e.gaveUp, want)
	}
}

// watcher records the inspections the primitives ask for.
type watcher struct{ asked chan string }

func (w watcher) InspectSoon(id string) {
	select {
	case w.asked <- id:
	default:
	}
}

// TestContainerStatus checks the wiring of a container's lifecycle to the
// Engine: its supervisor asks for an inspection when it stops, and
// InspectStatus reports what its policy made of the exit.
func TestContainerStatus(t *testing.T) {
	e := newEnv(t)
	w := watcher{asked: make(chan string, 16)}
	e.p.WatchedBy(w)
	c := e.container("", "")
	c.Entrypoint = []string{"sh", "-c", "sleep 0.5; exit 7"}
	c.Restart = provision.RestartNever
	c.Health = &provision.HealthCheck{Exec: []string{"true"}, Interval: 1}
	r := e.reservation(t, testutil.RandHex(t, 32), provision.ContainerReservation, c)
	first := asJSON(t, e.provision(t, r))
	if first["state"] != "running" || first["health"] != "healthy" {
		t.Fatalf("result data %v, want running and healthy", first)
	}
	select {
	case id := <-w.asked:
		if id != r.ID {
			t.Fatalf("inspection asked for %s, want %s", id, r.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no inspection asked for after the container stopped")
	}
	data, err := e.p.InspectStatus(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	got := asJSON(t, data)
	exit, _ := got["last_exit"].(map[string]any)
	if got["state"] != "exited" || exit == nil || exit["code"] != float64(7) || got["restarts"] != nil {
		t.Fatalf("status %v, want exited with code 7 and no restart", got)
	}
	// A volume reports no status.
	v := e.reservation(t, testutil.RandHex(t, 32), provision.VolumeReservation, &provision.Volume{Size: 1, Type: provision.SSD})
	e.provision(t, v)
	if data, err := e.p.InspectStatus(t.Context(), v); err != nil || data != nil {
		t.Fatalf("InspectStatus of a volume = %v, %v", data, err)
	}
}
