package selfcheck

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeprov/provisiond/internal/testutil"
)

// TestRealMachine runs every check against this machine as the daemon
// would: the machine the tests run on is a node, so each must pass.
func TestRealMachine(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	testutil.RequiresCommand(t, "mkfs.ext4")
	rep := Run(t.Context(), Options{ProbeDirs: []string{t.TempDir(), t.TempDir()}, Scratch: t.TempDir()})
	for _, r := range rep.Results {
		t.Logf("%-17s %-6s %s", r.Name, r.Status, r.Detail)
		if r.Status != OK {
			t.Errorf("%s: %s: %s (fix: %s)", r.Name, r.Status, r.Detail, r.Fix)
		}
	}
	// A probe directory that does not exist yet is probed through its
	// parent, and not created.
	missing := filepath.Join(t.TempDir(), "data")
	rep = Run(t.Context(), Options{ProbeDirs: []string{missing}, Scratch: missing})
	for _, r := range rep.Results {
		if (r.Name == MountPropagation || r.Name == Loop) && r.Status != OK {
			t.Errorf("with a missing data directory: %+v", r)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Errorf("the checks created %s", missing)
	}
	if len(rep.Results) != len(checks()) {
		t.Fatalf("%d results for %d checks", len(rep.Results), len(checks()))
	}
}

// TestLoopMissingDeviceNode hands out a real free loop device number with
// a device directory that lacks its node, as in a container whose /dev was
// populated before the kernel created the device.
func TestLoopMissingDeviceNode(t *testing.T) {
	testutil.RequiresRoot(t)
	o := Options{DevDir: t.TempDir(), Scratch: t.TempDir()}
	o.defaults()
	if _, err := os.Stat(o.LoopControl); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but %s is missing: %v", o.LoopControl, err)
		}
		t.Skipf("skipping: %v", err)
	}
	wantResult(t, checkLoop(t.Context(), &o), Failed, "does not exist", "mknod /dev/loopN")
}

// TestPropagationHiddenFromHost gives the check a host mount table that
// does not list its probe: it must fail and name the unit's options, and
// leave no mount or directory behind.
func TestPropagationHiddenFromHost(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	o := Options{ProbeDirs: []string{dir}, HostMountinfo: file(t, rootFS)}
	o.defaults()
	wantResult(t, checkPropagation(t.Context(), &o), Failed, "does not show in", "ProtectSystem=")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Fatalf("probe left %v behind (%v)", entries, err)
	}
	if n := mountsBelow(t, dir); n != 0 {
		t.Fatalf("probe left %d mounts below %s", n, dir)
	}
}

// mountsBelow counts the mounts of this process below dir.
func mountsBelow(t testing.TB, dir string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), " "+dir+"/")
}

// helperEnv makes the test binary run the mount-propagation check in
// TestHelperProcess and print its result, for the tests below that start
// it in a mount namespace of its own.
const helperEnv = "SELFCHECK_HELPER_PROBE_DIR"

func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for the mount namespace tests")
	}
	o := Options{ProbeDirs: []string{dir}}
	o.defaults()
	if err := json.NewEncoder(os.Stdout).Encode(checkPropagation(t.Context(), &o)); err != nil {
		t.Fatal(err)
	}
}

// inChild runs the mount-propagation check in the test binary started by
// cmd and returns its result.
func inChild(t *testing.T, cmd *exec.Cmd, dir string) Result {
	t.Helper()
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		var r Result
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &r) == nil {
			return r
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return Result{}
}

func helperCmd(name string, args ...string) *exec.Cmd {
	return exec.Command(name, append(args, "-test.run=^TestHelperProcess$", "-test.count=1")...)
}

// TestPropagationPrivateNamespace is the unit's defect: a daemon started
// in a private mount namespace (what ProtectSystem= gives it) mounts where
// the host cannot see. The check must fail there, and pass in this
// process's own namespace for the same directory.
func TestPropagationPrivateNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"clone-newns", func() *exec.Cmd {
			// Go makes every mount of the new namespace private, as
			// `unshare -m --propagation private` does.
			cmd := helperCmd(os.Args[0])
			cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
			return cmd
		}},
		{"unshare-private", func() *exec.Cmd {
			testutil.RequiresCommand(t, "unshare")
			return helperCmd("unshare", "--mount", "--propagation", "private", os.Args[0])
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inChild(t, tc.cmd(), dir)
			if r.Status != Failed || !strings.Contains(r.Fix, "ProtectSystem=") || !strings.Contains(r.Detail, "does not show in /proc/1/mountinfo") {
				t.Fatalf("in a private mount namespace: %+v, want failed naming the unit's options", r)
			}
		})
	}
	t.Run("host-namespace", func(t *testing.T) {
		r := inChild(t, helperCmd(os.Args[0]), dir)
		if r.Status != OK {
			t.Fatalf("in the host's namespace: %+v, want ok", r)
		}
	})
}

// TestPropagationSharedNamespace starts the check in a mount namespace of
// its own whose probe directory is a shared mount of the host. With the
// propagation unchanged (MountFlags=shared in a unit) its mounts reach the
// host and the check passes although the namespaces differ; as a slave
// (what ProtectSystem= and the other sandboxing options give a unit: the
// host's mounts come in, the daemon's do not go out) it fails.
func TestPropagationSharedNamespace(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "unshare")
	dir := t.TempDir()
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	probeDir := filepath.Join(dir, "data")
	if err := os.Mkdir(probeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		propagation string
		want        Status
	}{
		{"unchanged", OK},
		{"slave", Failed},
	} {
		t.Run(tc.propagation, func(t *testing.T) {
			r := inChild(t, helperCmd("unshare", "--mount", "--propagation", tc.propagation, os.Args[0]), probeDir)
			t.Log(r.Detail)
			if r.Status != tc.want || !strings.Contains(r.Detail, probeDir) {
				t.Fatalf("in a namespace with %s propagation: %+v, want %s", tc.propagation, r, tc.want)
			}
			if n := mountsBelow(t, dir); n != 0 {
				t.Fatalf("%d mounts left below %s", n, dir)
			}
		})
	}
}
