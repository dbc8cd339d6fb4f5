package systemdtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/testutil"
)

// controllers are the host's cgroup v1 controllers that runc inside the
// container writes (nspawn mounts them read-only there).
var controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"}

// loopNodes is how many /dev/loopN nodes the container gets: its /dev is
// private, so a loop device the kernel adds later would not be seen.
const loopNodes = 64

// node is the booted systemd container.
type node struct {
	dir    string // test directory: overlay layers, data dir, console log
	root   string // the container's root (an overlay over the cached rootfs)
	leader int    // PID of its systemd (PID 1 inside), in the host's PID namespace
	cg     string // name of the test's cgroup below each host controller
	nspawn *exec.Cmd
	done   chan error
}

// repoRoot is the clone the test runs from.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// rootfs returns the cached Debian tree, building it on first use.
func rootfs(t testing.TB, repo string) string {
	t.Helper()
	began := time.Now()
	cmd := exec.CommandContext(t.Context(), filepath.Join(repo, "scripts", "systemd-rootfs.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("building the rootfs: %v\n%s", err, stderr.String())
	}
	dir := strings.TrimSpace(string(out))
	t.Logf("rootfs %s ready in %s", dir, time.Since(began).Round(time.Millisecond))
	return dir
}

// boot starts systemd in an overlay over lower and waits until it runs.
func boot(t *testing.T, lower string) *node {
	t.Helper()
	began := time.Now()
	// Not t.TempDir: it must be removed only after the root is unmounted
	// (and stays for a look with SYSTEMD_TEST_KEEP).
	dir, err := os.MkdirTemp("", "systemd-test-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{dir: dir, cg: "systemd-test-" + testutil.RandHex(t, 4), done: make(chan error, 1)}
	n.root = filepath.Join(n.dir, "root")
	upper, work, data := filepath.Join(n.dir, "upper"), filepath.Join(n.dir, "work"), filepath.Join(n.dir, "data")
	for _, d := range []string{n.root, upper, work, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, n.root).CombinedOutput(); err != nil {
		t.Fatalf("mounting the container's root: %v: %s", err, out)
	}
	t.Cleanup(func() { n.shutdown(t) })

	args := []string{"-q", "-D", n.root, "--register=no", "--keep-unit", "--boot", "--private-network",
		"--capability=all", "--system-call-filter=add_key keyctl request_key",
		"--bind=/dev/loop-control", "--bind=" + data + ":/var/lib/provisiond"}
	for i := range loopNodes {
		dev := fmt.Sprintf("/dev/loop%d", i)
		if _, err := os.Stat(dev); errors.Is(err, os.ErrNotExist) {
			if out, err := exec.Command("mknod", dev, "b", "7", strconv.Itoa(i)).CombinedOutput(); err != nil {
				t.Fatalf("mknod %s: %v: %s", dev, err, out)
			}
		}
		args = append(args, "--bind="+dev)
	}
	var cgroups []string
	for _, c := range controllers {
		host := filepath.Join("/sys/fs/cgroup", c)
		if _, err := os.Stat(host); err != nil {
			t.Fatalf("host cgroup controller %s: %v (the container needs cgroup v1 controllers)", c, err)
		}
		mine := filepath.Join(host, n.cg)
		if err := os.Mkdir(mine, 0o755); err != nil {
			t.Fatal(err)
		}
		if c == "cpuset" { // a new cpuset has no CPUs or memory nodes
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(host, f))
				if err == nil {
					err = os.WriteFile(filepath.Join(mine, f), b, 0o644)
				}
				if err != nil {
					t.Fatalf("setting up %s/%s: %v", mine, f, err)
				}
			}
		}
		cgroups = append(cgroups, mine)
	}
	console, err := os.Create(filepath.Join(n.dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	// nspawn starts inside the test's cgroup of every controller, so the
	// container's cgroup namespace is rooted there: what runc creates
	// inside lands below it, and the host's cgroups stay out of reach.
	n.nspawn = exec.Command("/bin/sh", append([]string{"-c",
		`for d in $LAB_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec "$0" "$@"`, "systemd-nspawn"}, args...)...)
	n.nspawn.Env = append(os.Environ(), "LAB_CGROUPS="+strings.Join(cgroups, " "))
	n.nspawn.Stdout, n.nspawn.Stderr = console, console
	if err := n.nspawn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { n.done <- n.nspawn.Wait() }()

	// The container's systemd is nspawn's child once it runs.
	deadline := time.Now().Add(30 * time.Second)
	for n.leader == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not start in the container; console:\n%s", n.console())
		}
		select {
		case err := <-n.done:
			n.done <- err
			t.Fatalf("systemd-nspawn exited: %v; console:\n%s", err, n.console())
		case <-time.After(100 * time.Millisecond):
		}
		out, _ := exec.Command("pgrep", "-P", strconv.Itoa(n.nspawn.Process.Pid)).Output()
		for _, f := range strings.Fields(string(out)) {
			pid, _ := strconv.Atoi(f)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "systemd" {
				n.leader = pid
			}
		}
	}
	// Its bus answers a moment after it started.
	var state string
	eventually(t, 60*time.Second, "systemd up in the container", func() error {
		out, err := n.sh(t, "systemctl is-system-running --wait")
		state = strings.TrimSpace(out)
		if state == "" || state == "offline" {
			// "offline": systemctl reached no systemd bus yet (it is
			// still starting); it waits only once connected.
			return fmt.Errorf("state %q: %v", state, err)
		}
		return nil
	})
	if state != "running" {
		t.Fatalf("systemd in the container: %q; failed units:\n%s", state, n.mustNoFail(t, "systemctl --failed --no-legend"))
	}
	t.Logf("systemd booted in the container in %s (leader PID %d)", time.Since(began).Round(time.Millisecond), n.leader)
	return n
}

