package provctl_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer/explorertest"
	"github.com/edgeprov/provisiond/explorer/provctl"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// cli runs provctl in-process against an explorer with a key file.
type cli struct {
	t        testing.TB
	explorer string
	key      string
}

func (c cli) run(args ...string) (string, error) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	argv := append([]string{"provctl", "--explorer", c.explorer, "--key", c.key}, args...)
	err := provctl.Run(c.t.Context(), argv, &out, &errOut)
	return out.String(), err
}

func (c cli) must(args ...string) string {
	c.t.Helper()
	out, err := c.run(args...)
	if err != nil {
		c.t.Fatalf("provctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// answer has the node sign and deliver a result for reservation id.
func answer(t testing.TB, xs *explorertest.Server, node ed25519.PrivateKey, id string, state provision.ResultState) {
	t.Helper()
	r := xs.Reservation(t, id)
	res := &provision.Result{Type: r.Type, ID: id, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: state}
	if err := res.Sign(provision.KeySigner(node)); err != nil {
		t.Fatal(err)
	}
	if err := xs.NodeClient(node).Feedback(t.Context(), r.NodeID, res); err != nil {
		t.Fatal(err)
	}
}

func TestProvctlAgainstExplorer(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "provctl", "key")}

	if _, err := c.run("ls"); err == nil || !strings.Contains(err.Error(), "provctl key new") {
		t.Fatalf("ls without a key: %v, want a hint to create one", err)
	}
	user := strings.TrimSpace(c.must("key", "new"))
	key, err := identity.Load(c.key)
	if err != nil || identity.UserID(key.Public().(ed25519.PublicKey)) != user {
		t.Fatalf("key new printed %q; the file holds %v", user, err)
	}
	if _, err := c.run("key", "new"); err == nil {
		t.Fatal("key new overwrote an existing key")
	}
	if got := strings.TrimSpace(c.must("key", "show")); got != user {
		t.Fatalf("key show = %q, want %q", got, user)
	}

	vol := strings.TrimSpace(c.must("reserve", "volume", "--node", nodeID, "--size", "2", "--type", "hdd", "--duration", "2h"))
	if err := provision.ValidName("id", vol); err != nil {
		t.Fatalf("reserve printed %q: %v", vol, err)
	}
	netOut := strings.TrimSpace(c.must("reserve", "network", "--node", nodeID, "--name", "lan", "--ip-range", "10.1.0.0/16", "--subnet", "10.1.2.0/24"))
	ctr := strings.TrimSpace(c.must("reserve", "container", "--node", nodeID, "--image", "/images/rootfs.tar", "--image-digest", strings.Repeat("ab", 32),
		"--entrypoint", "/bin/sh", "--entrypoint", "-c", "--entrypoint", "sleep 1", "--env", "A=1", "--mount", vol+":/data",
		"--network", "lan", "--ip", "10.1.2.10", "--cpu", "1", "--memory", "64", "--disk", "256"))

	var listed []*provision.Reservation
	if err := json.Unmarshal([]byte(c.must("ls", "--json")), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 3 {
		t.Fatalf("ls --json listed %d reservations, want 3", len(listed))
	}
	byID := map[string]*provision.Reservation{}
	for _, r := range listed {
		byID[r.ID] = r
		if err := provision.Validate(r, nodeID, time.Now()); err != nil {
			t.Fatalf("reservation %s would be refused by the node: %v", r.ID, err)
		}
	}
	var ct provision.Container
	if err := provision.DecodeData(byID[ctr].Data, &ct); err != nil {
		t.Fatal(err)
	}
	if ct.Network.NetworkID != provision.NetworkID(user, "lan") || ct.Env["A"] != "1" || ct.Mounts[0].VolumeID != vol || len(ct.Entrypoint) != 3 {
		t.Fatalf("container data %+v does not hold the flags", ct)
	}
	if byID[netOut] == nil || byID[vol].Duration != 2*time.Hour {
		t.Fatalf("ls --json: %+v", listed)
	}
	if table := c.must("ls"); !strings.Contains(table, "STATE") || !strings.Contains(table, vol) || !strings.Contains(table, "pending") {
		t.Fatalf("ls table:\n%s", table)
	}

	if out := c.must("get", vol); !strings.Contains(out, "result:    none yet") && !strings.Contains(out, "none yet") {
		t.Fatalf("get before a result:\n%s", out)
	}
	answer(t, xs, node, vol, provision.StateOk)
	if out := c.must("get", vol); !strings.Contains(out, "signatures:") || !strings.Contains(out, "node "+nodeID+", digest bound") || !strings.Contains(out, "(you)") {
		t.Fatalf("get after the result:\n%s", out)
	}
	if out := c.must("watch", vol, "--until", "ok", "--timeout", "10s", "--interval", "10ms"); !strings.Contains(out, "ok (signature verified)") {
		t.Fatalf("watch: %s", out)
	}
	if _, err := c.run("watch", vol, "--until", "error", "--timeout", "10s", "--interval", "10ms"); !errors.Is(err, provctl.ErrWatch) {
		t.Fatalf("watch --until error on an ok result: %v", err)
	}

	if out := c.must("delete", vol); !strings.Contains(out, "delete signed") {
		t.Fatalf("delete: %s", out)
	}
	answer(t, xs, node, vol, provision.StateDeleted)
	c.must("watch", vol, "--until", "deleted", "--timeout", "10s", "--interval", "10ms")
	if !xs.Reservation(t, vol).ToDelete {
		t.Fatal("the explorer does not hold the delete")
	}

	// Another user cannot delete it.
	other := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	other.must("key", "new")
	if _, err := other.run("delete", ctr); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("delete by another user: %v, want a 403", err)
	}
}

func TestProvctlRefusesBadInput(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	nodeID := explorertest.NodeID(node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad-node", []string{"reserve", "volume", "--node", "nope", "--size", "1"}, "--node"},
		{"bad-disk-type", []string{"reserve", "volume", "--node", nodeID, "--size", "1", "--type", "tape"}, "type"},
		{"zero-size", []string{"reserve", "volume", "--node", nodeID, "--size", "0"}, "size"},
		{"bad-env", []string{"reserve", "container", "--node", nodeID, "--image", "/x.tar", "--image-digest", strings.Repeat("0", 64), "--env", "NOEQUALS", "--network", "n", "--ip", "10.0.0.2"}, "K=V"},
		{"bad-mount", []string{"reserve", "container", "--node", nodeID, "--image", "/x.tar", "--image-digest", strings.Repeat("0", 64), "--mount", "nocolon", "--network", "n", "--ip", "10.0.0.2"}, "VOLID:/path"},
		{"get-without-id", []string{"get"}, "exactly one"},
		{"get-unknown", []string{"get", "missing"}, "404"},
		{"watch-bad-state", []string{"watch", "x", "--until", "done"}, "--until"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.run(tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

// A compromised explorer can relay a result it forged; get must say so.
func TestGetDetectsForgedResult(t *testing.T) {
	user, node, forger := explorertest.NewKey(t), explorertest.NewKey(t), explorertest.NewKey(t)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Sign(user)
	r.ID = "abc"
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(forger)); err != nil {
		t.Fatal(err)
	}
	r.Result = res
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(r)
	}))
	defer fake.Close()
	c := cli{t: t, explorer: fake.URL, key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	out, err := c.run("get", "abc")
	if !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("get of a forged result: %v\n%s", err, out)
	}
}

// fakeExplorer serves rs as the explorer would: GET /api/v1/reservations/ID
// and the user's list.
func fakeExplorer(t testing.TB, rs ...*provision.Reservation) string {
	t.Helper()
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/api/v1/reservations" {
			json.NewEncoder(w).Encode(map[string]any{"reservations": rs})
			return
		}
		for _, r := range rs {
			if strings.HasSuffix(req.URL.Path, "/"+r.ID) {
				json.NewEncoder(w).Encode(r)
				return
			}
		}
		http.NotFound(w, req)
	}))
	t.Cleanup(fake.Close)
	return fake.URL
}

