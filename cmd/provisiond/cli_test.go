package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// binary is the provisiond built once for the CLI tests.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "provisiond-cli")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "provisiond")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building provisiond: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func seed(b byte) []byte { return bytes.Repeat([]byte{b}, ed25519.SeedSize) }

var (
	epoch   = time.Date(2030, time.March, 1, 12, 0, 0, 0, time.UTC)
	nodeKey = ed25519.NewKeyFromSeed(seed(7))
	userKey = ed25519.NewKeyFromSeed(seed(9))
)

// fillNode writes an identity and a store with one record per interesting
// state into a fresh data directory and returns it.
func fillNode(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "identity.key"), []byte(hex.EncodeToString(nodeKey.Seed())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nodeID := identity.NodeID(nodeKey.Public().(ed25519.PublicKey))
	st, err := cache.Open(filepath.Join(dir, "provisiond.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, f := range []struct {
		typ   provision.ReservationType
		data  string
		state provision.State
		units provision.Units
		rst   provision.ResultState
		msg   string
	}{
		{provision.NetworkReservation, `{"name":"net","ip_range":"10.1.0.0/16","subnet":"10.1.1.0/24"}`, provision.Deployed, provision.Units{}, provision.StateOk, ""},
		{provision.VolumeReservation, `{"size":2,"type":"ssd"}`, provision.Deployed, provision.Units{SRU: 2}, provision.StateOk, ""},
		{provision.VolumeReservation, `{"size":1,"type":"hdd"}`, provision.Failed, provision.Units{HRU: 1}, provision.StateError, "not enough capacity: hru"},
		{provision.ContainerReservation, `{"image":"/img.tar","image_digest":"` + strings.Repeat("ab", 32) + `","entrypoint":["/bin/sh"],"network":{"network_id":"","ip":""},"capacity":{"cpu":1,"memory":512,"disk_size":256}}`, provision.Deleted, provision.Units{CRU: 1, MRU: 0.5, SRU: 0.25}, provision.StateDeleted, ""},
	} {
		r := &provision.Reservation{
			ID: fmt.Sprintf("r%d", i+1), NodeID: nodeID, Type: f.typ, Data: json.RawMessage(f.data),
			Created: epoch.Add(time.Duration(i) * time.Minute), Duration: 24 * time.Hour,
		}
		r.Sign(userKey)
		res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: nodeID, Digest: r.Digest(), Version: r.Version,
			Created: r.Created.Add(time.Second), State: f.rst, Message: f.msg}
		if err := res.Sign(provision.KeySigner(nodeKey)); err != nil {
			t.Fatal(err)
		}
		rec := &provision.Record{Reservation: r, Digest: r.Digest(), State: provision.Accepted, Units: f.units, Updated: r.Created}
		rec.Move(provision.Accepted, r.Created, "")
		if err := st.Add(rec); err != nil {
			t.Fatal(err)
		}
		rec.Move(f.state, r.Created.Add(time.Second), f.msg)
		rec.Result = res
		if i == 0 { // the explorer refused its result for good
			rec.Refused = &provision.ResultRefusal{State: res.State, Created: res.Created, Reason: "digest-conflict",
				Message: "explorer answered 409: result answers another digest", At: res.Created.Add(time.Minute)}
		}
		if err := st.Save(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.SetCursor(pollCursor, 42); err != nil {
		t.Fatal(err)
	}
	return dir
}

// provisiond runs the built binary against data dir dir with no daemon.
func provisiond(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	full := append([]string{"--data-dir", dir, "--socket", filepath.Join(dir, "none.sock"), "--config", os.DevNull,
		"--ssd-path", dir, "--hdd-path", dir}, args...)
	cmd := exec.CommandContext(t.Context(), binary, full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(e.String(), "panic") || strings.Contains(e.String(), "goroutine ") {
		t.Fatalf("provisiond %v panicked:\n%s", args, e.String())
	}
	return o.String(), e.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s:\n--- got\n%s\n--- want\n%s", name, path, got, want)
	}
}

var diskLine = regexp.MustCompile(`(?m)^(disk: +)images .*$`)

func TestCLIGolden(t *testing.T) {
	dir := fillNode(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"cache-ls", []string{"cache", "ls"}},
		{"cache-ls-json", []string{"cache", "ls", "--json"}},
		{"cache-ls-deployed-volumes", []string{"cache", "ls", "--state", "deployed", "--type", "volume"}},
		{"cache-show", []string{"cache", "show", "r2"}},
		{"cache-show-json", []string{"cache", "show", "--json", "r3"}},
		{"cache-show-refused", []string{"cache", "show", "r1"}},
		{"cache-show-refused-json", []string{"cache", "show", "--json", "r1"}},
		{"cache-export", []string{"cache", "export"}},
		{"status", []string{"status", "--checks=false"}},
		{"key-show", []string{"key", "show"}},
		{"key-show-json", []string{"key", "show", "--json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := provisiond(t, dir, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			// The disk usage is measured: sizes and time vary.
			out = diskLine.ReplaceAllString(out, "${1}$$DISK")
			golden(t, tc.name, strings.ReplaceAll(out, dir, "$DATA"))
		})
	}
}

func TestCLIStats(t *testing.T) {
	dir := fillNode(t)
	out, errOut, code := provisiond(t, dir, "stats", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s provision.Stats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	// Only deployed records count: the network (nothing) and the 2 GiB SSD volume.
	want := provision.Units{SRU: 2}
	if s.Used != want || s.Workloads[provision.VolumeReservation] != 1 || s.Workloads[provision.NetworkReservation] != 1 {
		t.Fatalf("stats = %+v, want used %+v and one network and one volume", s, want)
	}
	if s.Capacity.Total.CRU == 0 || s.Capacity.Total.MRU == 0 {
		t.Fatalf("capacity not measured: %+v", s.Capacity)
	}
	table, _, code := provisiond(t, dir, "stats")
	if code != 0 || !strings.Contains(table, "sru") || !strings.Contains(table, "volume") || !strings.Contains(table, "quota per user: unlimited") {
		t.Fatalf("stats table (exit %d):\n%s", code, table)
	}
}

// stats shows each user's usage beside the quota that applies to the
// user: the default (--user-quota) or the user's line of
// --user-quota-file; a bad quota file is refused with its line.
func TestCLIStatsQuotas(t *testing.T) {
	dir := fillNode(t)
	user := hex.EncodeToString(userKey.Public().(ed25519.PublicKey))
	file := filepath.Join(dir, "quotas")
	if err := os.WriteFile(file, []byte("# test\n"+user+" sru=10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := provisiond(t, dir, "stats", "--json", "--user-quota", "cru=4,workloads=5", "--user-quota-file", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s admin.Stats
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	wantQuota := provision.Quota{Units: provision.Units{CRU: 4, SRU: 10}, Workloads: 5}
	if len(s.Users) != 1 || s.Users[0].User != user || s.Users[0].Used != (provision.Usage{Units: provision.Units{SRU: 2}, Workloads: 2}) || s.Users[0].Quota != wantQuota {
		t.Fatalf("users %+v, want %s using 2 GiB SRU in 2 workloads with quota %+v", s.Users, user, wantQuota)
	}
	if s.Quotas.Default != (provision.Quota{Units: provision.Units{CRU: 4}, Workloads: 5}) || s.Used.SRU != 2 {
		t.Fatalf("stats %+v", s)
	}
	table, _, code := provisiond(t, dir, "stats", "--user-quota", "cru=4,workloads=5", "--user-quota-file", file)
	for _, want := range []string{"quota per user: cru=4,workloads=5 (1 users with their own)", user, "cru=4,sru=10,workloads=5"} {
		if code != 0 || !strings.Contains(table, want) {
			t.Fatalf("stats table (exit %d) lacks %q:\n%s", code, want, table)
		}
	}
	if err := os.WriteFile(file, []byte(user+" sru=10\n"+user+" cru=1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = provisiond(t, dir, "stats", "--user-quota-file", file)
	if code == 0 || !strings.Contains(errOut, "line 2: user "+user+" named twice") {
		t.Fatalf("a bad quota file: exit %d, %s", code, errOut)
	}
	_, errOut, code = provisiond(t, dir, "stats", "--user-quota", "cpu=1")
	if code == 0 || !strings.Contains(errOut, `--user-quota: provision: bad quota: quota "cpu=1": unknown key "cpu"`) {
		t.Fatalf("a bad quota: exit %d, %s", code, errOut)
	}
}

func TestCLIErrors(t *testing.T) {
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "provisiond.db"), bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	locked := fillNode(t)
	st, err := cache.Open(filepath.Join(locked, "provisiond.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, tc := range []struct {
		name string
		dir  string
		args []string
		want string
	}{
		{"missing-database", t.TempDir(), []string{"cache", "ls"}, "no database at"},
		{"missing-database-status", t.TempDir(), []string{"status"}, "no database at"},
		{"locked-database", locked, []string{"cache", "ls"}, "is locked by a running provisiond"},
		{"corrupt-database", corrupt, []string{"stats"}, "is corrupt"},
		{"unknown-record", fillNode(t), []string{"cache", "show", "nope"}, `no reservation "nope"`},
		{"bad-state-filter", fillNode(t), []string{"cache", "ls", "--state", "running"}, `--state "running"`},
		{"no-identity", t.TempDir(), []string{"key", "show"}, "no node identity"},
		{"run-without-explorer", t.TempDir(), []string{"run"}, "--explorer"},
		{"run-local-images-missing", t.TempDir(), []string{"run", "--explorer", "http://127.0.0.1:1", "--local-images", "/nonexistent/images"}, "--local-images: stat /nonexistent/images: no such file"},
		{"run-local-images-not-a-directory", t.TempDir(), []string{"run", "--explorer", "http://127.0.0.1:1", "--local-images", "/etc/hostname"}, "--local-images /etc/hostname is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := provisiond(t, tc.dir, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, out, errOut)
			}
			lines := strings.Split(strings.TrimSpace(errOut), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "provisiond: ") || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("stderr %q: want one line starting with %q containing %q", errOut, "provisiond: ", tc.want)
			}
		})
	}
}

// runEnv runs the built binary with exactly args and env.
func runEnv(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestGlobalFlagsInEitherPosition(t *testing.T) {
	dir := fillNode(t)
	sock := filepath.Join(dir, "none.sock")
	before, errOut, code := runEnv(t, nil, "--config", os.DevNull, "--data-dir", dir, "--socket", sock, "cache", "ls")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	after, errOut, code := runEnv(t, nil, "cache", "ls", "--config", os.DevNull, "--data-dir", dir, "--socket", sock)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if before != after || !strings.Contains(before, "r2") {
		t.Fatalf("flags before and after the command differ:\n%s\n---\n%s", before, after)
	}
}

func TestConfigFilePrecedence(t *testing.T) {
	fromFile, fromEnv, fromFlag := fillNode(t), fillNode(t), fillNode(t)
	conf := filepath.Join(t.TempDir(), "provisiond.conf")
	content := "# node settings\nPROVISIOND_DATA_DIR=\"" + fromFile + "\"\nPROVISIOND_SOCKET=" + filepath.Join(fromFile, "none.sock") + "\n"
	if err := os.WriteFile(conf, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"file", nil, []string{"--config", conf, "status", "--json"}, fromFile},
		{"env-over-file", []string{"PROVISIOND_DATA_DIR=" + fromEnv}, []string{"--config", conf, "status", "--json"}, fromEnv},
		{"flag-over-env", []string{"PROVISIOND_DATA_DIR=" + fromEnv}, []string{"--config", conf, "status", "--json", "--data-dir", fromFlag}, fromFlag},
		{"config-from-env", []string{"PROVISIOND_CONFIG=" + conf}, []string{"status", "--json"}, fromFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runEnv(t, tc.env, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.Contains(out, filepath.Join(tc.want, "provisiond.db")) {
				t.Fatalf("status read the wrong database, want %s:\n%s", tc.want, out)
			}
		})
	}
	bad := filepath.Join(t.TempDir(), "bad.conf")
	if err := os.WriteFile(bad, []byte("DATA_DIR=/x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runEnv(t, nil, "--config", bad, "status")
	if code != 1 || !strings.Contains(errOut, "want PROVISIOND_NAME=value") {
		t.Fatalf("a bad config line: exit %d, %q", code, errOut)
	}
	_, errOut, code = runEnv(t, nil, "--config", filepath.Join(t.TempDir(), "absent.conf"), "status")
	if code != 1 || !strings.Contains(errOut, "reading config file") {
		t.Fatalf("an explicit missing config file: exit %d, %q", code, errOut)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"10MiB": 10 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, "4096": 4096, " 2 MiB ": 2 << 20} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "10MB", "MiB", "1.5MiB", "2000000GiB"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestCLIStatusDisk shows the disk the node's data takes, as JSON too.
func TestCLIStatusDisk(t *testing.T) {
	dir := fillNode(t)
	if err := os.MkdirAll(filepath.Join(dir, "images", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "images", "x", "f"), make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := provisiond(t, dir, "status", "--checks=false", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s admin.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Disk == nil || s.Disk.Images < 1<<20 || s.Disk.Database == 0 || s.Disk.MeasuredAt.IsZero() {
		t.Fatalf("status disk = %+v, want the 1 MiB image and the database measured", s.Disk)
	}
	text, _, code := provisiond(t, dir, "status", "--checks=false")
	if code != 0 || !regexp.MustCompile(`disk: +images 1\.0 MiB, containers .*, volumes .*, logs .*, database `).MatchString(text) {
		t.Fatalf("status (exit %d):\n%s", code, text)
	}
}
