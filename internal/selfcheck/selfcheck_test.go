package selfcheck

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// script writes an executable shell script and returns its path.
func script(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func file(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func wantResult(t testing.TB, got Result, status Status, detail, fix string) {
	t.Helper()
	if got.Status != status || !strings.Contains(got.Detail, detail) || !strings.Contains(got.Fix, fix) {
		t.Fatalf("got %+v, want status %s, detail containing %q, fix containing %q", got, status, detail, fix)
	}
	if status == OK && got.Fix != "" {
		t.Fatalf("ok result with a fix: %+v", got)
	}
}

func TestBinaries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		check   func(context.Context, *Options) Result
		opts    Options
		timeout time.Duration
		status  Status
		detail  string
		fix     string
	}{
		{"runc-missing", checkRunc, Options{Runc: "/nonexistent/runc"}, time.Second, Failed, "not found", "apt-get install runc"},
		{"runc-not-on-path", checkRunc, Options{Runc: "provisiond-no-such-runc"}, time.Second, Failed, "not found", "apt-get install runc"},
		{"runc-fails", checkRunc, Options{Runc: script(t, "echo 'runc: broken library' >&2; exit 3")}, time.Second, Failed, "runc: broken library", "apt-get install runc"},
		{"runc-hangs", checkRunc, Options{Runc: script(t, "exec sleep 30")}, 200 * time.Millisecond, Failed, "did not answer in time", "apt-get install runc"},
		{"runc-ok", checkRunc, Options{Runc: script(t, `[ "$1" = --version ] && echo 'runc version 9.9.9'`)}, time.Second, OK, "runc version 9.9.9", ""},
		{"mkfs-missing", checkMkfs, Options{Mkfs: "/nonexistent/mkfs.ext4"}, time.Second, Failed, "not found", "apt-get install e2fsprogs"},
		{"mkfs-ok", checkMkfs, Options{Mkfs: script(t, `[ "$1" = -V ] && echo 'mke2fs 1.47.0 (5-Feb-2023)' >&2`)}, time.Second, OK, "mke2fs 1.47.0", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), tc.timeout)
			defer cancel()
			o := tc.opts
			o.defaults()
			wantResult(t, tc.check(ctx, &o), tc.status, tc.detail, tc.fix)
		})
	}
}

func TestTun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dev    string
		status Status
		detail string
	}{
		{"missing", "/nonexistent/net/tun", Warn, "no such file"},
		{"not-a-device", file(t, ""), Warn, "not a character device"},
		{"char-device", "/dev/null", OK, "opens"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{TunDevice: tc.dev}
			o.defaults()
			fix := "modprobe tun"
			if tc.status == OK {
				fix = ""
			}
			wantResult(t, checkTun(t.Context(), &o), tc.status, tc.detail, fix)
		})
	}
}

func TestLoopFakes(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctl  string
		fix  string
	}{
		{"no-loop-control", "/nonexistent/loop-control", "modprobe loop"},
		{"not-a-loop-control", file(t, ""), "modprobe loop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{LoopControl: tc.ctl, Scratch: t.TempDir()}
			o.defaults()
			wantResult(t, checkLoop(t.Context(), &o), Failed, tc.ctl, tc.fix)
		})
	}
}

// rootFS is the mountinfo line of a root filesystem.
const rootFS = "20 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"

// v1Table is a hybrid layout: a tmpfs at /sys/fs/cgroup, one v1 mount per
// controller list, mounted mode (rw or ro), and an empty unified hierarchy.
func v1Table(mode string, controllers ...string) string {
	s := rootFS + "25 20 0:25 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n"
	for i, c := range controllers {
		s += lineV1(40+i, c, mode)
	}
	// The hybrid layout's empty unified hierarchy must not make it v2.
	s += "60 25 0:60 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
	return s
}

func lineV1(id int, controller, mode string) string {
	return strings.NewReplacer("ID", strconv.Itoa(id), "C", controller, "MODE", mode).
		Replace("ID 25 0:ID / /sys/fs/cgroup/C MODE,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,C\n")
}

