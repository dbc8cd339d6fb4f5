package container_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
)

// probeImage writes, beside e's busybox image, a rootfs tarball with
// busybox, the probe command (testdata/probe, built static) as
// /bin/probe, and a setuid-root copy of busybox as /bin/busybox.suid, and
// returns its spec.
func probeImage(t *testing.T, e *env) container.Spec {
	t.Helper()
	testutil.RequiresCommand(t, "go")
	probe := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command("go", "build", "-o", probe, "./testdata/probe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the probe: %v\n%s", err, out)
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("skipping: busybox not on PATH")
	}
	path := filepath.Join(filepath.Dir(e.image), "probe-"+testutil.RandHex(t, 4)+".tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	for _, d := range []string{"./", "bin/", "tmp/", "proc/", "sys/", "dev/", "data/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o1777}); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name, src string, mode int64) {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	file("bin/busybox", bb, 0o755)
	file("bin/busybox.suid", bb, 0o4755)
	file("bin/probe", probe, 0o755)
	for _, a := range fixture.Applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return container.Spec{Image: path, Digest: hex.EncodeToString(h.Sum(nil)), Args: []string{"sleep", "3600"}, CPU: 1, Memory: 64}
}

// status returns the fields of /proc/pid/status.
func status(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		m[k] = strings.TrimSpace(v)
	}
	return m
}

// TestSeccompAndUserNamespace: a tenant's root is an unprivileged host
// user of a range of its own, under Docker's seccomp profile: it cannot
// make a user namespace, use keyrings or bpf, or mount; a setuid binary of
// its image unpacks and runs; what it writes is owned by its range on the
// host, and a volume's files are its own inside.
func TestSeccompAndUserNamespace(t *testing.T) {
	e := newEnv(t, container.Options{})
	s := probeImage(t, e)
	vol := t.TempDir()
	s.Mounts = []container.Mount{{Source: vol, Destination: "/data"}}
	a, b := "userns-a-"+testutil.RandHex(t, 3), "userns-b-"+testutil.RandHex(t, 3)
	e.run(t, a, s)
	e.run(t, b, s)

	// The host sees the containers' roots as two different unprivileged
	// uids; neither is root and both are in the containers' ranges.
	bases := map[string]int{}
	for _, id := range []string{a, b} {
		st := status(t, runcPid(t, e, id))
		uids, gids := strings.Fields(st["Uid"]), strings.Fields(st["Gid"])
		if len(uids) != 4 || len(gids) != 4 {
			t.Fatalf("status of %s: Uid %q Gid %q", id, st["Uid"], st["Gid"])
		}
		base, _ := strconv.Atoi(uids[0])
		for _, u := range append(uids, gids...) {
			if u != uids[0] {
				t.Fatalf("%s: host ids Uid %q Gid %q, want all %s", id, st["Uid"], st["Gid"], uids[0])
			}
		}
		if base < container.DefaultUIDBase || (base-container.DefaultUIDBase)%container.IDRange != 0 {
			t.Fatalf("%s runs as host uid %d, want the start of a range from %d", id, base, container.DefaultUIDBase)
		}
		if st["Seccomp"] != "2" {
			t.Fatalf("%s: Seccomp %q, want 2 (filter)", id, st["Seccomp"])
		}
		if st["NoNewPrivs"] != "1" {
			t.Fatalf("%s: NoNewPrivs %q", id, st["NoNewPrivs"])
		}
		bases[id] = base
	}
	if bases[a] == bases[b] {
		t.Fatalf("both containers run as host uid %d", bases[a])
	}
	// Inside, it is root.
	if out, err := e.exec(t, a, "id", "-u"); err != nil || strings.TrimSpace(out) != "0" {
		t.Fatalf("id -u inside = %q, %v", out, err)
	}

	// What a tenant must not do fails, by the profile (EPERM).
	out, err := e.exec(t, a, "/bin/probe")
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	for _, want := range []string{"unshare-user EPERM", "keyctl EPERM", "bpf EPERM", "mount EPERM"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("probe inside: want %q in\n%s", want, out)
		}
	}
	// The same probe on the host succeeds: it can tell.
	// (Without its mount, which would land on the host's /tmp.)
	hostOut, err := exec.Command(filepath.Join(e.dir, "images", s.Digest, "bin", "probe"), "-no-mount").CombinedOutput()
	for _, want := range []string{"unshare-user ok", "keyctl ok", "bpf ok"} {
		if err != nil || !strings.Contains(string(hostOut), want+"\n") {
			t.Errorf("probe on the host: %v, want %q in\n%s", err, want, hostOut)
		}
	}

	// The setuid binary kept its bit when unpacked, and runs.
	fi, err := os.Stat(filepath.Join(e.dir, "images", s.Digest, "bin", "busybox.suid"))
	if err != nil || fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("unpacked setuid binary: %v, mode %v", err, fi.Mode())
	}
	if out, err := e.exec(t, a, "/bin/busybox.suid", "echo", "setuid-ran"); err != nil || !strings.Contains(out, "setuid-ran") {
		t.Fatalf("setuid binary inside: %q, %v", out, err)
	}

	// Its writes are owned by its range on the host; a volume's files are
	// the container's own inside and container-relative on disk.
	if out, err := e.exec(t, a, "sh", "-c", "echo x > /written && echo y > /data/in-volume && ls -ln /data/in-volume /bin/busybox"); err != nil {
		t.Fatalf("writing: %v\n%s", err, out)
	} else if fields := strings.Fields(out); len(fields) < 4 || fields[2] != "0" || fields[3] != "0" {
		t.Fatalf("inside, files are not root's: %s", out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.m.Bundle(a), "disk", "upper", "written"), &st); err != nil || int(st.Uid) != bases[a] || int(st.Gid) != bases[a] {
		t.Fatalf("written file on the host: %v, owner %d:%d, want %d", err, st.Uid, st.Gid, bases[a])
	}
	if err := syscall.Stat(filepath.Join(vol, "in-volume"), &st); err != nil || st.Uid != 0 {
		t.Fatalf("volume file on disk: %v, owner %d, want 0 (container-relative)", err, st.Uid)
	}
	// b, another range, sees the volume's files as its own too.
	if out, err := e.exec(t, b, "sh", "-c", "echo z >> /data/in-volume && cat /data/in-volume"); err != nil || out != "y\nz\n" {
		t.Fatalf("b appending to the volume: %q, %v", out, err)
	}
}

