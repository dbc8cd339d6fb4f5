package systemdtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/testutil"
)

// releaseCommit is today's release: the upgrade starts from its binaries.
const releaseCommit = "772db0b"

var (
	updateGolden = flag.Bool("update-golden", false, "write the database the release wrote to cache/testdata/release-"+releaseCommit+".db")
	cycles       = flag.Int("cycles", 20, "restarts, and SIGKILLs, while the containers run")
)

// The lab network and its two containers: a reaches b's web server and
// logs every try into its volume.
const (
	subnet = "10.240.1.0/24"
	ipA    = "10.240.1.10"
	ipB    = "10.240.1.11"
	ipC    = "10.240.1.12"
)

func TestProvisiondUnderSystemd(t *testing.T) {
	if os.Getenv("PROVISIOND_SYSTEMD_TEST") == "" {
		t.Skip("skipping: boots systemd in a container; run `make systemd-test` (sets PROVISIOND_SYSTEMD_TEST=1)")
	}
	testutil.RequiresRoot(t)
	for _, c := range []string{"systemd-nspawn", "mmdebstrap", "nsenter", "git", "make", "mount"} {
		testutil.RequiresCommand(t, c)
	}
	began := time.Now()
	repo := repoRoot(t)
	lower := rootfs(t, repo)
	release := buildRelease(t, repo)
	faulthook := buildFaultHook(t, repo)
	image, digest := busyboxImage(t)

	n := boot(t, lower)
	n.setup(t, release, image)
	lab := &lab{n: n, digest: digest, log: "reach.log"}

	t.Run("release-deploys", func(t *testing.T) { lab.releaseDeploys(t) })
	if t.Failed() {
		t.FailNow()
	}
	t.Run("upgrade-adopts", func(t *testing.T) { lab.upgrade(t, repo) })
	if t.Failed() {
		t.FailNow()
	}
	t.Run("new-container-isolated", func(t *testing.T) { lab.newContainer(t) })
	if t.Failed() {
		t.FailNow()
	}
	t.Run("restarts", func(t *testing.T) { lab.restarts(t) })
	t.Run("kills", func(t *testing.T) { lab.kills(t) })
	t.Run("reload", func(t *testing.T) { lab.reload(t) })
	t.Run("journal-json", func(t *testing.T) { lab.journal(t) })
	if out, err := exec.Command("cp", faulthook, filepath.Join(n.root, "usr/local/bin/provisiond-faulthook")).CombinedOutput(); err != nil {
		t.Fatalf("installing the fault-hook build: %v: %s", err, out)
	}
	t.Run("watchdog-spares-busy", func(t *testing.T) { lab.watchdogBusy(t) })
	t.Run("watchdog-restarts-stuck", func(t *testing.T) { lab.watchdogStuck(t) })
	t.Logf("systemd test done in %s", time.Since(began).Round(time.Second))
}

// buildRelease builds the release's binaries from its commit (git
// archive: the clone's history has it) and returns their directory.
func buildRelease(t *testing.T, repo string) string {
	t.Helper()
	began := time.Now()
	dir := filepath.Join(t.TempDir(), "release")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tarball := dir + ".tar"
	if out, err := exec.Command("git", "-C", repo, "archive", "--format=tar", "--output="+tarball, releaseCommit).CombinedOutput(); err != nil {
		t.Fatalf("git archive %s (is the clone shallow? fetch its history): %v: %s", releaseCommit, err, out)
	}
	if out, err := exec.Command("tar", "-x", "-f", tarball, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpacking the release: %v: %s", err, out)
	}
	cmd := exec.CommandContext(t.Context(), "make", "-C", dir, "build", "VERSION="+releaseCommit, "COMMIT="+releaseCommit)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the release %s: %v\n%s", releaseCommit, err, out)
	}
	t.Logf("release %s built in %s", releaseCommit, time.Since(began).Round(time.Millisecond))
	return filepath.Join(dir, "bin")
}

// buildFaultHook builds provisiond with the faulthook tag: the test-only
// build whose primitives can be made stuck or slow.
func buildFaultHook(t *testing.T, repo string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "provisiond-faulthook")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-tags", "faulthook", "-trimpath", "-o", out, "./cmd/provisiond")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the fault-hook provisiond: %v\n%s", err, b)
	}
	return out
}

// busyboxImage is the containers' image: the fixture's busybox with a web
// server and nc.
func busyboxImage(t *testing.T) (string, string) {
	t.Helper()
	for _, a := range []string{"httpd", "nc", "printf"} {
		if !slices.Contains(fixture.Applets, a) {
			fixture.Applets = append(fixture.Applets, a)
		}
	}
	return fixture.Busybox(t)
}