func TestCgroups(t *testing.T) {
	v2Root := func(t *testing.T, controllers string) string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(controllers+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	v2Table := func(root, mode string) string {
		return rootFS + strings.NewReplacer("ROOT", root, "MODE", mode).
			Replace("30 20 0:30 / ROOT MODE,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n")
	}
	for _, tc := range []struct {
		name   string
		table  func(t *testing.T) (mountinfo, root string)
		status Status
		detail string
		fix    string
	}{
		{"v1-hybrid-ok", func(t *testing.T) (string, string) {
			return v1Table("rw", "cpu,cpuacct", "memory", "pids", "devices", "freezer"), "/sys/fs/cgroup"
		}, OK, "cgroup v1", ""},
		{"v1-no-memory", func(t *testing.T) (string, string) {
			return v1Table("rw", "cpu", "pids", "devices"), "/sys/fs/cgroup"
		}, Failed, "no memory controller", "cgroup_enable=memory"},
		{"v1-read-only", func(t *testing.T) (string, string) {
			return v1Table("ro", "cpu", "memory", "pids", "devices"), "/sys/fs/cgroup"
		}, Failed, "read-only cpu (/sys/fs/cgroup/cpu)", "bind the host's"},
		{"no-cgroups", func(t *testing.T) (string, string) { return rootFS, "/sys/fs/cgroup" }, Failed, "no cpu, memory, pids, devices", "mount -t cgroup -o cpu"},
		{"v2-ok", func(t *testing.T) (string, string) {
			root := v2Root(t, "cpuset cpu io memory hugetlb pids rdma misc")
			return v2Table(root, "rw"), root
		}, OK, "cgroup v2", ""},
		{"v2-no-pids", func(t *testing.T) (string, string) {
			root := v2Root(t, "cpuset cpu io memory")
			return v2Table(root, "rw"), root
		}, Failed, "lacks pids", "enable the cgroup v2 controllers pids"},
		{"v2-read-only", func(t *testing.T) (string, string) {
			root := v2Root(t, "cpu memory pids")
			return v2Table(root, "ro"), root
		}, Failed, "read-only", "read-write"},
		{"v2-no-controllers-file", func(t *testing.T) (string, string) {
			root := t.TempDir()
			return v2Table(root, "rw"), root
		}, Failed, "cgroup.controllers", "mount the cgroup2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, root := tc.table(t)
			o := Options{Mountinfo: file(t, table), CgroupRoot: root}
			o.defaults()
			wantResult(t, checkCgroups(t.Context(), &o), tc.status, tc.detail, tc.fix)
		})
	}
	o := Options{Mountinfo: "/nonexistent/mountinfo"}
	o.defaults()
	wantResult(t, checkCgroups(t.Context(), &o), Failed, "reading the mount table", "mount /proc")
}

func TestPropagationWithoutProbeDirs(t *testing.T) {
	o := Options{}
	o.defaults()
	wantResult(t, checkPropagation(t.Context(), &o), Failed, "no probe directory", "directories the daemon mounts into")
}

// TestRunReport runs the table with every check pointed at a fake and
// checks the report's shape: names in order, affects on failures only.
func TestRunReport(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	rep := Run(t.Context(), Options{
		By:          "cli",
		Runc:        "/nonexistent/runc",
		Mkfs:        script(t, "echo mke2fs 1.47.0"),
		LoopControl: "/nonexistent/loop-control",
		TunDevice:   "/dev/null",
		Mountinfo:   file(t, v1Table("rw", "cpu", "memory", "pids", "devices")),
		Now:         func() time.Time { return now },
	})
	if rep.By != "cli" || !rep.At.Equal(now) {
		t.Fatalf("report header %q %v", rep.By, rep.At)
	}
	want := []struct {
		name    string
		status  Status
		affects string
	}{
		{Loop, Failed, "volume"},
		{Runc, Failed, "container"},
		{Mkfs, OK, ""},
		{Cgroups, OK, ""},
		{Tun, OK, ""},
		{MountPropagation, Failed, "volume,container,network"},
	}
	if len(rep.Results) != len(want) {
		t.Fatalf("%d results, want %d: %+v", len(rep.Results), len(want), rep.Results)
	}
	for i, w := range want {
		r := rep.Results[i]
		if r.Name != w.name || r.Status != w.status || strings.Join(r.Affects, ",") != w.affects {
			t.Errorf("result %d = %+v, want %s %s affecting %q", i, r, w.name, w.status, w.affects)
		}
	}
	var names []string
	for _, r := range rep.Failed() {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "loop,runc,mount-propagation" {
		t.Fatalf("Failed() = %s", got)
	}
}

func TestExisting(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ in, want string }{
		{dir, dir},
		{filepath.Join(dir, "a", "b"), dir},
		{"/nonexistent-provisiond/x", "/"},
	} {
		if got := existing(tc.in); got != tc.want {
			t.Errorf("existing(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}
