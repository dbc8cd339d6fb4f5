package reliability

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/moby/sys/mountinfo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// faultyExplorer stands between a node and explorerd and answers as told:
// it passes requests through, or fails them in one of its modes.
type faultyExplorer struct {
	srv   *httptest.Server
	proxy *httputil.ReverseProxy

	mu     sync.Mutex
	mode   string
	counts map[string]*atomic.Int64 // mode → requests it failed
}

// The modes of a faultyExplorer: "pass" forwards everything; "all-404"
// and "all-500" answer every request so; "events-404", "events-500",
// "events-garbage" (200 with a truncated body) and "events-reset" (the
// connection closed without an answer) fail only the long-poll and pass
// registration, results and stats.
var faultModes = []string{"all-404", "all-500", "events-404", "events-500", "events-garbage", "events-reset"}

func newFaultyExplorer(t testing.TB, target string) *faultyExplorer {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	f := &faultyExplorer{proxy: httputil.NewSingleHostReverseProxy(u), mode: "pass", counts: map[string]*atomic.Int64{}}
	f.proxy.ErrorLog = log.New(io.Discard, "", 0) // a killed node leaves requests cut off
	for _, m := range faultModes {
		f.counts[m] = new(atomic.Int64)
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *faultyExplorer) URL() string { return f.srv.URL }

func (f *faultyExplorer) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	f.mu.Unlock()
}

// failed returns how many requests mode has failed.
func (f *faultyExplorer) failed(mode string) int64 { return f.counts[mode].Load() }