// TestDiskLimit: a container cannot write more than its disk_size; the
// data directory (where provisiond.db lives) and another tenant are not
// affected.
func TestDiskLimit(t *testing.T) {
	e := newEnv(t, container.Options{})
	full, other := "disk-full-"+testutil.RandHex(t, 3), "disk-other-"+testutil.RandHex(t, 3)
	s := e.spec("sleep", "3600")
	s.DiskSize = 32
	e.run(t, full, s)
	e.run(t, other, s)

	db, err := bolt.Open(filepath.Join(e.dir, "provisiond.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	commit := func(k string) error {
		return db.Update(func(tx *bolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put([]byte(k), make([]byte, 64<<10))
		})
	}
	if err := commit("before"); err != nil {
		t.Fatal(err)
	}

	out, err := e.exec(t, full, "dd", "if=/dev/zero", "of=/big", "bs=1M", "count=64")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Fatalf("writing 64 MiB to a 32 MiB disk: %v\n%s", err, out)
	}
	// The database keeps committing, the data directory's filesystem has
	// room, and the other tenant writes.
	for i := range 3 {
		if err := commit(fmt.Sprint("after", i)); err != nil {
			t.Fatalf("provisiond.db commit with a tenant's disk full: %v", err)
		}
	}
	if out, err := e.exec(t, other, "dd", "if=/dev/zero", "of=/fine", "bs=1M", "count=8"); err != nil {
		t.Fatalf("the other tenant cannot write: %v\n%s", err, out)
	}
	// The disk is allocated, not sparse.
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(e.m.Bundle(full), "disk.img"), &st); err != nil || st.Size != 32<<20 || st.Blocks*512 < 32<<20 {
		t.Fatalf("disk image: %v, size %d, allocated %d; want 32 MiB of each", err, st.Size, st.Blocks*512)
	}
	// Freeing space lets it write again.
	if out, err := e.exec(t, full, "sh", "-c", "rm /big && echo more > /more"); err != nil {
		t.Fatalf("writing after freeing space: %v\n%s", err, out)
	}
}