// signedResult returns node's result for r, answering r's digest.
func signedResult(t testing.TB, r *provision.Reservation, node ed25519.PrivateKey) *provision.Result {
	t.Helper()
	res := &provision.Result{Type: r.Type, ID: r.ID, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk}
	if err := res.Sign(provision.KeySigner(node)); err != nil {
		t.Fatal(err)
	}
	return res
}

func TestGetChecksTheOwnerSignature(t *testing.T) {
	c := cli{t: t, key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	key, err := identity.Load(c.key)
	if err != nil {
		t.Fatal(err)
	}
	node := explorertest.NewKey(t)
	tests := []struct {
		name   string
		tamper func(*provision.Reservation)
		want   string
	}{
		{"data-changed-after-signing", func(r *provision.Reservation) { r.Data = []byte(`{"size":99,"type":"ssd"}`) }, "owner signature"},
		{"signature-of-another-key", func(r *provision.Reservation) {
			r.Sign(explorertest.NewKey(t))
			r.UserID = identity.UserID(key.Public().(ed25519.PublicKey))
		}, "owner signature"},
		{"no-signature", func(r *provision.Reservation) { r.Signature = "" }, "owner signature"},
		{"forged-delete", func(r *provision.Reservation) { r.ToDelete, r.DeleteSignature = true, strings.Repeat("00", 64) }, "delete's owner signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := explorertest.Volume(explorertest.NodeID(node), 1)
			r.Sign(key)
			r.ID = "abc"
			tt.tamper(r)
			// The node answers the reservation as it is now: only the owner's
			// signature can tell that it is not what the user signed.
			r.Result = signedResult(t, r, node)
			c := c
			c.explorer = fakeExplorer(t, r)
			out, err := c.run("get", "abc")
			if !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(out, "NOT VERIFIED") {
				t.Fatalf("get: %v\n%s", err, out)
			}
			jout, err := c.run("get", "abc", "--json")
			if !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(jout, `"verified": false`) {
				t.Fatalf("get --json: %v\n%s", err, jout)
			}
			if _, err := c.run("watch", "abc", "--timeout", "5s", "--interval", "10ms"); !errors.Is(err, provctl.ErrUnverified) {
				t.Fatalf("watch: %v", err)
			}
			if _, err := c.run("ls"); !errors.Is(err, provctl.ErrUnverified) {
				t.Fatalf("ls: %v", err)
			}
		})
	}
}

