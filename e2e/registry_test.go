package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/registrytest"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// Registry images end to end: a signed reservation at the explorer names
// an image by digest, the node pulls it from a real docker-registry (or a
// mirror, or its store after an import), runs it, and signs the result
// that comes back through the explorer, ok or an error that names the
// cause.

// appImage returns a busybox-based image whose own top layer holds
// /app/hello with text.
func appImage(t *testing.T, base v1.Layer, text string) v1.Image {
	t.Helper()
	return registrytest.Image(t, runtime.GOARCH, base, registrytest.Layer(t, []registrytest.File{
		{Name: "app", Type: tar.TypeDir},
		{Name: "app/hello", Body: []byte(text + "\n")},
	}))
}

// provctlErr runs provctl as u and returns its standard output and error
// separately (harness.User.Run keeps standard error only on failure).
func provctlErr(t *testing.T, u *harness.User, args ...string) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, harness.Bin(t, "provctl"), args...)
	cmd.Env = append(os.Environ(), "PROVCTL_EXPLORER="+u.Explorer, "PROVCTL_KEY="+u.Key)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("provctl %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), errb.String()
}

// ctrArgs are the arguments of a container in network net at ip that
// prints /app/hello and sleeps.
func ctrArgs(nodeID, image, net, ip string) []string {
	return []string{"--node", nodeID, "--image", image,
		"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", "cat /app/hello; exec sleep 3600",
		"--network", net, "--ip", ip, "--cpu", "1", "--memory", "64", "--disk", "128", "--duration", "1h"}
}

// waitLogs waits until `provctl logs ID` shows want.
func waitLogs(t *testing.T, u *harness.User, id, want string) {
	t.Helper()
	harness.Eventually(t, within, "provctl logs "+id+" showing "+want, func() error {
		out, err := u.Run(t, "logs", id)
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("logs %q", out)
		}
		return nil
	})
}

// imageRows returns `provisiond image ls --json`.
func imageRows(t *testing.T, node *harness.Node) []imageRow {
	t.Helper()
	out, err := node.CLI(t, "image", "ls", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []imageRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("image ls --json: %v: %s", err, out)
	}
	return rows
}

// imageRow is a row of `provisiond image ls --json`.
type imageRow struct {
	Digest       string   `json:"digest"`
	Kind         string   `json:"kind"`
	Layers       int      `json:"layers"`
	Imported     bool     `json:"imported"`
	ReferencedBy []string `json:"referenced_by"`
}

// startNode is harness.Start, and when the test fails, kills and
// deletes the node's containers and unmounts what it mounted under its
// directory after the node stopped: a failed test leaves no container
// behind (one would hold every descriptor it inherited, the host lock's
// among them, and the next test's capacity).
func startNode(t *testing.T, args ...string) *harness.Setup {
	t.Helper()
	t.TempDir() // registers the removal of the test's directories first: it runs after this cleanup
	var dir string
	t.Cleanup(func() {
		if !t.Failed() || dir == "" {
			return
		}
		root := filepath.Join(dir, "data", "runc")
		out, _ := exec.Command("runc", "--root", root, "list", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			exec.Command("runc", "--root", root, "delete", "-f", id).Run()
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		var points []string
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				points = append(points, f[4])
			}
		}
		slices.Sort(points)
		for _, p := range slices.Backward(points) {
			exec.Command("umount", "-l", p).Run()
		}
	})
	s := harness.Start(t, harness.SetupOptions{Node: harness.NodeOptions{Args: args}})
	dir = s.Node.Dir
	return s
}