func (f *faultyExplorer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	mode := f.mode
	f.mu.Unlock()
	events := strings.HasSuffix(r.URL.Path, "/events")
	if mode == "pass" || (strings.HasPrefix(mode, "events-") && !events) {
		f.proxy.ServeHTTP(w, r)
		return
	}
	f.counts[mode].Add(1)
	switch mode {
	case "all-404", "events-404":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintln(w, `{"error":"server: unknown node"}`)
	case "all-500", "events-500":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintln(w, `{"error":"internal error"}`)
	case "events-garbage":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"events":[{"seq":`)
	case "events-reset":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// plant creates objects on the machine beside a stopped node and removes
// them when the test ends.
type plant struct {
	t    *testing.T
	node *harness.Node
}

func (p plant) netns(name string) string {
	p.t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		p.t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	p.t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
			_ = exec.Command("ip", "netns", "delete", name).Run()
		}
	})
	return name
}

// image creates a sparse ext4 image at path; with mountAt set it also
// attaches it to a loop device and mounts it there, as a volume whose
// provisioning was cut off after the mount.
func (p plant) image(path, mountAt string) {
	p.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		p.t.Fatal(err)
	}
	f, err := os.Create(path)
	if err == nil {
		err = f.Truncate(64 << 20)
		f.Close()
	}
	if err != nil {
		p.t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		p.t.Fatalf("mkfs.ext4 %s: %v: %s", path, err, out)
	}
	if mountAt == "" {
		return
	}
	out, err := exec.Command("losetup", "--find", "--show", path).Output()
	if err != nil {
		p.t.Fatalf("losetup %s: %v", path, err)
	}
	dev := strings.TrimSpace(string(out))
	p.t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	if err := os.MkdirAll(mountAt, 0o700); err != nil {
		p.t.Fatal(err)
	}
	if err := syscall.Mount(dev, mountAt, "ext4", 0, ""); err != nil {
		p.t.Fatalf("mounting %s on %s: %v", dev, mountAt, err)
	}
	p.t.Cleanup(func() { _ = syscall.Unmount(mountAt, syscall.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mountAt, "data"), []byte(path), 0o600); err != nil {
		p.t.Fatal(err)
	}
}

// container runs `sleep 3600` from the busybox image as runc container
// name under the node's runc root.
func (p plant) container(image, name string) {
	p.t.Helper()
	bundle := p.t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", image, "-C", rootfs).CombinedOutput(); err != nil {
		p.t.Fatalf("tar: %v %s", err, out)
	}
	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		p.t.Fatalf("runc spec: %v %s", err, out)
	}
	cfg := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		p.t.Fatal(err)
	}
	s.Process.Terminal = false
	s.Process.Args = []string{"sleep", "3600"}
	if b, err = json.Marshal(&s); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(cfg, b, 0o644); err != nil {
		p.t.Fatal(err)
	}
	// A detached container inherits runc's stdio: a file, not a pipe that
	// would never close.
	out, err := os.Create(filepath.Join(bundle, "log"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer out.Close()
	root := runcRoot(p.node)
	cmd := exec.Command("runc", "--root", root, "run", "--detach", "--bundle", bundle, name)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		p.t.Fatalf("runc run %s: %v %s", name, err, b)
	}
	p.t.Cleanup(func() { _ = exec.Command("runc", "--root", root, "delete", "--force", name).Run() })
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestSafeCleanup plants, beside a stopped node, orphans of ours (a network
// and a container namespace, a mounted volume left by a cut-off provision,
// the image of a deleted volume, a runc container) and foreign objects (a
// namespace, a look-alike namespace, a runc container in the node's own
// root, an image with its loop device and mount, a prefixed file that is
// not a volume), then starts it against an explorer that answers 404, 500,
// garbage or drops the connection, with a restart for each: through all of
// it nothing is removed. Once the explorer answers and the node caught up,
// exactly our orphans are removed; the foreign objects, the live
// workloads (same namespace, same container process, same volume data),
// the identity and the database stay.
func TestSafeCleanup(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	testutil.RequiresCommand(t, "mkfs.ext4")
	image, digest := fixture.Busybox(t)

	var fe *faultyExplorer
	s := harness.Start(t, harness.SetupOptions{Via: func(ex string) string { fe = newFaultyExplorer(t, ex); return fe.URL() }})
	node, user, nodeID := s.Node, s.User, s.NodeID
	purgeOnCleanup(t, node)

	// Live workloads, and a volume deleted again.
	vol := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h")
	net := user.Reserve(t, "network", "--node", nodeID, "--name", "cleanup", "--ip-range", "10.247.0.0/16", "--subnet", "10.247.1.0/24", "--duration", "1h")
	ctr := user.Reserve(t, "container", "--node", nodeID, "--image", image, "--image-digest", digest,
		"--entrypoint", "/bin/sleep", "--entrypoint", "3600", "--network", "cleanup", "--ip", "10.247.1.10",
		"--mount", vol+":/data", "--cpu", "1", "--memory", "32", "--disk", "64", "--duration", "1h")
	gone := user.Reserve(t, "volume", "--node", nodeID, "--size", "1", "--duration", "1h")
	var volPath string
	for _, id := range []string{vol, net, ctr, gone} {
		res := user.WaitResult(t, id, provision.StateOk, converge)
		if id == vol {
			var d struct{ Path string }
			if err := json.Unmarshal(res.Data, &d); err != nil || d.Path == "" {
				t.Fatalf("volume result data %s: %v", res.Data, err)
			}
			volPath = d.Path
		}
	}
	if _, err := user.Run(t, "delete", gone); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, gone, provision.StateDeleted, converge)
	settled(t, node, converge)
	if err := os.WriteFile(filepath.Join(volPath, "keep"), []byte(vol), 0o600); err != nil {
		t.Fatal(err)
	}
	recs := records(t, node)
	netNS := filepath.Join("/run/netns", provision.Prefix+provision.NetworkID(recs[net].Reservation.UserID, "cleanup"))
	liveNetIno, err := inode(netNS)
	if err != nil {
		t.Fatal(err)
	}
	liveCtr := runcList(t, runcRoot(node))[provision.Prefix+ctr]
	if liveCtr.Status != "running" {
		t.Fatalf("live container: %+v", liveCtr)
	}
	idPath := filepath.Join(dataDir(node), "identity.key")
	idSum := fileSum(t, idPath)
	node.Stop(t)

	// Orphans of ours.
	p := plant{t: t, node: node}
	ssd := filepath.Join(dataDir(node), "volumes", "ssd")
	orphanVol := "orphan-" + testutil.RandHex(t, 4)
	orphanNet := p.netns(provision.Prefix + testutil.RandHex(t, 8))
	orphanCtrNS := p.netns(provision.Prefix + "c-orphan-" + testutil.RandHex(t, 4))
	orphanCtr := provision.Prefix + "orphan-" + testutil.RandHex(t, 4)
	p.image(filepath.Join(ssd, provision.Prefix+orphanVol+".img"), filepath.Join(dataDir(node), "mounts", provision.Prefix+orphanVol))
	p.image(volumeImage(node, gone), "")
	p.container(image, orphanCtr)
	ours := map[string]func() bool{
		"network namespace " + orphanNet:     func() bool { return exists(filepath.Join("/run/netns", orphanNet)) },
		"container namespace " + orphanCtrNS: func() bool { return exists(filepath.Join("/run/netns", orphanCtrNS)) },
		"volume image " + orphanVol:          func() bool { return exists(filepath.Join(ssd, provision.Prefix+orphanVol+".img")) },
		"volume mount " + orphanVol:          func() bool { return mounted(t, filepath.Join(dataDir(node), "mounts", provision.Prefix+orphanVol)) },
		"volume loop device " + orphanVol:    func() bool { return loopOf(t, node, filepath.Join(ssd, provision.Prefix+orphanVol+".img")) },
		"deleted volume's image " + gone:     func() bool { return exists(volumeImage(node, gone)) },
		"runc container " + orphanCtr:        func() bool { _, ok := runcList(t, runcRoot(node))[orphanCtr]; return ok },
	}
	// Foreign objects, and what is ours and live.
	foreignNS := p.netns("foreign-" + testutil.RandHex(t, 4))
	lookalikeNS := p.netns(provision.Prefix + "zz-" + testutil.RandHex(t, 4))
	underscoreNS := p.netns("prv_" + testutil.RandHex(t, 8))
	foreignCtr := "foreign-" + testutil.RandHex(t, 4)
	p.container(image, foreignCtr)
	foreignImg := filepath.Join(ssd, "foreign.img")
	foreignMnt := filepath.Join(dataDir(node), "mounts", "foreign")
	p.image(foreignImg, foreignMnt)
	notVolume := filepath.Join(ssd, provision.Prefix+"notes.txt")
	if err := os.WriteFile(notVolume, []byte("not a volume"), 0o600); err != nil {
		t.Fatal(err)
	}
	theirs := map[string]func() bool{
		"foreign namespace":               func() bool { return exists(filepath.Join("/run/netns", foreignNS)) },
		"look-alike namespace":            func() bool { return exists(filepath.Join("/run/netns", lookalikeNS)) },
		"prv_ namespace":                  func() bool { return exists(filepath.Join("/run/netns", underscoreNS)) },
		"foreign runc container":          func() bool { return runcList(t, runcRoot(node))[foreignCtr].Status == "running" },
		"foreign image":                   func() bool { return exists(foreignImg) },
		"foreign mount":                   func() bool { return mounted(t, foreignMnt) && exists(filepath.Join(foreignMnt, "data")) },
		"foreign loop device":             func() bool { return loopOf(t, node, foreignImg) },
		"prefixed file that is no volume": func() bool { return exists(notVolume) },
		"identity":                        func() bool { return exists(idPath) && fileSum(t, idPath) == idSum },
		"database":                        func() bool { return exists(filepath.Join(dataDir(node), "provisiond.db")) },
		"live volume data": func() bool {
			b, err := os.ReadFile(filepath.Join(volPath, "keep"))
			return err == nil && string(b) == vol
		},
		"live network namespace": func() bool { ino, err := inode(netNS); return err == nil && ino == liveNetIno },
		"live container process": func() bool {
			c := runcList(t, runcRoot(node))[provision.Prefix+ctr]
			return c.Status == "running" && c.Pid == liveCtr.Pid
		},
	}
	check := func(when string, wantOurs bool) {
		t.Helper()
		for what, ok := range ours {
			if ok() != wantOurs {
				t.Errorf("%s: orphan %s exists: %t, want %t", when, what, !wantOurs, wantOurs)
			}
		}
		for what, ok := range theirs {
			if !ok() {
				t.Errorf("%s: %s is gone or changed", when, what)
			}
		}
	}
	check("planted", true)

	// The explorer answers errors, one kind per start: nothing goes.
	for _, mode := range faultModes {
		fe.set(mode)
		node.Start(t)
		harness.Eventually(t, converge, mode+" answers", func() error {
			if n := fe.failed(mode); n < 3 {
				return fmt.Errorf("%d failed requests", n)
			}
			return nil
		})
		st, err := statusOf(t, node)
		if err != nil {
			t.Fatal(err)
		}
		if st.CaughtUp {
			t.Errorf("%s: the node says it caught up", mode)
		}
		check("explorer answering "+mode, true)
		t.Logf("%s: %d failed requests; last poll error %q", mode, fe.failed(mode), st.LastPollError)
		if mode != faultModes[len(faultModes)-1] {
			node.Kill() // as a crash would: the next start sees all of it again
		}
	}

	// The explorer answers: the node catches up and removes our orphans.
	fe.set("pass")
	settled(t, node, converge)
	harness.Eventually(t, converge, "orphans removed", func() error {
		for what, ok := range ours {
			if ok() {
				return fmt.Errorf("orphan %s still exists", what)
			}
		}
		return nil
	})
	check("after the cleanup", false)
	recs = records(t, node)
	for _, id := range []string{vol, net, ctr} {
		if recs[id].State != provision.Deployed {
			t.Errorf("live %s is %s", id, recs[id].State)
		}
	}
	for _, o := range orphans(t, node, recs) {
		if !strings.Contains(o, "foreign") { // planted above, not ours
			t.Errorf("runtime object without a live record: %s", o)
		}
	}
	node.Stop(t)
	checkDatabase(t, node)
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// mounted reports whether path is a mount point.
func mounted(t testing.TB, path string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(path))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// loopOf reports whether a loop device is backed by path.
func loopOf(t testing.TB, n *harness.Node, path string) bool {
	t.Helper()
	for _, b := range loopsUnder(t, n.Dir) {
		if b == path {
			return true
		}
	}
	return false
}