func TestGetSaysWhoseReservationItIs(t *testing.T) {
	stranger, node := explorertest.NewKey(t), explorertest.NewKey(t)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Sign(stranger)
	r.ID = "abc"
	r.Result = signedResult(t, r, node)
	c := cli{t: t, explorer: fakeExplorer(t, r), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	// Someone else's reservation that verifies is shown, and says so plainly.
	out := c.must("get", "abc")
	if !strings.Contains(out, "NOT YOU: someone else's reservation") || strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("get of another user's reservation:\n%s", out)
	}
	var got struct {
		Verified bool `json:"verified"`
		Mine     bool `json:"owner_is_caller"`
	}
	if err := json.Unmarshal([]byte(c.must("get", "abc", "--json")), &got); err != nil || !got.Verified || got.Mine {
		t.Fatalf("get --json: %+v %v", got, err)
	}
	// A listing of "your" reservations that holds another user's is an error.
	out, err := c.run("ls")
	if !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(err.Error(), "not by your key") || !strings.Contains(out, "NOT VERIFIED") {
		t.Fatalf("ls with another user's reservation: %v\n%s", err, out)
	}
}

func TestIdenticalReservationsInOneSecondAreTwo(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	args := []string{"reserve", "volume", "--node", explorertest.NodeID(node), "--size", "1", "--type", "ssd"}
	seen := map[string]bool{}
	for range 5 {
		id := strings.TrimSpace(c.must(args...))
		if seen[id] {
			t.Fatalf("reservation %s returned twice", id)
		}
		seen[id] = true
	}
	digests := map[string]bool{}
	for id := range seen {
		r := xs.Reservation(t, id)
		if err := r.Verify(); err != nil {
			t.Fatal(err)
		}
		digests[r.Digest()] = true
	}
	if len(digests) != 5 {
		t.Fatalf("%d digests for 5 reservations", len(digests))
	}
}