func (n *node) console() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "console.log"))
	return string(b)
}

// shutdown kills the container (its PID namespace dies with its PID 1,
// taking every process, mount and namespace inside along), unmounts its
// root and removes the test's cgroups.
func (n *node) shutdown(t testing.TB) {
	if t.Failed() && n.leader != 0 {
		t.Logf("diagnostics:\n%s", n.mustNoFail(t, "systemctl --failed --no-legend; journalctl -u provisiond -n 60 -o cat --no-pager; "+
			"for f in /var/lib/provisiond/logs/*.log; do echo \"== $f\"; tail -n 20 \"$f\"; done"))
	}
	if t.Failed() && os.Getenv("SYSTEMD_TEST_KEEP") != "" {
		t.Logf("SYSTEMD_TEST_KEEP: container left running for a look: nsenter -t %d -a; its root %s", n.leader, n.root)
		return
	}
	if n.nspawn != nil && n.nspawn.Process != nil {
		if n.leader != 0 {
			_ = exec.Command("kill", "-KILL", strconv.Itoa(n.leader)).Run()
		}
		select {
		case <-n.done:
		case <-time.After(20 * time.Second):
			_ = n.nspawn.Process.Kill()
			<-n.done
		}
	}
	for i := 0; ; i++ {
		out, err := exec.Command("umount", n.root).CombinedOutput()
		if err == nil || strings.Contains(string(out), "not mounted") {
			break
		}
		if i == 50 {
			t.Errorf("unmounting %s: %v: %s", n.root, err, out)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range controllers {
		removeCgroup(t, filepath.Join("/sys/fs/cgroup", c, n.cg))
	}
	// Loop devices are the machine's: none may stay bound to our images.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := loopsBelow(n.dir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("loop devices left bound to the test's images: %v", left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), " "+n.dir+"/") {
		t.Errorf("mounts left below %s; not removing it", n.dir)
		return
	}
	if err := os.RemoveAll(n.dir); err != nil {
		t.Errorf("removing %s: %v", n.dir, err)
	}
}

// removeCgroup removes a cgroup directory tree, deepest first, waiting
// for the killed processes to leave it.
func removeCgroup(t testing.TB, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		var err error
		for range 50 {
			if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("removing cgroup %s: %v", dirs[i], err)
		}
	}
}

// loopsBelow returns the host's loop devices whose backing file lies
// below dir, as the host sees the path.
func loopsBelow(dir string) []string {
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	var devs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			devs = append(devs, filepath.Base(filepath.Dir(filepath.Dir(f)))+" "+strings.TrimSpace(string(b)))
		}
	}
	return devs
}

// sh runs script with sh inside the container, in all of its namespaces,
// with a clean environment; it returns stdout and, on failure, an error
// holding stderr.
func (n *node) sh(t testing.TB, script string) (string, error) {
	t.Helper()
	// Not t.Context(): diagnostics run in a cleanup, after it ended.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", "-t", strconv.Itoa(n.leader), "-a", "--",
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
		"PROVCTL_EXPLORER=http://127.0.0.1:8090", "PROVCTL_KEY=/root/user.key", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
		"/bin/sh", "-c", script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%q: %w: %s", script, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// must is sh that fails the test on error.
func (n *node) must(t testing.TB, script string) string {
	t.Helper()
	out, err := n.sh(t, script)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// mustNoFail is sh for diagnostics: errors become the output.
func (n *node) mustNoFail(t testing.TB, script string) string {
	t.Helper()
	out, err := n.sh(t, script)
	if err != nil {
		return out + err.Error()
	}
	return out
}

// write puts a file into the container's root.
func (n *node) write(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(n.root, path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

// eventually retries check every 100 ms until it returns nil or d passed.
func eventually(t testing.TB, d time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