// TestForkBombStaysInside: the pids limit stops a fork bomb; the node
// (this process) and another tenant still start processes.
func TestForkBombStaysInside(t *testing.T) {
	e := newEnv(t, container.Options{PidsLimit: 64})
	bomb, other := "bomb-"+testutil.RandHex(t, 3), "calm-"+testutil.RandHex(t, 3)
	e.run(t, other, e.spec("sleep", "3600"))
	e.run(t, bomb, e.spec("sh", "-c", "b() { b | b & }; b; sleep 3600"))

	eventually(t, 20*time.Second, func() error {
		events := cgroupFile(t, "pids", bomb, "pids.events")
		if events == "max 0" || events == "" {
			return fmt.Errorf("pids.events %q: the limit was not hit yet", events)
		}
		return nil
	})
	if max := cgroupFile(t, "pids", bomb, "pids.max"); max != "64" {
		t.Fatalf("pids.max = %s, want 64", max)
	}
	for range 5 {
		cur, _ := strconv.Atoi(cgroupFile(t, "pids", bomb, "pids.current"))
		if cur > 64 {
			t.Fatalf("pids.current = %d > 64", cur)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("true").CombinedOutput(); err != nil {
		t.Fatalf("the node cannot start a process during the bomb: %v %s", err, out)
	}
	if out, err := e.exec(t, other, "sh", "-c", "for i in 1 2 3 4 5 6 7 8; do true & done; wait; echo fine"); err != nil || !strings.Contains(out, "fine") {
		t.Fatalf("the other tenant cannot fork during the bomb: %v\n%s", err, out)
	}
}

// TestLogsRotated: a container writing more than the bound keeps at most
// LogMaxFiles files of LogMaxSize, in order, nothing lost between them;
// what it writes while no daemon reads waits in its pipe.
func TestLogsRotated(t *testing.T) {
	const size, files = 64 << 10, 3
	e := newEnv(t, container.Options{LogMaxSize: size, LogMaxFiles: files})
	id := "chatty-" + testutil.RandHex(t, 3)
	// About 1 MiB, 16 times the bound, then a tick every 50 ms.
	e.run(t, id, e.spec("sh", "-c", `i=0; while [ $i -lt 20000 ]; do echo "line $i ......................................"; i=$((i+1)); done; n=0; while :; do echo "tick $n"; n=$((n+1)); sleep 0.05; done`))
	// all returns the kept lines, oldest first, checking the files.
	all := func() []string {
		t.Helper()
		entries, err := os.ReadDir(filepath.Dir(e.m.LogPath(id)))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, en := range entries {
			names = append(names, en.Name())
		}
		want := container.Name(id) + ".log " + container.Name(id) + ".log.1 " + container.Name(id) + ".log.2"
		if strings.Join(names, " ") != want {
			t.Fatalf("log files %v, want %s", names, want)
		}
		var text string
		for _, suffix := range []string{".2", ".1", ""} {
			b, err := os.ReadFile(e.m.LogPath(id) + suffix)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > size {
				t.Fatalf("log%s is %d bytes > %d", suffix, len(b), size)
			}
			text += string(b)
		}
		return strings.Split(strings.TrimSuffix(text, "\n"), "\n")[1:] // the first may be cut
	}
	// consecutive checks that the numbers after prefix follow each other.
	consecutive := func(lines []string, prefix string) (first, last int) {
		t.Helper()
		first, last = -1, -1
		for _, l := range lines {
			f := strings.Fields(l)
			if len(f) < 2 || f[0] != prefix {
				continue
			}
			n, err := strconv.Atoi(f[1])
			if err != nil {
				t.Fatalf("bad line %q", l)
			}
			if last >= 0 && n != last+1 {
				t.Fatalf("%s %d follows %s %d: lines lost", prefix, n, prefix, last)
			}
			if first < 0 {
				first = n
			}
			last = n
		}
		return first, last
	}
	eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(e.m.LogPath(id))
		if err != nil || !strings.Contains(string(b), "tick 3\n") {
			return fmt.Errorf("no ticks in the log yet (%v)", err)
		}
		return nil
	})
	lines := all()
	if first, last := consecutive(lines, "line"); last != 19999 || first < 1000 || first > 19999-2*size/50 {
		t.Fatalf("kept lines %d..%d: want the last ones up to 19999, about %d of them", first, last, files*size/50)
	}

	// A new daemon takes the pipe up again: the ticks written while no
	// daemon read are kept.
	if err := e.m.Close(); err != nil {
		t.Fatal(err)
	}
	_, before := consecutive(all(), "tick")
	time.Sleep(500 * time.Millisecond)
	restarted := container.New(container.Options{DataDir: e.dir, RunDir: e.runDir, LocalImages: filepath.Dir(e.image), LogMaxSize: size, LogMaxFiles: files})
	defer restarted.Close()
	if err := restarted.Inspect(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if _, last := consecutive(all(), "tick"); last < before+15 {
			return fmt.Errorf("ticks up to %d, %d before the restart", last, before)
		}
		return nil
	})
}

// TestLegacyContainerAdopted: a container of a release without user
// namespaces (its bundle has no uid range) is adopted as it runs, and gets
// the new layout when it next starts.
func TestLegacyContainerAdopted(t *testing.T) {
	e := newEnv(t, container.Options{})
	id := "legacy-" + testutil.RandHex(t, 3)
	s := e.spec("sleep", "3600")
	e.run(t, id, s)
	if err := os.Remove(filepath.Join(e.m.Bundle(id), "uidbase")); err != nil {
		t.Fatal(err)
	}
	pid := runcPid(t, e, id)
	if _, err := e.m.Provision(t.Context(), id, s); err != nil {
		t.Fatal(err)
	}
	if runcPid(t, e, id) != pid {
		t.Fatal("a running container of the old release was restarted")
	}
	if _, err := os.Stat(filepath.Join(e.m.Bundle(id), "uidbase")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old container's bundle was changed: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if err := e.m.Inspect(t.Context(), id); err == nil {
			return errors.New("still running")
		}
		return nil
	})
	if _, err := e.m.Provision(t.Context(), id, s); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(e.m.Bundle(id), "uidbase")); err != nil {
		t.Fatalf("restarted without a uid range: %v", err)
	}
	if st := status(t, runcPid(t, e, id)); strings.Fields(st["Uid"])[0] == "0" {
		t.Fatal("restarted as host root")
	}
}