// dirNames lists a directory's entries (none when it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// TestRegistryPullShareAndMirror pushes two images sharing a busybox base
// to a registry and a third only to a mirror. provctl resolves the first
// two by tag, prints and signs the digests; the node pulls and runs them
// (their output comes back through provctl logs), stores the shared base
// layer once, and image ls shows each image referenced by its
// reservation. The third image names a registry that is down
// (--registry-mirrors): the mirror serves it and it runs.
func TestRegistryPullShareAndMirror(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	reg := registrytest.Start(t, registrytest.Options{})
	mirror := registrytest.Start(t, registrytest.Options{})
	origin := harness.FreeAddr(t)
	base := registrytest.BusyboxLayer(t)
	ref1 := reg.Push(t, "app1", appImage(t, base, "hello from app1"))
	ref2 := reg.Push(t, "app2", appImage(t, base, "hello from app2"))
	img3 := appImage(t, base, "hello from the mirror")
	ref3 := mirror.Push(t, "app3", img3)
	ref3.Registry = origin

	s := startNode(t, "--insecure-registries", strings.Join([]string{reg.Host, mirror.Host, origin}, ","),
		"--registry-mirrors", mirror.Host)
	user, nodeID := s.User, s.NodeID
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "reg", "--ip-range", "10.236.0.0/16", "--subnet", "10.236.1.0/24", "--duration", "1h")

	// The node has 2 cores and each container takes 1: the first two
	// run together, the third after the first is deleted.
	var ids []string
	for i, ref := range []provision.ImageRef{ref1, ref2} {
		tag := ref.Registry + "/" + ref.Repository + ":test"
		out, stderr := provctlErr(t, user, append([]string{"reserve", "container"}, ctrArgs(nodeID, tag, "reg", fmt.Sprintf("10.236.1.%d", 10+i))...)...)
		if want := fmt.Sprintf("resolved %s to %s", tag, ref); !strings.Contains(stderr, want) {
			t.Fatalf("provctl reserve printed %q, want %q", stderr, want)
		}
		id := strings.TrimSpace(out)
		r, _ := user.Get(t, id)
		w, err := r.Workload()
		if err != nil {
			t.Fatal(err)
		}
		if ct := w.(*provision.Container); ct.Image != ref.String() {
			t.Fatalf("the reservation signs image %q, want %q", ct.Image, ref)
		}
		ids = append(ids, id)
	}
	user.WaitResult(t, netID, provision.StateOk, within)
	for i, id := range ids {
		user.WaitResult(t, id, provision.StateOk, within)
		waitLogs(t, user, id, []string{"hello from app1", "hello from app2"}[i])
	}

	// Both images share the base: 1 + 2 own layers are on disk, and each
	// image is listed with its reservation.
	layersDir := filepath.Join(s.Node.Dir, "data", "layers", "sha256")
	layers := dirNames(t, layersDir)
	baseDigest, _ := base.Digest()
	if len(layers) != 3 || !slices.Contains(layers, baseDigest.Hex) {
		t.Fatalf("unpacked layers %v, want 3 with the base %s", layers, baseDigest.Hex)
	}
	rows := imageRows(t, s.Node)
	for i, ref := range []provision.ImageRef{ref1, ref2} {
		j := slices.IndexFunc(rows, func(r imageRow) bool { return r.Digest == ref.Digest && slices.Equal(r.ReferencedBy, []string{ids[i]}) })
		if j < 0 {
			t.Fatalf("image ls does not show %s referenced by its reservation: %+v", ref, rows)
		}
		if rows[j].Layers != 2 {
			t.Fatalf("image ls shows %d layers for %s, want 2", rows[j].Layers, ref)
		}
	}
	// Each container mounts the shared base layer directory.
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(mounts), "/"+baseDigest.Hex+"/fs "); n != 2 {
		t.Errorf("the base layer is mounted %d times, want once per container (2)", n)
	}

	if _, err := user.Run(t, "delete", ids[0]); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, ids[0], provision.StateDeleted, within)
	id3 := user.Reserve(t, "container", ctrArgs(nodeID, ref3.String(), "reg", "10.236.1.12")...)
	user.WaitResult(t, id3, provision.StateOk, within)
	waitLogs(t, user, id3, "hello from the mirror")
	if layers := dirNames(t, layersDir); len(layers) != 4 {
		t.Errorf("unpacked layers after the mirror's image %v, want 4 (its own layer added)", layers)
	}
	ids = append(ids[1:], id3)

	for _, id := range ids {
		if _, err := user.Run(t, "delete", id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		user.WaitResult(t, id, provision.StateDeleted, within)
	}
}