// setup installs the release's binaries with this tree's units (the
// release runs under the unit it will be upgraded under), the lab's
// configuration and the image.
func (n *node) setup(t *testing.T, release, image string) {
	t.Helper()
	for _, b := range []string{"provisiond", "explorerd", "provctl"} {
		if out, err := exec.Command("install", "-D", "-m", "0755", filepath.Join(release, b), filepath.Join(n.root, "usr/local/bin", b)).CombinedOutput(); err != nil {
			t.Fatalf("installing the release's %s: %v: %s", b, err, out)
		}
	}
	repo := repoRoot(t)
	for _, u := range []string{"provisiond.service", "explorerd.service"} {
		b, err := os.ReadFile(filepath.Join(repo, "systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		n.write(t, "/etc/systemd/system/"+u, string(b), 0o644)
	}
	b, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	n.write(t, "/srv/images/busybox.tar", string(b), 0o644)
	n.write(t, "/etc/default/provisiond", "PROVISIOND_EXPLORER=http://127.0.0.1:8090\nPROVISIOND_LOCAL_IMAGES=/srv/images\n", 0o644)
	// nspawn mounts the cgroup v1 controllers read-only (rooted at the
	// test's cgroups): runc needs them writable. They are made so before
	// the daemon starts, in the container's root mount namespace, which
	// the daemon shares.
	var mounts strings.Builder
	for _, c := range controllers {
		fmt.Fprintf(&mounts, "ExecStart=/bin/mount -o remount,bind,rw /sys/fs/cgroup/%s\n", c)
	}
	n.write(t, "/etc/systemd/system/lab-cgroups.service", "[Unit]\nDescription=lab: writable cgroup v1 controllers for runc\n\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"+mounts.String(), 0o644)
	n.write(t, "/etc/systemd/system/provisiond.service.d/10-lab.conf", "[Unit]\nRequires=lab-cgroups.service\nAfter=lab-cgroups.service explorerd.service\n", 0o644)
	n.must(t, "systemctl daemon-reload && systemctl start explorerd")
}

// lab holds what the test deployed.
type lab struct {
	n      *node
	digest string
	node   string   // node ID
	net    string   // network reservation
	vol    string   // volume reservation
	a, b   string   // containers: a mounts the volume and reaches b
	log    string   // the file in the volume a logs its tries to
	base   snapshot // what the host showed once everything ran
	seq    int      // last line of a's log seen
	extra  []string // reservations deployed by the busy watchdog phase
}

// snapshot is what the container's host namespace shows of the workloads.
type snapshot struct {
	pids   map[string]int    // container id → PID of its process
	loops  map[string]string // volume image → its one loop device
	mounts []string          // "point fstype" of every prv- mount, sorted
}

// releaseDropIn runs the release without sd_notify: under Type=notify
// its containers never start (it hands systemd's NOTIFY_SOCKET to runc,
// which then waits for the container's READY=1), so the release cannot
// deploy a container under its own unit at all. Without NOTIFY_SOCKET it
// can; the upgrade starts from there.
const releaseDropIn = "/etc/systemd/system/provisiond.service.d/20-release.conf"

func (l *lab) releaseDeploys(t *testing.T) {
	n := l.n
	n.write(t, releaseDropIn, "[Service]\nType=simple\nNotifyAccess=none\nWatchdogSec=0\n", 0o644)
	n.must(t, "systemctl daemon-reload && systemctl start provisiond")
	eventually(t, 30*time.Second, "the release ready", func() error {
		_, err := n.sh(t, "provisiond status --json | grep -q '\"running\": *true'")
		return err
	})
	if v := n.must(t, "provisiond version"); !strings.Contains(v, releaseCommit) {
		t.Fatalf("installed provisiond is %q, want the release %s", v, releaseCommit)
	}
	var key struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal([]byte(n.must(t, "provisiond key show --json")), &key); err != nil {
		t.Fatal(err)
	}
	l.node = key.NodeID
	n.must(t, "provctl key new")
	reserve := func(args string) string {
		return strings.TrimSpace(n.must(t, "provctl reserve "+args+" --node "+l.node+" --duration 24h"))
	}
	l.net = reserve("network --name lab --ip-range 10.240.0.0/16 --subnet " + subnet)
	l.vol = reserve("volume --size 1 --type ssd")
	l.b = reserve(fmt.Sprintf("container --image /srv/images/busybox.tar --image-digest %s --network lab --ip %s --cpu 1 --memory 64 --disk 256"+
		" --entrypoint /bin/sh --entrypoint -c --entrypoint 'mkdir -p /www && echo pong > /www/index.html && exec httpd -f -p 8080 -h /www'", l.digest, ipB))
	// (busybox's static wget crashes with -T; nc -w bounds each try.) b's
	// httpd may start listening a moment after b is deployed, so a waits
	// for the first answer before it logs its tries.
	loop := fmt.Sprintf(`until printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 %[1]s 8080 | grep -q pong; do sleep 0.1; done; i=0; while :; do i=$((i+1)); if printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 %[1]s 8080 | grep -q pong; then r=ok; else r=fail; fi; echo "$i $r" >> /data/reach.log; sleep 0.2; done`, ipB)
	l.a = reserve(fmt.Sprintf("container --image /srv/images/busybox.tar --image-digest %s --network lab --ip %s --cpu 1 --memory 64 --disk 256"+
		" --mount %s:/data --entrypoint /bin/sh --entrypoint -c --entrypoint '%s'", l.digest, ipA, l.vol, loop))
	for _, id := range []string{l.net, l.vol, l.b, l.a} {
		n.must(t, "provctl watch "+id+" --until ok --timeout 2m --interval 200ms")
	}
	l.seq = l.reach(t, 0)
	l.base = l.snapshot(t)
	if len(l.base.pids) != 2 || len(l.base.loops) != 1 {
		t.Fatalf("after deploying: %+v, want 2 containers and 1 volume", l.base)
	}
	t.Logf("deployed with the release: network %s, volume %s, containers %s %s; host shows %d mounts: %v", l.net, l.vol, l.a, l.b, len(l.base.mounts), l.base.mounts)
}

// upgrade stops the release, installs this tree with `make install` and
// starts it: every workload is adopted as it runs, nothing is provisioned
// again, no record changes.
func (l *lab) upgrade(t *testing.T, repo string) {
	n := l.n
	before := l.records(t)
	n.must(t, "systemctl stop provisiond")
	db := filepath.Join(n.dir, "data", "provisiond.db")
	if *updateGolden {
		golden := filepath.Join(repo, "cache", "testdata", "release-"+releaseCommit+".db")
		if out, err := exec.Command("cp", db, golden).CombinedOutput(); err != nil {
			t.Fatalf("updating %s: %v: %s", golden, err, out)
		}
		t.Logf("wrote %s", golden)
	}
	began := time.Now()
	cmd := exec.CommandContext(t.Context(), "make", "-C", repo, "install", "DESTDIR="+n.root, "PREFIX=/usr/local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	t.Logf("make install into the container in %s", time.Since(began).Round(time.Millisecond))
	if err := os.Remove(filepath.Join(n.root, releaseDropIn)); err != nil {
		t.Fatal(err)
	}
	n.must(t, "systemctl daemon-reload")
	since := n.must(t, "date '+%Y-%m-%d %H:%M:%S'")
	l.start(t, "start")
	if v := n.must(t, "provisiond version"); strings.Contains(v, releaseCommit) {
		t.Fatalf("provisiond is still the release after make install: %q", v)
	}
	// Type=notify: systemd saw the unit started only once the daemon said
	// it was ready.
	started := n.must(t, "journalctl -u provisiond --since '"+strings.TrimSpace(since)+"' -o cat")
	ready, active := strings.Index(started, "recovery done; ready"), strings.Index(started, "Started provisiond.service")
	if ready < 0 || active < 0 || ready > active {
		t.Fatalf("journal of the start: ready at %d, started at %d, want ready first:\n%s", ready, active, started)
	}
	l.check(t)
	// Let the start's inspections run, then nothing may have changed.
	eventually(t, 30*time.Second, "inspections after the upgrade", func() error {
		out := n.mustNoFail(t, "journalctl -u provisiond --since '"+strings.TrimSpace(since)+"' -o cat | grep -c 'engine state recovered' || true")
		if strings.TrimSpace(out) == "0" {
			return fmt.Errorf("no recovery logged yet")
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	after := l.records(t)
	if !maps.Equal(before, after) {
		for id, rec := range after {
			if before[id] != rec {
				t.Errorf("record %s changed across the upgrade:\nbefore %s\nafter  %s", id, before[id], rec)
			}
		}
	}
	logs := n.must(t, "journalctl -u provisiond --since '"+strings.TrimSpace(since)+"' -o cat")
	for _, bad := range []string{"vanished", "repair", "orphan resource removed", "container started"} {
		if strings.Contains(logs, bad) {
			t.Errorf("the upgraded daemon logged %q: something was provisioned again:\n%s", bad, logs)
		}
	}
	l.check(t)
}

// newContainer replaces container a, made by the release, with one the
// upgraded daemon makes under the unit: it gets this release's isolation
// (its own user namespace mapped to unprivileged host uids, the seccomp
// profile, a disk of its own, the volume mounted idmapped, so the files
// a wrote as root are its root's) and goes on reaching b and logging into
// the same volume (a file of its own in the directory a made as host
// root). The restarts and kills that follow check it as they
// checked a.
func (l *lab) newContainer(t *testing.T) {
	n := l.n
	n.must(t, "provctl delete "+l.a)
	n.must(t, "provctl watch "+l.a+" --until deleted --timeout 2m --interval 200ms")
	l.log = "reach-c.log"
	loop := fmt.Sprintf(`echo "uid $(id -u)"; until printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 %[1]s 8080 | grep -q pong; do sleep 0.1; done; i=0; while :; do i=$((i+1)); if printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 %[1]s 8080 | grep -q pong; then r=ok; else r=fail; fi; echo "$i $r" >> /data/%[2]s; sleep 0.2; done`, ipB, l.log)
	c := strings.TrimSpace(n.must(t, fmt.Sprintf("provctl reserve container --node %s --duration 24h --image /srv/images/busybox.tar --image-digest %s --network lab --ip %s --cpu 1 --memory 64 --disk 64"+
		" --mount %s:/data --entrypoint /bin/sh --entrypoint -c --entrypoint '%s'", l.node, l.digest, ipC, l.vol, loop)))
	// A failed container's log goes with its record: keep a copy for the
	// failure message (runc's own error is there).
	n.must(t, "nohup sh -c 'for i in $(seq 300); do cp /var/lib/provisiond/logs/prv-"+c+".log /tmp/c.log 2>/dev/null; sleep 0.05; done' >/dev/null 2>&1 &")
	if out, err := n.sh(t, "provctl watch "+c+" --until ok --timeout 2m --interval 200ms"); err != nil {
		t.Fatalf("the new container: %v: %s\nits log:\n%s", err, out, n.mustNoFail(t, "cat /tmp/c.log"))
	}
	l.a = c
	l.seq = l.reach(t, 0)
	if out := n.must(t, "cat /var/lib/provisiond/logs/prv-"+c+".log"); !strings.Contains(out, "uid 0") {
		t.Fatalf("the new container's log: %q, want its uid 0", out)
	}
	status := n.must(t, "pid=$(runc --root /var/lib/provisiond/runc state prv-"+c+" | sed -n 's/.*\"pid\": *\\([0-9]*\\).*/\\1/p'); grep -E '^(Uid|Seccomp|NoNewPrivs):' /proc/$pid/status")
	fields := map[string][]string{}
	for line := range strings.Lines(status) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.Fields(v)
		}
	}
	if uid := fields["Uid"]; len(uid) == 0 {
		t.Fatalf("no Uid line in the container's status: %q", status)
	} else if host, err := strconv.Atoi(uid[0]); err != nil || host < 1<<16 {
		t.Fatalf("the new container's root runs as host uid %q, want one of an unprivileged range", uid[0])
	}
	if fields["Seccomp"] == nil || fields["Seccomp"][0] != "2" {
		t.Fatalf("the new container has no seccomp filter: %q", status)
	}
	l.base = l.snapshot(t)
	l.check(t)
	t.Logf("container %s replaced a: %s; host mounts now %v", c, strings.Join(strings.Fields(status), " "), l.base.mounts)
}

// records returns `provisiond cache export`, by id.
func (l *lab) records(t *testing.T) map[string]string {
	t.Helper()
	out := l.n.must(t, "provisiond cache export")
	recs := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r struct {
			Reservation struct {
				ID string `json:"id"`
			} `json:"reservation"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("cache export line %q: %v", sc.Text(), err)
		}
		recs[r.Reservation.ID] = sc.Text()
	}
	return recs
}

// start runs `systemctl <verb> provisiond`, which returns once the daemon
// said READY (Type=notify), and checks at once that it is ready: active,
// and its admin socket reports the engine running.
func (l *lab) start(t *testing.T, verb string) {
	t.Helper()
	n := l.n
	n.must(t, "systemctl "+verb+" provisiond")
	if s := strings.TrimSpace(n.mustNoFail(t, "systemctl is-active provisiond")); s != "active" {
		t.Fatalf("after systemctl %s: %s", verb, s)
	}
	l.ready(t)
}

// ready checks the daemon answers on its admin socket with the engine
// running: what READY promises.
func (l *lab) ready(t *testing.T) {
	t.Helper()
	var st struct {
		Running bool `json:"running"`
	}
	out, err := l.n.sh(t, "provisiond status --json")
	if err == nil {
		err = json.Unmarshal([]byte(out), &st)
	}
	if err != nil || !st.Running {
		t.Fatalf("daemon active but not ready: %v %s", err, out)
	}
}

// snapshot reads what the host namespace of the container shows.
func (l *lab) snapshot(t *testing.T) snapshot {
	t.Helper()
	n := l.n
	s := snapshot{pids: map[string]int{}, loops: map[string]string{}}
	for _, id := range []string{l.a, l.b} {
		var st struct {
			Pid    int    `json:"pid"`
			Status string `json:"status"`
		}
		out := n.must(t, "runc --root /var/lib/provisiond/runc state prv-"+id)
		if err := json.Unmarshal([]byte(out), &st); err != nil || st.Status != "running" {
			t.Fatalf("container %s: %v %s", id, err, out)
		}
		s.pids[id] = st.Pid
	}
	imgs, _ := filepath.Glob(filepath.Join(n.dir, "data", "volumes", "*", "prv-*.img"))
	for _, img := range imgs {
		inside := "/var/lib/provisiond/" + strings.TrimPrefix(img, filepath.Join(n.dir, "data")+"/")
		devs := strings.Fields(n.must(t, "losetup -n -O NAME -j "+inside))
		if len(devs) != 1 {
			t.Fatalf("image %s is attached to %d loop devices %v, want exactly one", inside, len(devs), devs)
		}
		s.loops[inside] = devs[0]
	}
	table, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", n.leader))
	if err != nil {
		t.Fatal(err)
	}
	mounts, err := mountinfo.GetMountsFromReader(table, nil)
	table.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A namespace's bind mount shows twice, as iproute2 makes them: once
	// on the shared /run/netns mount and once, propagated, on /run below
	// it (one peer group, one namespace). It counts once per namespace;
	// every other mount counts each time it appears.
	seen := map[string]map[string]bool{}
	for _, m := range mounts {
		if !strings.Contains(m.Mountpoint, "/prv-") {
			continue
		}
		key := m.Mountpoint + " " + m.FSType
		if seen[key] == nil {
			seen[key] = map[string]bool{}
		}
		which := strconv.Itoa(m.ID)
		if m.FSType == "nsfs" {
			which = m.Root // the namespace, net:[inode]
		}
		seen[key][which] = true
	}
	for m, which := range seen {
		if len(which) != 1 {
			t.Errorf("%s is mounted %d times in the host namespace, want once: %v", m, len(which), slices.Collect(maps.Keys(which)))
		}
		s.mounts = append(s.mounts, m)
	}
	slices.Sort(s.mounts)
	return s
}

// check proves the workloads are untouched and working: the same
// container processes, the same one loop device per image, every mount
// and namespace visible in the host namespace (once), the daemon in that
// namespace, container a still reaching b (every try since the last
// check succeeded, and at least two new ones) and writing to its volume,
// and a raw ping from a to b.
func (l *lab) check(t *testing.T) {
	t.Helper()
	n := l.n
	now := l.snapshot(t)
	if !maps.Equal(now.pids, l.base.pids) {
		t.Fatalf("container processes changed: %v, were %v", now.pids, l.base.pids)
	}
	if !maps.Equal(now.loops, l.base.loops) {
		t.Fatalf("loop devices changed: %v, were %v", now.loops, l.base.loops)
	}
	if !slices.Equal(now.mounts, l.base.mounts) {
		t.Fatalf("host namespace mounts changed:\nnow  %v\nwere %v", now.mounts, l.base.mounts)
	}
	want := []string{"prv-" + l.vol + " ext4", "/run/netns/prv-c-" + l.a + " nsfs", "/run/netns/prv-c-" + l.b + " nsfs"}
	for _, w := range want {
		if !slices.ContainsFunc(now.mounts, func(m string) bool { return strings.HasSuffix(m, w) }) {
			t.Fatalf("host namespace lacks a mount ending in %q: %v", w, now.mounts)
		}
	}
	for _, id := range []string{l.a, l.b} { // the root filesystem: in the bundle (the release) or in the run directory
		if !slices.ContainsFunc(now.mounts, func(m string) bool {
			return strings.HasSuffix(m, "prv-"+id+"/rootfs overlay") || strings.HasSuffix(m, "/rootfs/prv-"+id+" overlay")
		}) {
			t.Fatalf("host namespace lacks container %s's root filesystem: %v", id, now.mounts)
		}
	}
	if nets := slices.DeleteFunc(slices.Clone(now.mounts), func(m string) bool {
		return !strings.HasPrefix(m, "/run/netns/prv-") || strings.HasPrefix(m, "/run/netns/prv-c-")
	}); len(nets) != 1+len(l.extra) {
		t.Fatalf("network namespaces in the host namespace: %v, want the lab's and %d more", nets, len(l.extra))
	}
	ns := strings.Fields(n.must(t, "pid=$(systemctl show -p MainPID --value provisiond); readlink /proc/1/ns/mnt /proc/$pid/ns/mnt /proc/1/ns/net /proc/$pid/ns/net"))
	if len(ns) != 4 || ns[0] != ns[1] || ns[2] != ns[3] {
		t.Fatalf("daemon's namespaces differ from the host's (PID 1): %v", ns)
	}
	l.seq = l.reach(t, l.seq)
	// A raw ping from a's network namespace (runc 1.1 cannot exec into a
	// container with a user namespace in a network namespace of the node's).
	if out, err := n.sh(t, "ip netns exec prv-c-"+l.a+" ping -c1 -W2 "+ipB); err != nil {
		t.Fatalf("a cannot ping b: %v\n%s", err, out)
	}
}

// reach waits for container a to log two more tries after line last, and
// fails on any failed try; it returns the last line's number.
func (l *lab) reach(t *testing.T, last int) int {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/root/var/lib/provisiond/mounts/prv-%s/%s", l.n.leader, l.vol, l.log)
	seq := last
	eventually(t, 20*time.Second, "container a's tries logged in its volume", func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue // a line being written
			}
			i, err := strconv.Atoi(f[0])
			if err != nil || i <= last {
				continue
			}
			if f[1] != "ok" {
				t.Fatalf("container a failed to reach b at try %d (after try %d)", i, last)
			}
			seq = max(seq, i)
		}
		if seq < last+2 {
			return fmt.Errorf("last try %d, want beyond %d", seq, last+1)
		}
		return nil
	})
	return seq
}

// show returns properties of the provisiond unit.
func (l *lab) show(t *testing.T, props ...string) map[string]string {
	t.Helper()
	return l.showUnit(t, "provisiond", props...)
}

// showUnit returns the properties props of unit, by name.
func (l *lab) showUnit(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := l.n.mustNoFail(t, "systemctl show "+unit+" -p "+strings.Join(props, " -p "))
	m := map[string]string{}
	for line := range strings.Lines(out) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			m[k] = v
		}
	}
	return m
}

func (l *lab) mainPID(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(l.n.must(t, "systemctl show -p MainPID --value provisiond"))
}

func (l *lab) restarts(t *testing.T) {
	began := time.Now()
	for i := range *cycles {
		pid := l.mainPID(t)
		l.start(t, "restart")
		if l.mainPID(t) == pid {
			t.Fatalf("restart %d: MainPID still %s", i+1, pid)
		}
		l.check(t)
	}
	t.Logf("%d restarts, each checked, in %s", *cycles, time.Since(began).Round(time.Millisecond))
}

func (l *lab) kills(t *testing.T) {
	began := time.Now()
	for i := range *cycles {
		pid := l.mainPID(t)
		l.n.must(t, "systemctl kill -s KILL provisiond")
		eventually(t, 30*time.Second, fmt.Sprintf("kill %d: restart by systemd", i+1), func() error {
			st := l.show(t, "MainPID", "ActiveState", "SubState")
			if st["MainPID"] == pid || st["MainPID"] == "0" || st["ActiveState"] != "active" || st["SubState"] != "running" {
				return fmt.Errorf("%v (killed %s)", st, pid)
			}
			return nil
		})
		l.ready(t)
		l.check(t)
	}
	t.Logf("%d SIGKILLs, each checked, in %s", *cycles, time.Since(began).Round(time.Millisecond))
}

// reload runs `systemctl reload provisiond` (the unit's ExecReload sends
// SIGHUP): the daemon reads its files again in the same process, which
// stays active and serves on; then `systemctl reload explorerd`.
func (l *lab) reload(t *testing.T) {
	l.reloadUnit(t, "provisiond", "SIGHUP: no --user-quota-file")
	l.check(t)

	// explorerd's unit reloads the same way, from inside its sandbox. It
	// still runs the release's binary, which did not catch SIGHUP: the
	// installed one is started first.
	l.n.must(t, "systemctl restart explorerd")
	l.reloadUnit(t, "explorerd", "SIGHUP: no TLS certificate")
}

// reloadUnit runs `systemctl reload unit` and waits for line, which the
// daemon logs on SIGHUP, in its journal; the unit must then be active
// with the same MainPID.
func (l *lab) reloadUnit(t *testing.T, unit, line string) {
	t.Helper()
	pid := l.showUnit(t, unit, "MainPID")["MainPID"]
	l.n.must(t, "systemctl reload "+unit)
	eventually(t, 30*time.Second, unit+"'s reload in the journal", func() error {
		if out := l.n.mustNoFail(t, "journalctl -u "+unit+" --no-pager -o cat"); !strings.Contains(out, line) {
			return errors.New("no SIGHUP line yet")
		}
		return nil
	})
	if st := l.showUnit(t, unit, "MainPID", "ActiveState"); st["MainPID"] != pid || st["ActiveState"] != "active" {
		t.Fatalf("%s after systemctl reload: %v (was pid %s)", unit, st, pid)
	}
}

// journal checks that every line the daemon wrote is one JSON event, and
// that workload events carry the reservation's id and type.
func (l *lab) journal(t *testing.T) {
	out := l.n.must(t, "journalctl -u provisiond -o json --no-pager")
	var lines, events int
	perID := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		var e struct {
			Message any    `json:"MESSAGE"`
			Unit    string `json:"_SYSTEMD_UNIT"`
			PID     string `json:"_PID"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("journalctl -o json line is not JSON: %v: %s", err, sc.Text())
		}
		if e.Unit != "provisiond.service" || e.PID == "1" {
			continue // systemd's own lines about the unit
		}
		lines++
		msg, ok := e.Message.(string)
		if !ok {
			t.Errorf("journal MESSAGE is not text: %v", e.Message)
			continue
		}
		var ev map[string]any
		if err := json.Unmarshal([]byte(msg), &ev); err != nil {
			t.Errorf("daemon line is not one JSON event: %q", msg)
			continue
		}
		for _, k := range []string{"level", "time", "message"} {
			if _, ok := ev[k]; !ok {
				t.Errorf("event lacks %q: %s", k, msg)
			}
		}
		id, hasID := ev["id"].(string)
		if !hasID {
			continue
		}
		events++
		if typ, _ := ev["type"].(string); typ == "" && id != "" {
			t.Errorf("workload event without its type: %s", msg)
		}
		perID[id]++
	}
	for _, id := range []string{l.net, l.vol, l.a, l.b} {
		if perID[id] == 0 {
			t.Errorf("no journal event with id %s", id)
		}
	}
	t.Logf("journal: %d daemon lines, all JSON; %d workload events with id and type", lines, events)
}

// fault installs the fault-hook build under the unit with fault (a
// drop-in), a short watchdog and operation timeout.
func (l *lab) fault(t *testing.T, fault string) {
	t.Helper()
	l.n.write(t, "/etc/systemd/system/provisiond.service.d/50-fault.conf", "[Service]\nExecStart=\nExecStart=/usr/local/bin/provisiond-faulthook run\n"+
		"Environment=PROVISIOND_FAULT="+fault+" PROVISIOND_OP_TIMEOUT=3s\nWatchdogSec=4s\n", 0o644)
	l.n.must(t, "systemctl daemon-reload")
}

func (l *lab) nRestarts(t *testing.T) int {
	t.Helper()
	v, err := strconv.Atoi(strings.TrimSpace(l.n.must(t, "systemctl show -p NRestarts --value provisiond")))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// watchdogBusy keeps every worker busy with slow operations and work
// queued for several watchdog intervals: the daemon must not be
// restarted.
func (l *lab) watchdogBusy(t *testing.T) {
	const count = 24
	l.fault(t, "slow:2s")
	l.start(t, "restart")
	pid, restarts := l.mainPID(t), l.nRestarts(t)
	began := time.Now()
	for i := range count {
		id := strings.TrimSpace(l.n.must(t, fmt.Sprintf("provctl reserve network --node %s --name busy%d --ip-range 10.%d.0.0/16 --subnet 10.%d.1.0/24 --duration 24h", l.node, i, 100+i, 100+i)))
		l.extra = append(l.extra, id)
	}
	maxQueued := 0
	eventually(t, 3*time.Minute, "busy reservations deployed", func() error {
		var st struct {
			Queued int `json:"queued"`
		}
		if out, err := l.n.sh(t, "provisiond status --json"); err == nil && json.Unmarshal([]byte(out), &st) == nil {
			maxQueued = max(maxQueued, st.Queued)
		}
		var deployed []struct {
			ID string `json:"id"`
		}
		out, err := l.n.sh(t, "provisiond cache ls --type network --state deployed --json")
		if err == nil {
			err = json.Unmarshal([]byte(out), &deployed)
		}
		if err != nil || len(deployed) < count+1 { // +1: the lab network
			return fmt.Errorf("%d networks deployed (%v)", len(deployed), err)
		}
		return nil
	})
	busy := time.Since(began)
	if maxQueued == 0 {
		t.Errorf("never saw work queued: the engine was not busy")
	}
	if busy < 3*4*time.Second {
		t.Errorf("busy for %s only, want several watchdog intervals (4 s)", busy)
	}
	if got, gotPID := l.nRestarts(t), l.mainPID(t); got != restarts || gotPID != pid {
		t.Fatalf("a busy daemon was restarted: NRestarts %d → %d, MainPID %s → %s\n%s", restarts, got, pid, gotPID,
			l.n.mustNoFail(t, "journalctl -u provisiond -n 30 -o cat"))
	}
	// The busy networks' namespaces join what the host shows.
	now := l.snapshot(t)
	if !maps.Equal(now.pids, l.base.pids) || !maps.Equal(now.loops, l.base.loops) {
		t.Fatalf("after the busy phase: %+v, was %+v", now, l.base)
	}
	if len(now.mounts) != len(l.base.mounts)+count {
		t.Fatalf("after deploying %d networks the host shows %d prv- mounts, had %d", count, len(now.mounts), len(l.base.mounts))
	}
	l.base.mounts = now.mounts
	l.check(t)
	t.Logf("busy for %s with up to %d queued, 4 workers at 2 s per operation, WatchdogSec=4s: not restarted", busy.Round(time.Millisecond), maxQueued)
}

// watchdogStuck blocks every worker for ever: the daemon stops feeding
// the watchdog and systemd restarts it; the containers keep running.
func (l *lab) watchdogStuck(t *testing.T) {
	l.fault(t, "stuck")
	since := strings.TrimSpace(l.n.must(t, "date '+%Y-%m-%d %H:%M:%S'"))
	// The slow build may still be busy: kill it rather than wait for it.
	l.n.must(t, "systemctl kill -s KILL provisiond")
	eventually(t, 30*time.Second, "the stuck build started", func() error {
		st := l.show(t, "ActiveState")
		out := strings.TrimSpace(l.n.mustNoFail(t, "journalctl -u provisiond --since '"+since+"' -o cat | grep -c 'every primitive call blocks' || true"))
		if st["ActiveState"] != "active" || out == "0" {
			return fmt.Errorf("%v, %s fault lines", st, out)
		}
		return nil
	})
	restarts := l.nRestarts(t)
	began := time.Now()
	// The start's inspections of the deployed workloads get stuck; after
	// the operation timeout (3 s) and its grace (10 s) the watchdog
	// (4 s) is no longer fed.
	eventually(t, 90*time.Second, "a watchdog restart of the stuck daemon", func() error {
		if got := l.nRestarts(t); got <= restarts {
			return fmt.Errorf("NRestarts still %d", got)
		}
		return nil
	})
	logs := l.n.must(t, "journalctl -u provisiond --since '"+since+"' -o cat")
	for _, want := range []string{"engine makes no progress; no longer feeding the watchdog", "Watchdog timeout"} {
		if !strings.Contains(logs, want) {
			t.Errorf("journal lacks %q", want)
		}
	}
	t.Logf("stuck daemon restarted by the watchdog %s after it was stuck", time.Since(began).Round(time.Millisecond))
	// Back to the real build: the containers ran on through all of it.
	if err := os.Remove(filepath.Join(l.n.root, "etc/systemd/system/provisiond.service.d/50-fault.conf")); err != nil {
		t.Fatal(err)
	}
	l.n.must(t, "systemctl daemon-reload && systemctl kill -s KILL provisiond")
	eventually(t, 30*time.Second, "the real build back", func() error {
		st := l.show(t, "ActiveState", "MainPID")
		exe := strings.TrimSpace(l.n.mustNoFail(t, "readlink /proc/"+st["MainPID"]+"/exe"))
		if st["ActiveState"] != "active" || exe != "/usr/local/bin/provisiond" {
			return fmt.Errorf("%v, %s", st, exe)
		}
		return nil
	})
	l.ready(t)
	l.check(t)
	for _, id := range l.extra {
		l.n.must(t, "provctl watch "+id+" --until ok --timeout 1m --interval 200ms")
	}
}