func TestWholeSecondReservationsStillVerify(t *testing.T) {
	// An older provctl cut created to whole seconds; its signature covers
	// the same RFC 3339 text, so it still verifies, and its replay is
	// still refused by digest.
	xs := explorertest.New(t)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	user, err := identity.Load(c.key)
	if err != nil {
		t.Fatal(err)
	}
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	r := explorertest.Volume(explorertest.NodeID(node), 1)
	r.Created = time.Now().UTC().Truncate(time.Second)
	r.Sign(user)
	uc := xs.UserClient(user)
	id, err := uc.CreateReservation(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	again := *r
	again.ID = ""
	if _, err := uc.CreateReservation(t.Context(), &again); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("replay of a whole-second reservation: %v, want 409", err)
	}
	answer(t, xs, node, id, provision.StateOk)
	if out := c.must("get", id); !strings.Contains(out, "digest bound") {
		t.Fatalf("get of an old provctl's reservation:\n%s", out)
	}
}

func TestListOutputFormats(t *testing.T) {
	xs := explorertest.New(t)
	node := explorertest.NewKey(t)
	xs.RegisterNode(t, node)
	c := cli{t: t, explorer: xs.URL(), key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	id := strings.TrimSpace(c.must("reserve", "volume", "--node", explorertest.NodeID(node), "--size", "1", "--type", "ssd", "--reference", "ref-1"))
	answer(t, xs, node, id, provision.StateOk)
	digest := xs.Reservation(t, id).Digest()

	table := c.must("ls")
	if !strings.Contains(table, id) || strings.Contains(table, digest) || strings.Contains(table, "VERIFIED") {
		t.Fatalf("ls:\n%s", table)
	}
	if again := c.must("ls", "--output", "table"); again != table {
		t.Fatalf("ls --output table differs from ls:\n%s", again)
	}
	wide := c.must("ls", "-o", "wide")
	for _, want := range []string{"DIGEST", "VERIFIED", digest, "ref-1", " yes "} {
		if !strings.Contains(wide, want) {
			t.Fatalf("ls -o wide lacks %q:\n%s", want, wide)
		}
	}
	for _, args := range [][]string{{"ls", "--json"}, {"ls", "--output", "json"}} {
		var rs []provision.Reservation
		if err := json.Unmarshal([]byte(c.must(args...)), &rs); err != nil || len(rs) != 1 || rs[0].ID != id {
			t.Fatalf("%v: %v %+v", args, err, rs)
		}
	}
	if _, err := c.run("ls", "--output", "yaml"); !errors.Is(err, provctl.ErrUsage) {
		t.Fatalf("ls --output yaml: %v", err)
	}
}

func TestCompletionScripts(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "provctl")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/edgeprov/provisiond/cmd/provctl").CombinedOutput(); err != nil {
		t.Fatalf("building provctl: %v\n%s", err, out)
	}
	script := func(shell string) string {
		out, err := exec.Command(bin, "completion", shell).Output()
		if err != nil {
			t.Fatalf("provctl completion %s: %v", shell, err)
		}
		return string(out)
	}
	tests := []struct {
		shell, words, want string
	}{
		{"bash", "provctl re", "reserve"},
		{"bash", "provctl reserve c", "container"},
		{"bash", "provctl ls --o", "--output"},
		{"zsh", "provctl reserve ''", "volume"}, // zsh's words end with the word being completed
		{"zsh", "provctl ls --o", "--output"},
	}
	for _, tt := range tests {
		t.Run(tt.shell+"-"+strings.NewReplacer(" ", "-", "'", "").Replace(tt.words), func(t *testing.T) {
			sh, err := exec.LookPath(tt.shell)
			if err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("%s is not installed (scripts/deps.sh installs it)", tt.shell)
				}
				t.Skipf("%s is not installed", tt.shell)
			}
			words := strings.Fields(tt.words)
			words[0] = bin
			var prog string
			if tt.shell == "bash" {
				// Call the completion function as bash does, then print its answer.
				prog = fmt.Sprintf("COMP_WORDS=(%s); COMP_CWORD=%d; _provctl_complete; printf '%%s\\n' \"${COMPREPLY[@]}\"",
					strings.Join(words, " "), len(words)-1)
			} else {
				// zsh's completion system needs a terminal; stand in for _describe.
				prog = fmt.Sprintf("words=(%s); _describe() { print -l -- \"${opts[@]}\"; }; _provctl",
					strings.Join(words, " "))
			}
			dir := t.TempDir()
			file := filepath.Join(dir, "completion")
			if err := os.WriteFile(file, []byte(script(tt.shell)), 0o644); err != nil {
				t.Fatal(err)
			}
			src := "source " + file + "; " + prog
			if tt.shell == "zsh" {
				src = "autoload -U compinit; compinit -u; " + src
			}
			cmd := exec.Command(sh, "-c", src)
			cmd.Env = append(os.Environ(), "HOME="+dir, "ZDOTDIR="+dir)
			out, err := cmd.CombinedOutput()
			if err != nil || !slices.Contains(strings.Fields(string(out)), tt.want) {
				t.Fatalf("%s completion of %q: %v, want %q among:\n%s", tt.shell, tt.words, err, tt.want, out)
			}
		})
	}
	if _, err := exec.Command(bin, "completion", "fish").Output(); err == nil {
		t.Fatal("completion fish: no error")
	}
}