// TestRegistryErrors reserves containers whose pulls fail: the registry
// is down, refuses access (htpasswd, no credentials), lacks the digest,
// serves an artifact instead of an image, serves a layer whose bytes are
// not its digest's, or speaks plain HTTP without being listed in
// --insecure-registries. Each gets a signed error result at the explorer
// that names the cause, and the node keeps no container, no partial
// download, no unpack directory, no blob and no layer.
//
// Then a second private registry, whose credentials the node has in
// --registry-auth (and provctl in the user's $DOCKER_CONFIG, to resolve
// its tag), serves an image that runs; provisiond refuses to start with
// a credentials file others may read.
func TestRegistryErrors(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	reg := registrytest.Start(t, registrytest.Options{})
	locked := registrytest.Start(t, registrytest.Options{User: "alice", Password: "s3cret"})
	plain := registrytest.Start(t, registrytest.Options{})
	private := registrytest.Start(t, registrytest.Options{User: "bob", Password: "builder"})
	base := registrytest.BusyboxLayer(t)
	good := appImage(t, base, "good")

	down := reg.Push(t, "good", good)
	down.Registry = harness.FreeAddr(t)
	missing := reg.Push(t, "good", good)
	missing.Digest = strings.Repeat("0", 64)
	art := mutate.ConfigMediaType(appImage(t, base, "artifact"), types.MediaType("application/vnd.example.thing.v1+json"))
	tampered := appImage(t, base, "tampered")
	tamperedRef := reg.Push(t, "tampered", tampered)
	ls, _ := tampered.Layers()
	tamperedLayer, _ := ls[1].Digest()
	reg.Tamper(t, tamperedLayer.Hex)

	cases := []struct {
		name string
		ref  provision.ImageRef
		want []string // in the signed error's message
	}{
		{"down", down, []string{"could not be reached", down.Registry, "giving up after"}},
		{"unauthorized", locked.Push(t, "locked", good), []string{"refused access (401)", locked.Host}},
		{"not-found", missing, []string{"not found at registry", "(404)", missing.Digest}},
		{"artifact", reg.Push(t, "artifact", art), []string{"application/vnd.example.thing.v1+json"}},
		{"tampered", tamperedRef, []string{"digest mismatch", tamperedLayer.Hex}},
		{"plain-http", plain.Push(t, "good", good), []string{"not listed in --insecure-registries", plain.Host}},
	}

	privateRef := private.Push(t, "app", appImage(t, base, "hello from the private registry"))
	authDir := t.TempDir()
	authFile := filepath.Join(authDir, "config.json")
	creds := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, private.Host, base64.StdEncoding.EncodeToString([]byte("bob:builder")))
	if err := os.WriteFile(authFile, []byte(creds), 0o644); err != nil {
		t.Fatal(err)
	}
	// Readable by others: refused, and the daemon does not start.
	dir := t.TempDir()
	_, err := harness.Command(harness.Bin(t, "provisiond"), nil, "--config", os.DevNull, "--data-dir", filepath.Join(dir, "data"),
		"--socket", filepath.Join(dir, "sock"), "run", "--explorer", "http://"+harness.FreeAddr(t), "--registry-auth", authFile)
	if err == nil || !strings.Contains(err.Error(), "--registry-auth") || !strings.Contains(err.Error(), "mode 0644") || strings.Contains(err.Error(), "builder") {
		t.Fatalf("provisiond run with a credentials file of mode 0644: %v", err)
	}
	if err := os.Chmod(authFile, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", authDir) // provctl's credentials

	s := startNode(t, "--insecure-registries", strings.Join([]string{reg.Host, locked.Host, down.Registry, private.Host}, ","),
		"--registry-auth", authFile)
	user, nodeID := s.User, s.NodeID
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "regerr", "--ip-range", "10.237.0.0/16", "--subnet", "10.237.1.0/24", "--duration", "1h")
	user.WaitResult(t, netID, provision.StateOk, within)
	// Two at a time: the node has 2 cores and each container takes 1
	// until its pull fails.
	for i := 0; i < len(cases); i += 2 {
		batch := cases[i:min(i+2, len(cases))]
		ids := make([]string, len(batch))
		for j, c := range batch {
			ids[j] = user.Reserve(t, "container", ctrArgs(nodeID, c.ref.String(), "regerr", fmt.Sprintf("10.237.1.%d", 10+i+j))...)
		}
		for j, c := range batch {
			res := user.WaitResult(t, ids[j], provision.StateError, within)
			for _, w := range c.want {
				if !strings.Contains(res.Message, w) {
					t.Errorf("%s: the signed error %q does not name %q", c.name, res.Message, w)
				}
			}
			t.Logf("%s: %s", c.name, res.Message)
		}
	}

	data := filepath.Join(s.Node.Dir, "data")
	out, err := exec.Command("runc", "--root", filepath.Join(data, "runc"), "list", "-q").Output()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("runc containers left: %q %v", out, err)
	}
	if left := dirNames(t, filepath.Join(data, "containers")); len(left) != 0 {
		t.Errorf("container bundles left: %v", left)
	}
	if left := dirNames(t, filepath.Join(data, "blobs", "ingest")); len(left) != 0 {
		t.Errorf("partial downloads left: %v", left)
	}
	// No pull succeeded: the store keeps nothing, not even the valid
	// base layer and configs fetched before a later layer failed.
	if blobs := dirNames(t, filepath.Join(data, "blobs", "sha256")); len(blobs) != 0 {
		t.Errorf("blobs left: %v", blobs)
	}
	for _, l := range dirNames(t, filepath.Join(data, "layers")) {
		if l != "sha256" {
			t.Errorf("an unpack directory is left: %s", l)
		}
	}
	if layers := dirNames(t, filepath.Join(data, "layers", "sha256")); len(layers) != 0 {
		t.Errorf("unpacked layers left: %v", layers)
	}
	if rows := imageRows(t, s.Node); len(rows) != 0 {
		t.Errorf("image ls lists failed images: %+v", rows)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), s.Node.Dir) {
		t.Errorf("mounts under the node's data dir are left")
	}

	tag := private.Host + "/app:test"
	res, stderr := provctlErr(t, user, append([]string{"reserve", "container"}, ctrArgs(nodeID, tag, "regerr", "10.237.1.30")...)...)
	if want := fmt.Sprintf("resolved %s to %s", tag, privateRef); !strings.Contains(stderr, want) {
		t.Fatalf("provctl reserve printed %q, want %q", stderr, want)
	}
	id := strings.TrimSpace(res)
	user.WaitResult(t, id, provision.StateOk, within)
	waitLogs(t, user, id, "hello from the private registry")
	if _, err := user.Run(t, "delete", id); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, id, provision.StateDeleted, within)
}

