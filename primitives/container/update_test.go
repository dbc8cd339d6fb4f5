package container_test

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/primitives/container"
)

// imageWith writes a copy of the tarball src with one more file, name
// holding content, next to src, and returns its path and sha256.
func imageWith(t testing.TB, src, name, content string) (string, string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	path := filepath.Join(filepath.Dir(src), "image-"+testutil.RandHex(t, 4)+".tar")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	tw, tr := tar.NewWriter(io.MultiWriter(out, h)), tar.NewReader(in)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path, hex.EncodeToString(h.Sum(nil))
}

// A new version of a running container: CPU and memory change live (the
// same process, new cgroup limits); the env recreates it with the same IP
// and volume; a new image recreates it on that image, its volume kept.
func TestUpdate(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		t.Skip("skipping: needs the cgroup v1 memory controller")
	}
	e := newEnv(t, container.Options{})
	netID := e.network(t, "10.231.7.0/24")
	id := "upd-" + testutil.RandHex(t, 3)
	vol := t.TempDir()
	s := e.spec("sleep", "3600")
	s.NetworkID, s.IP = netID, []byte{10, 231, 7, 9}
	s.Mounts = []container.Mount{{Source: vol, Destination: "/data"}}
	s.Env = map[string]string{"STAGE": "one"}
	info := e.run(t, id, s)
	if out, err := e.exec(t, id, "sh", "-c", "echo kept > /data/file"); err != nil {
		t.Fatalf("writing the volume: %v %s", err, out)
	}
	pid := runcPid(t, e, id)

	// CPU and memory: live.
	s.CPU, s.Memory = 2, 128
	if got, err := e.m.Provision(t.Context(), id, s); err != nil || got.IP != info.IP {
		t.Fatalf("live update: %+v, %v", got, err)
	}
	if p := runcPid(t, e, id); p != pid {
		t.Fatalf("the live update restarted the container (pid %d → %d)", pid, p)
	}
	if got := cgroupFile(t, "cpu", id, "cpu.cfs_quota_us"); got != "200000" {
		t.Fatalf("cpu quota after the update = %s, want 200000 (2 CPUs)", got)
	}
	if got := cgroupFile(t, "memory", id, "memory.limit_in_bytes"); got != fmt.Sprint(128<<20) {
		t.Fatalf("memory limit after the update = %s, want 128 MiB", got)
	}
	// Provisioning the same version again changes nothing.
	if _, err := e.m.Provision(t.Context(), id, s); err != nil || runcPid(t, e, id) != pid {
		t.Fatalf("a repeat restarted the container or failed: %v", err)
	}

	// The env: recreated, same IP and volume.
	s.Env = map[string]string{"STAGE": "two"}
	if got, err := e.m.Provision(t.Context(), id, s); err != nil || got.IP != info.IP {
		t.Fatalf("env update: %+v, %v", got, err)
	}
	if p := runcPid(t, e, id); p == pid {
		t.Fatal("an env change did not recreate the container")
	}
	check := func(want string) {
		t.Helper()
		out, err := e.exec(t, id, "sh", "-c", `echo "$(cat /proc/1/environ | tr '\0' '\n' | grep STAGE)" "$(cat /data/file)" "$(ip -4 addr | grep -o '10.231.7.9')"`)
		if err != nil || strings.TrimSpace(out) != want {
			t.Fatalf("inside after the update: %q, %v; want %q", out, err, want)
		}
	}
	check("STAGE=two kept 10.231.7.9")

	// A new image: recreated on it.
	s.Image, s.Digest = imageWith(t, e.image, "etc/release", "v2\n")
	if _, err := e.m.Provision(t.Context(), id, s); err != nil {
		out, _ := os.ReadFile(e.m.LogPath(id))
		t.Fatalf("image update: %v\n%s", err, out)
	}
	if out, err := e.exec(t, id, "cat", "/etc/release"); err != nil || out != "v2\n" {
		t.Fatalf("the container does not run the new image: %q, %v", out, err)
	}
	check("STAGE=two kept 10.231.7.9")
}