// TestSmallOrderKeysAreNotVerified: with the identity point as a public
// key, one signature (R = identity, S = 0) verifies for every message in
// crypto/ed25519, so a node or user "registered" with it could have
// anything forged in its name. provctl refuses to call such a result or
// reservation verified.
func TestSmallOrderKeysAreNotVerified(t *testing.T) {
	weak := make(ed25519.PublicKey, ed25519.PublicKeySize)
	weak[0] = 1 // the identity point
	forgery := hex.EncodeToString(append(bytes.Clone(weak), make([]byte, 32)...))
	c := cli{t: t, key: filepath.Join(t.TempDir(), "key")}
	c.must("key", "new")
	user, err := identity.Load(c.key)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("node-key", func(t *testing.T) {
		r := explorertest.Volume(identity.NodeID(weak), 1)
		r.Sign(user)
		r.ID = "abc"
		r.Result = &provision.Result{Type: r.Type, ID: r.ID, NodeID: r.NodeID, Digest: r.Digest(), Created: time.Now().UTC(), State: provision.StateOk, Signature: forgery}
		if err := r.Result.Verify(weak); err != nil {
			t.Fatalf("the premise fails: the forgery does not verify: %v", err)
		}
		c := c
		c.explorer = fakeExplorer(t, r)
		if out, err := c.run("get", "abc"); !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(out, "NOT VERIFIED") {
			t.Fatalf("get of a result forged for a small-order node key: %v\n%s", err, out)
		}
	})
	t.Run("user-key", func(t *testing.T) {
		r := explorertest.Volume(explorertest.NodeID(explorertest.NewKey(t)), 1)
		r.UserID, r.Signature, r.ID = hex.EncodeToString(weak), forgery, "abc"
		if err := r.Verify(); err != nil {
			t.Fatalf("the premise fails: the forgery does not verify: %v", err)
		}
		c := c
		c.explorer = fakeExplorer(t, r)
		if _, err := c.run("get", "abc"); !errors.Is(err, provctl.ErrUnverified) || !strings.Contains(err.Error(), "not a usable ed25519 key") {
			t.Fatalf("get of a reservation forged for a small-order user key: %v", err)
		}
	})
}