// TestRegistryImportOffline imports an OCI layout on a node that reaches
// no registry (its reference names a host where nothing listens), runs
// a reservation of the imported digest, and shows that image prune,
// even with --imported, keeps the image while the reservation references
// it and removes it once the reservation is deleted.
func TestRegistryImportOffline(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.RequiresCommand(t, "runc")
	img := appImage(t, registrytest.BusyboxLayer(t), "hello from the layout")
	lay := registrytest.WriteLayout(t, img)
	d, _ := img.Digest()
	offline := harness.FreeAddr(t)

	s := startNode(t, "--insecure-registries", offline)
	user, nodeID, node := s.User, s.NodeID, s.Node
	out, err := node.CLI(t, "image", "import", lay)
	if err != nil || !strings.Contains(out, "imported sha256:"+d.Hex) {
		t.Fatalf("image import: %v: %s", err, out)
	}
	ref := provision.ImageRef{Registry: offline, Repository: "offline/app", Digest: d.Hex}
	netID := user.Reserve(t, "network", "--node", nodeID, "--name", "offline", "--ip-range", "10.238.0.0/16", "--subnet", "10.238.1.0/24", "--duration", "1h")
	id := user.Reserve(t, "container", ctrArgs(nodeID, ref.String(), "offline", "10.238.1.10")...)
	user.WaitResult(t, netID, provision.StateOk, within)
	user.WaitResult(t, id, provision.StateOk, within)
	waitLogs(t, user, id, "hello from the layout")

	prune := func() string {
		t.Helper()
		out, err := node.CLI(t, "image", "prune", "--imported")
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	listed := func() *imageRow {
		for _, r := range imageRows(t, node) {
			if r.Digest == d.Hex {
				return &r
			}
		}
		return nil
	}
	// image prune runs on a stopped node only.
	node.Stop(t)
	t.Logf("prune with the reservation live: %s", strings.TrimSpace(prune()))
	if r := listed(); r == nil || !r.Imported || !slices.Equal(r.ReferencedBy, []string{id}) {
		t.Fatalf("image prune --imported removed the image a live reservation references, or it is not listed as imported and referenced: %+v", r)
	}
	node.Start(t)
	if _, err := user.Run(t, "delete", id); err != nil {
		t.Fatal(err)
	}
	user.WaitResult(t, id, provision.StateDeleted, within)
	node.Stop(t)
	out = prune()
	t.Logf("prune after the delete: %s", strings.TrimSpace(out))
	if r := listed(); r != nil {
		t.Fatalf("image prune --imported kept the image nothing references: %+v", r)
	}
	node.Start(t)
}
