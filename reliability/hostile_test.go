package reliability

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// party is a user with an in-process client.
type party struct {
	user   *harness.User
	client *explorer.Client
	key    ed25519.PrivateKey
	id     string
}

func newParty(t testing.TB, explorerURL string) *party {
	t.Helper()
	u := harness.NewUser(t, explorerURL)
	c, key := userClient(t, u)
	return &party{user: u, client: c, key: key, id: identity.UserID(key.Public().(ed25519.PublicKey))}
}

// hostile builds bad reservations and requests against one node.
type hostile struct {
	t      *testing.T
	ex     *harness.Explorer
	nodeID string
	seq    int
}

// reservation returns a valid, unsigned reservation of p for the node.
func (h *hostile) reservation(p *party, typ provision.ReservationType, data string) *provision.Reservation {
	h.seq++
	return &provision.Reservation{
		NodeID: h.nodeID, UserID: p.id, Type: typ, Data: json.RawMessage(data),
		Created: time.Now().Add(-time.Second).UTC(), Duration: time.Hour, Reference: fmt.Sprintf("hostile-%d", h.seq),
	}
}

// request is one HTTP request of the hostile table: signed by key at at
// (unsigned when key is nil), then changed by tamper, sent once, or twice
// with the same headers when replay is set.
type request struct {
	method string
	path   string
	body   []byte
	key    ed25519.PrivateKey
	at     time.Time
	tamper func(*http.Request)
	replay bool
}

// send makes the request and returns the status and the body of the
// (last) reply.
func (h *hostile) send(rq request) (int, string) {
	h.t.Helper()
	build := func() *http.Request {
		req, err := http.NewRequestWithContext(h.t.Context(), rq.method, h.ex.URL()+rq.path, bytes.NewReader(rq.body))
		if err != nil {
			h.t.Fatal(err)
		}
		return req
	}
	req := build()
	if rq.key != nil {
		if err := explorer.SignRequest(req, rq.key, identity.UserID(rq.key.Public().(ed25519.PublicKey)), rq.body, rq.at); err != nil {
			h.t.Fatal(err)
		}
	}
	if rq.tamper != nil {
		rq.tamper(req)
	}
	status, reply := h.do(req)
	if rq.replay {
		again := build()
		again.Header = req.Header.Clone()
		if status >= 300 {
			h.t.Errorf("%s %s: the first sending of a request to replay got %d %s", rq.method, rq.path, status, trunc(reply))
		}
		status, reply = h.do(again)
	}
	return status, reply
}

func (h *hostile) do(req *http.Request) (int, string) {
	h.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// badNames are names that must never reach a path or an object name.
var badNames = []string{
	"", "..", ".", "../../etc", "a/b", `a\b`, "-lead", ".hidden", "\u202eevil", "nul\x00x", "tab\tname",
	"ünïcode", strings.Repeat("a", 65), "a b", "$(reboot)", "`id`", "prv-../x",
}

// snapshot is what exists on the machine for one node: the objects the
// hostile input must not add to.
type snapshot struct {
	netns  map[string]bool
	mounts []string
	loops  map[string]string
	runc   map[string]runcContainer
	files  map[string]bool // paths below the data directory, relative
}

func takeSnapshot(t testing.TB, n *harness.Node) snapshot {
	t.Helper()
	s := snapshot{netns: map[string]bool{}, mounts: mountsUnder(t, n.Dir), loops: loopsUnder(t, n.Dir),
		runc: runcList(t, runcRoot(n)), files: map[string]bool{}}
	for _, ns := range netnsNames(t) {
		s.netns[ns] = true
	}
	root := dataDir(n)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // removed meanwhile
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			rel += "/"
		}
		s.files[rel] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// objectsOf lists what exists on the machine for reservation id: a
// network or container namespace, a runc container, a mount, a loop device
// or a file under the data directory whose name carries its prefixed name.
func (s snapshot) objectsOf(id string) []string {
	name := provision.Prefix + id
	var found []string
	for _, ns := range []string{name, provision.Prefix + "c-" + id} {
		if s.netns[ns] {
			found = append(found, "netns "+ns)
		}
	}
	if _, ok := s.runc[name]; ok {
		found = append(found, "runc container "+name)
	}
	for _, mp := range s.mounts {
		if strings.Contains(mp, name) {
			found = append(found, "mount "+mp)
		}
	}
	for dev, backing := range s.loops {
		if strings.Contains(backing, name) {
			found = append(found, "loop "+dev+" on "+backing)
		}
	}
	for f := range s.files {
		if strings.Contains(f, name) {
			found = append(found, "file "+f)
		}
	}
	sort.Strings(found)
	return found
}

// added lists what after holds below the node's directory that before did
// not: mounts, loop devices, runc containers, and files other than
// directories without our prefix (the image cache directory a container
// attempt may create).
func added(before, after snapshot) []string {
	var out []string
	for _, mp := range after.mounts {
		if !slices.Contains(before.mounts, mp) {
			out = append(out, "mount "+mp)
		}
	}
	for dev, b := range after.loops {
		if _, ok := before.loops[dev]; !ok {
			out = append(out, "loop "+dev+" on "+b)
		}
	}
	for name := range after.runc {
		if _, ok := before.runc[name]; !ok {
			out = append(out, "runc container "+name)
		}
	}
	for f := range after.files {
		if before.files[f] || (strings.HasSuffix(f, "/") && !strings.Contains(f, provision.Prefix)) {
			continue
		}
		out = append(out, "file "+f)
	}
	sort.Strings(out)
	return out
}

// The kinds of node answer the hostile table expects.
const (
	// answerError: a signed error result naming the problem, and a record
	// that never entered provisioning.
	answerError = iota
	// answerErrorTried: a signed error result naming the problem, found
	// only by trying (fetching the image); its leftovers are removed.
	answerErrorTried
	// answerHeld: the container names a dependency that does not exist
	// (yet): it waits for it without touching anything, until its owner
	// deletes it (or DependencyTimeout, 10 minutes, fails it).
	answerHeld
)

// answered is a signed reservation explorerd takes (it does not judge the
// workload) and the node answers.
type answered struct {
	name   string
	typ    provision.ReservationType
	data   string
	answer int
	msg    string // what the error result's message names
}

// injected is an event only a misbehaving explorer would serve.
type injected struct {
	name string
	raw  []byte
	// msg is what the node's error result names; "" for the cases
	// checked one by one after the table.
	msg string
}

// TestHostileInput sends more than a hundred bad reservations and requests
// to the real explorerd and node (as root, with the real primitives):
// explorerd refuses what it can check with a 4xx whose error names the
// problem, and stores nothing; what reaches the node gets a signed error
// result (verified against the node's key) whose message names the
// problem, or waits harmlessly for a dependency that does not exist; the
// forged and replayed deletes, duplicate IDs and replays an explorer could
// inject change nothing. Through all of it the daemon stays up, and no
// namespace, mount, loop device, runc container or volume image appears
// for any of the hostile reservations; the live workloads stay as they
// were and the used units do not move.
func TestHostileInput(t *testing.T) {
	s := harness.Start(t, harness.SetupOptions{})
	ex, node := s.Explorer, s.Node
	purgeOnCleanup(t, node)
	alice, bob := newParty(t, ex.URL()), newParty(t, ex.URL())
	h := &hostile{t: t, ex: ex, nodeID: s.NodeID}
	nodeK := nodeKey(t, node)

	// What the hostile input aims at: live workloads of two users.
	aliceVol := alice.user.Reserve(t, "volume", "--node", h.nodeID, "--size", "1", "--duration", "1h")
	aliceNet := alice.user.Reserve(t, "network", "--node", h.nodeID, "--name", "alice", "--ip-range", "10.245.0.0/16", "--subnet", "10.245.1.0/24", "--duration", "1h")
	bobVol := bob.user.Reserve(t, "volume", "--node", h.nodeID, "--size", "1", "--duration", "1h")
	bobNet := bob.user.Reserve(t, "network", "--node", h.nodeID, "--name", "bob", "--ip-range", "10.245.0.0/16", "--subnet", "10.245.2.0/24", "--duration", "1h")
	live := []string{aliceVol, aliceNet, bobVol, bobNet}
	for _, id := range live {
		alice.user.WaitResult(t, id, provision.StateOk, converge)
	}
	settled(t, node, converge)
	baseStats := nodeStats(t, node)
	baseRecs := records(t, node)
	aliceVolRes, err := alice.client.GetReservation(t.Context(), aliceVol)
	if err != nil {
		t.Fatal(err)
	}
	aliceNetID, bobNetID := provision.NetworkID(alice.id, "alice"), provision.NetworkID(bob.id, "bob")
	// A marker in alice's volume: provisioning it again would erase it.
	var volData struct{ Path string }
	if err := json.Unmarshal(aliceVolRes.Result.Data, &volData); err != nil || volData.Path == "" {
		t.Fatalf("alice's volume result data %s: %v", aliceVolRes.Result.Data, err)
	}
	marker := filepath.Join(volData.Path, "hostile-marker")
	if err := os.WriteFile(marker, []byte(aliceVol), 0o600); err != nil {
		t.Fatal(err)
	}
	volIno, err := inode(volumeImage(node, aliceVol))
	if err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, node)
	listed := func() map[string]int {
		m := map[string]int{}
		for _, p := range []*party{alice, bob} {
			list, err := p.client.ListReservations(t.Context(), p.id)
			if err != nil {
				t.Fatal(err)
			}
			m[p.id] = len(list)
		}
		return m
	}
	listedBefore := listed()

	// 1. Requests explorerd refuses itself.
	type refused struct {
		name   string
		rq     request
		status int
		msg    string // what the error names (lowercase)
	}
	signedBy := func(p *party, mut func(*provision.Reservation), signer ed25519.PrivateKey) []byte {
		r := h.reservation(p, provision.VolumeReservation, `{"size":1,"type":"ssd"}`)
		if mut != nil {
			mut(r)
		}
		if signer != nil {
			r.Sign(signer)
		}
		return testutil.MustJSON(t, r)
	}
	signed := func(mut func(*provision.Reservation)) []byte { return signedBy(alice, mut, alice.key) }
	withData := func(typ provision.ReservationType, data string) []byte {
		return signed(func(r *provision.Reservation) { r.Type, r.Data = typ, json.RawMessage(data) })
	}
	// post is a reservation sent by alice now.
	post := func(body []byte) request {
		return request{method: "POST", path: "/api/v1/reservations", body: body, key: alice.key, at: time.Now()}
	}
	raw := func(s string) request { return post([]byte(s)) }
	with := func(rq request, change func(*request)) request { change(&rq); return rq }
	del := func(id string, body []byte) request {
		return request{method: "POST", path: "/api/v1/reservations/" + id + "/delete", body: body, key: alice.key, at: time.Now()}
	}
	get := func(path string) request { return request{method: "GET", path: path, key: alice.key, at: time.Now()} }
	otherNode := identity.NodeID(ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey))
	nodePath := "/api/v1/nodes/" + h.nodeID
	bobsDeleteOfAlice := func() []byte {
		r := *aliceVolRes
		r.SignDelete(bob.key)
		return testutil.MustJSON(t, explorer.DeleteRequest{ID: aliceVol, DeleteSignature: r.DeleteSignature})
	}
	refusedCases := []refused{
		// Request signatures: forged, stale, replayed, tampered.
		{"unsigned-request", with(post(signed(nil)), func(r *request) { r.key = nil }), 401, "not signed"},
		{"stale-request-signature", with(post(signed(nil)), func(r *request) { r.at = time.Now().Add(-time.Hour) }), 401, "timestamp"},
		{"future-request-signature", with(post(signed(nil)), func(r *request) { r.at = time.Now().Add(time.Hour) }), 401, "timestamp"},
		{"forged-request-signature", with(post(signed(nil)), func(r *request) {
			r.tamper = func(q *http.Request) { q.Header.Set(explorer.HeaderSignature, testutil.RandHex(t, 64)) }
		}), 401, "does not verify"},
		{"request-signature-not-hex", with(post(signed(nil)), func(r *request) {
			r.tamper = func(q *http.Request) { q.Header.Set(explorer.HeaderSignature, "zz") }
		}), 401, "signature"},
		{"request-key-of-another-user", with(post(signed(nil)), func(r *request) {
			r.tamper = func(q *http.Request) { q.Header.Set(explorer.HeaderKey, bob.id) }
		}), 401, "does not verify"},
		{"request-key-garbage", with(post(signed(nil)), func(r *request) {
			r.tamper = func(q *http.Request) { q.Header.Set(explorer.HeaderKey, "../../etc/passwd") }
		}), 401, "key"},
		{"request-body-swapped", with(post(signed(nil)), func(r *request) {
			other := signed(nil)
			r.tamper = func(q *http.Request) {
				q.Body, q.ContentLength = io.NopCloser(bytes.NewReader(other)), int64(len(other))
			}
		}), 401, "does not verify"},
		{"request-path-swapped", with(get("/api/v1/reservations/"+aliceVol), func(r *request) {
			r.tamper = func(q *http.Request) { q.URL.Path = "/api/v1/reservations/" + bobVol }
		}), 401, "does not verify"},
		{"replayed-get", with(get("/api/v1/reservations/"+aliceVol), func(r *request) { r.replay = true }), 401, "replay"},
		{"replayed-list", with(get("/api/v1/reservations?user="+alice.id), func(r *request) { r.replay = true }), 401, "replay"},
		// Malformed bodies and wrong types.
		{"malformed-json", raw(`{"id":`), 400, "decoding body"},
		{"json-array", raw(`[]`), 400, "decoding body"},
		{"json-null", raw(`null`), 400, "user_id"},
		{"json-string", raw(`"reservation"`), 400, "decoding body"},
		{"empty-body", raw(``), 400, "decoding body"},
		{"trailing-garbage", with(post(signed(nil)), func(r *request) { r.body = append(r.body, []byte(`{"x":1}`)...) }), 400, "decoding body"},
		{"wrong-type-duration", raw(`{"user_id":"` + alice.id + `","duration":"1h"}`), 400, "decoding body"},
		{"wrong-type-created", raw(`{"user_id":"` + alice.id + `","created":"yesterday"}`), 400, "decoding body"},
		{"wrong-type-version", raw(`{"user_id":"` + alice.id + `","version":-1}`), 400, "decoding body"},
		{"wrong-type-to-delete", raw(`{"user_id":"` + alice.id + `","to_delete":"yes"}`), 400, "decoding body"},
		// Huge fields and absurd values.
		{"huge-body-2mb", post(signed(func(r *provision.Reservation) { r.Reference = strings.Repeat("x", 2<<20) })), 413, "too large"},
		{"reference-too-long", post(signed(func(r *provision.Reservation) { r.Reference = strings.Repeat("x", 257) })), 400, "reference"},
		{"data-over-64k", post(signed(func(r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd","pad":"` + strings.Repeat("x", 64<<10) + `"}`)
		})), 400, "data is"},
		{"expired", post(signed(func(r *provision.Reservation) { r.Created = time.Now().Add(-2 * time.Hour) })), 400, "expired"},
		{"created-in-future", post(signed(func(r *provision.Reservation) { r.Created = time.Now().Add(time.Hour) })), 400, "future"},
		{"created-unset", post(signed(func(r *provision.Reservation) { r.Created = time.Time{} })), 400, "created"},
		{"zero-duration", post(signed(func(r *provision.Reservation) { r.Duration = 0 })), 400, "duration"},
		{"negative-duration", post(signed(func(r *provision.Reservation) { r.Duration = -time.Hour })), 400, "duration"},
		{"absurd-duration", post(signed(func(r *provision.Reservation) { r.Duration = 100 * 365 * 24 * time.Hour })), 400, "duration"},
		{"marked-for-deletion", post(signed(func(r *provision.Reservation) { r.ToDelete = true })), 400, "deletion"},
		// Data other JSON readers would read otherwise than the node: a key
		// twice, a name in another case, bytes that are not UTF-8. The
		// node refuses them too (the injected events below).
		{"volume-duplicate-key", post(withData("volume", `{"size":1,"type":"ssd","size":100000}`)), 400, `duplicate key "size"`},
		{"volume-field-case", post(withData("volume", `{"SIZE":1,"type":"ssd"}`)), 400, `use "size" (field names are case-sensitive)`},
		{"container-env-duplicate-key", post(withData("container", `{"image":"/srv/rootfs.tar","env":{"lang":"C","lang":"fr"}}`)), 400, `duplicate key "lang" in data.env`},
		{"network-name-invalid-utf8", post(withData("network", "{\"name\":\"a\xff\xfeb\",\"ip_range\":\"10.246.0.0/16\",\"subnet\":\"10.246.1.0/24\"}")), 400, "utf-8"},
		{"network-name-overlong-utf8-slash", post(withData("network", "{\"name\":\"a\xc0\xafb\",\"ip_range\":\"10.246.0.0/16\",\"subnet\":\"10.246.1.0/24\"}")), 400, "utf-8"},
		// Forged reservation signatures and identities.
		{"forged-signature", post(signedBy(alice, func(r *provision.Reservation) { r.Signature = testutil.RandHex(t, 64) }, nil)), 400, "signature"},
		{"signature-not-hex", post(signedBy(alice, func(r *provision.Reservation) { r.Signature = "zz" }, nil)), 400, "signature"},
		{"no-signature", post(signedBy(alice, nil, nil)), 400, "signature"},
		{"signed-by-another-user", post(func() []byte {
			r := h.reservation(alice, provision.VolumeReservation, `{"size":1,"type":"ssd"}`)
			r.Sign(bob.key)
			r.UserID = alice.id // claims alice, signed by bob
			return testutil.MustJSON(t, r)
		}()), 400, "signature"},
		{"signed-then-changed", post(signedBy(alice, func(r *provision.Reservation) {
			r.Sign(alice.key)
			r.Data = json.RawMessage(`{"size":64,"type":"ssd"}`)
		}, nil)), 400, "signature"},
		{"submitted-for-another-user", with(post(signed(nil)), func(r *request) { r.key = bob.key }), 403, "not by the reservation's user"},
		{"user-id-not-hex", post(signedBy(alice, func(r *provision.Reservation) { r.UserID = "../../etc/passwd" }, nil)), 400, "user_id"},
		{"unknown-node", post(signed(func(r *provision.Reservation) { r.NodeID = otherNode })), 404, "unknown node"},
		{"node-id-traversal", post(signed(func(r *provision.Reservation) { r.NodeID = "../../etc" })), 400, "node_id"},
		{"empty-type", post(signed(func(r *provision.Reservation) { r.Type = "" })), 400, "no type"},
		// Replays and duplicate IDs.
		{"replay-same-digest", post(func() []byte { r := *aliceVolRes; r.ID, r.Result = "", nil; return testutil.MustJSON(t, &r) }()), 409, "same digest"},
		{"replay-under-new-id", post(func() []byte { r := *aliceVolRes; r.ID, r.Result = "evil-id", nil; return testutil.MustJSON(t, &r) }()), 409, "same digest"},
		{"replay-of-bobs-reservation", with(post(func() []byte {
			r, err := bob.client.GetReservation(t.Context(), bobVol)
			if err != nil {
				t.Fatal(err)
			}
			r.ID, r.Result = "", nil
			return testutil.MustJSON(t, r)
		}()), func(r *request) { r.key = bob.key }), 409, "same digest"},
		// Forged deletes.
		{"delete-by-another-user", with(del(aliceVol, bobsDeleteOfAlice()), func(r *request) { r.key = bob.key }), 403, "only the owner"},
		{"delete-signed-by-another-user", del(aliceVol, bobsDeleteOfAlice()), 403, "delete signature"},
		{"forged-delete-signature", del(aliceVol, []byte(`{"id":"`+aliceVol+`","delete_signature":"`+testutil.RandHex(t, 64)+`"}`)), 403, "delete signature"},
		{"delete-signature-not-hex", del(aliceVol, []byte(`{"id":"`+aliceVol+`","delete_signature":"zz"}`)), 403, "delete signature"},
		{"delete-signature-of-another-reservation", del(aliceVol, testutil.MustJSON(t, explorer.DeleteRequest{ID: aliceVol,
			DeleteSignature: hex.EncodeToString(ed25519.Sign(alice.key, provision.DeleteChallenge(aliceNet, aliceVolRes.Digest())))})), 403, "delete signature"},
		{"delete-bobs-volume-with-alices-key", del(bobVol, testutil.MustJSON(t, func() explorer.DeleteRequest {
			r, err := bob.client.GetReservation(t.Context(), bobVol)
			if err != nil {
				t.Fatal(err)
			}
			r.SignDelete(alice.key)
			return explorer.DeleteRequest{ID: bobVol, DeleteSignature: r.DeleteSignature}
		}())), 403, "only the owner"},
		{"delete-body-id-mismatch", del(aliceVol, []byte(`{"id":"`+aliceNet+`","delete_signature":""}`)), 400, "not the path"},
		{"delete-unknown-id", del("nosuchid", []byte(`{"id":"nosuchid","delete_signature":""}`)), 404, "not found"},
		{"delete-malformed-json", del(aliceVol, []byte(`{"id":`)), 400, "decoding body"},
		// Paths and queries.
		{"get-path-traversal", get("/api/v1/reservations/..%2F..%2Fetc%2Fpasswd"), 404, "not found"},
		{"get-nul-id", get("/api/v1/reservations/a%00b"), 404, "not found"},
		{"list-bad-user", get("/api/v1/reservations?user=..%2F.."), 400, "user_id"},
		{"unknown-endpoint", get("/api/v1/admin"), 404, "no endpoint"},
		// Users posing as the node.
		{"user-puts-result", request{method: "PUT", path: nodePath + "/results/" + aliceVol, body: []byte(`{}`), key: alice.key, at: time.Now()}, 403, "not by node"},
		{"user-puts-results-batch", request{method: "POST", path: nodePath + "/results", body: []byte(`{"results":[]}`), key: alice.key, at: time.Now()}, 403, "not by node"},
		{"user-puts-stats", request{method: "PUT", path: nodePath + "/stats", body: []byte(`{}`), key: alice.key, at: time.Now()}, 403, "not by node"},
		{"user-puts-capacity", request{method: "PUT", path: nodePath + "/capacity", body: []byte(`{}`), key: alice.key, at: time.Now()}, 403, "not by node"},
		{"user-polls-node-events", get(nodePath + "/events?from=0"), 403, "not by node"},
		{"user-registers-the-node", request{method: "POST", path: "/api/v1/nodes", body: []byte(`{"node_id":"` + h.nodeID + `"}`), key: alice.key, at: time.Now()}, 403, "must be signed by the key"},
	}
	for _, c := range refusedCases {
		t.Run("explorer-refuses/"+c.name, func(t *testing.T) {
			status, reply := h.send(c.rq)
			var e explorer.ErrorReply
			if status != c.status || json.Unmarshal([]byte(reply), &e) != nil || e.Error == "" ||
				!strings.Contains(strings.ToLower(e.Error), c.msg) {
				t.Errorf("%s %s: %d %q; want %d with an error naming %q", c.rq.method, c.rq.path, status, trunc(reply), c.status, c.msg)
			}
		})
	}
	if got := listed(); fmt.Sprint(got) != fmt.Sprint(listedBefore) {
		t.Errorf("explorerd stored refused reservations: the users list %v, before %v", got, listedBefore)
	}

	// 2. Signed reservations explorerd takes (it does not judge the
	// workload) and the node answers.
	vol := func(size, typ string) string { return `{"size":` + size + `,"type":"` + typ + `"}` }
	netw := func(name, rng, sub string) string {
		return string(testutil.MustJSON(t, provision.Network{Name: name, IPRange: rng, Subnet: sub}))
	}
	ctr := func(mut func(*provision.Container)) string {
		c := provision.Container{
			Image: "/srv/rootfs.tar", ImageDigest: strings.Repeat("a", 64), Entrypoint: []string{"/bin/true"},
			Network:  provision.ContainerNetwork{NetworkID: aliceNetID, IP: "10.245.1.10"},
			Capacity: provision.ContainerCapacity{CPU: 1, Memory: 32, DiskSize: 64},
		}
		mut(&c)
		return string(testutil.MustJSON(t, c))
	}
	mount := func(volID, mp string) func(*provision.Container) {
		return func(c *provision.Container) { c.Mounts = []provision.Mount{{VolumeID: volID, Mountpoint: mp}} }
	}
	fail, tried, held := answerError, answerErrorTried, answerHeld
	// Local images: the node serves harness.LocalImages(), which holds
	// images; outside it, /etc/passwd with its true sha256.
	images := t.TempDir()
	if rel, err := filepath.Rel(harness.LocalImages(), images); err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is not below the node's local image directory %s", images, harness.LocalImages())
	}
	if err := os.WriteFile(filepath.Join(images, "wrong.tar"), []byte("not the image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(images, "dir.tar"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(images, "fifo.tar"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(images, "passwd.tar")); err != nil {
		t.Fatal(err)
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	passwdSum := sha256.Sum256(passwd)
	passwdDigest := hex.EncodeToString(passwdSum[:])
	const notBelow = "is not below the node's local image directory"
	answeredCases := []answered{
		{"unknown-type-vm", "vm", vol("1", "ssd"), fail, "unknown reservation type"},
		{"unknown-type-uppercase", "VOLUME", vol("1", "ssd"), fail, "unknown reservation type"},
		{"unknown-type-traversal", "../volume", vol("1", "ssd"), fail, "unknown reservation type"},
		{"unknown-type-nul", "volume\x00", vol("1", "ssd"), fail, "unknown reservation type"},
		{"unknown-type-rtl", "\u202evolume", vol("1", "ssd"), fail, "unknown reservation type"},
		{"volume-1e9-gib", "volume", vol("1000000000", "ssd"), fail, "volume size"},
		{"volume-over-capacity", "volume", vol("65536", "hdd"), fail, "capacity"},
		{"volume-negative", "volume", vol("-1", "ssd"), fail, "volume size"},
		{"volume-zero", "volume", vol("0", "ssd"), fail, "volume size"},
		{"volume-int-overflow", "volume", vol("99999999999999999999", "ssd"), fail, "malformed"},
		{"volume-fraction", "volume", vol("1.5", "ssd"), fail, "malformed"},
		{"volume-size-string", "volume", `{"size":"big","type":"ssd"}`, fail, "malformed"},
		{"volume-unknown-disk", "volume", vol("1", "nvme"), fail, "volume type"},
		{"volume-disk-traversal", "volume", vol("1", "../ssd"), fail, "volume type"},
		{"volume-unknown-field", "volume", `{"size":1,"type":"ssd","path":"/etc"}`, fail, "malformed"},
		{"data-number", "volume", `5`, fail, "malformed"},
		{"data-string", "volume", `"volume"`, fail, "malformed"},
		{"data-array", "volume", `[1,2]`, fail, "malformed"},
		{"data-null", "volume", `null`, fail, "volume size"},
		{"data-empty-object", "network", `{}`, fail, "network name"},
		{"network-range-garbage", "network", netw("ok-name", "garbage", "10.245.3.0/24"), fail, "ip_range"},
		{"network-ipv6", "network", netw("ok-name", "fd00::/64", "fd00::/80"), fail, "ip_range"},
		{"network-subnet-outside", "network", netw("ok-name", "10.246.0.0/16", "10.247.1.0/24"), fail, "subnet"},
		{"network-subnet-slash31", "network", netw("ok-name", "10.246.0.0/16", "10.246.1.0/31"), fail, "subnet"},
		{"network-host-bits", "network", netw("ok-name", "10.246.0.1/16", "10.246.1.0/24"), fail, "host bits"},
		{"network-name-in-use", "network", netw("alice", "10.245.0.0/16", "10.245.9.0/24"), fail, "in use"},
		{"container-cpu-100000", "container", ctr(func(c *provision.Container) { c.Capacity.CPU = 100000 }), fail, "cpu"},
		{"container-cpu-zero", "container", ctr(func(c *provision.Container) { c.Capacity.CPU = 0 }), fail, "cpu"},
		{"container-cpu-negative", "container", ctr(func(c *provision.Container) { c.Capacity.CPU = -4 }), fail, "cpu"},
		{"container-memory-1tib", "container", ctr(func(c *provision.Container) { c.Capacity.Memory = 1 << 20 }), fail, "capacity"},
		{"container-memory-tiny", "container", ctr(func(c *provision.Container) { c.Capacity.Memory = 1 }), fail, "memory"},
		{"container-memory-negative", "container", ctr(func(c *provision.Container) { c.Capacity.Memory = -32 }), fail, "memory"},
		{"container-disk-negative", "container", ctr(func(c *provision.Container) { c.Capacity.DiskSize = -1 }), fail, "disk_size"},
		{"container-disk-absurd", "container", ctr(func(c *provision.Container) { c.Capacity.DiskSize = 1 << 40 }), fail, "disk_size"},
		{"container-no-entrypoint", "container", ctr(func(c *provision.Container) { c.Entrypoint = nil }), fail, "entrypoint"},
		{"container-empty-entrypoint", "container", ctr(func(c *provision.Container) { c.Entrypoint = []string{""} }), fail, "entrypoint"},
		{"container-image-relative", "container", ctr(func(c *provision.Container) { c.Image = "rootfs.tar" }), fail, "clean absolute path"},
		{"container-image-traversal", "container", ctr(func(c *provision.Container) { c.Image = "/srv/../etc/shadow" }), fail, "clean absolute path"},
		{"container-image-empty", "container", ctr(func(c *provision.Container) { c.Image = "" }), fail, "image"},
		{"container-image-url-space", "container", ctr(func(c *provision.Container) { c.Image = "http://x/ y" }), fail, "image"},
		{"container-image-not-found", "container", ctr(func(c *provision.Container) { c.Image = filepath.Join(images, "absent", "rootfs.tar") }), tried, "not found"},
		{"container-image-digest-mismatch", "container", ctr(func(c *provision.Container) { c.Image = filepath.Join(images, "wrong.tar") }), tried, "sha256"},
		{"container-image-directory", "container", ctr(func(c *provision.Container) { c.Image = filepath.Join(images, "dir.tar") }), tried, "not a regular file"},
		{"container-image-fifo", "container", ctr(func(c *provision.Container) { c.Image = filepath.Join(images, "fifo.tar") }), tried, "not a regular file"},
		// Node files outside the local image directory: refused alike,
		// whether they exist and whatever their sha256.
		{"container-image-device", "container", ctr(func(c *provision.Container) { c.Image = "/dev/zero" }), tried, notBelow},
		{"container-image-outside", "container", ctr(func(c *provision.Container) { c.Image, c.ImageDigest = "/etc/passwd", passwdDigest }), tried, notBelow},
		{"container-image-outside-not-found", "container", ctr(func(c *provision.Container) { c.Image = "/nonexistent/rootfs.tar" }), tried, notBelow},
		{"container-image-symlink-escape", "container", ctr(func(c *provision.Container) {
			c.Image, c.ImageDigest = filepath.Join(images, "passwd.tar"), passwdDigest
		}), tried, notBelow},
		{"container-digest-garbage", "container", ctr(func(c *provision.Container) { c.ImageDigest = "../../etc" }), fail, "image_digest"},
		{"container-env-key-equals", "container", ctr(func(c *provision.Container) { c.Env = map[string]string{"A=B": "x"} }), fail, "environment"},
		{"container-env-key-digit", "container", ctr(func(c *provision.Container) { c.Env = map[string]string{"1X": "x"} }), fail, "environment"},
		{"container-env-key-empty", "container", ctr(func(c *provision.Container) { c.Env = map[string]string{"": "x"} }), fail, "environment"},
		{"container-mountpoint-relative", "container", ctr(mount(aliceVol, "data")), fail, "mountpoint"},
		{"container-mountpoint-root", "container", ctr(mount(aliceVol, "/")), fail, "mountpoint"},
		{"container-mountpoint-traversal", "container", ctr(mount(aliceVol, "/data/../../etc")), fail, "mountpoint"},
		{"container-mountpoint-dotdot-name", "container", ctr(mount(aliceVol, "/a..b/..")), fail, "mountpoint"},
		{"container-mountpoint-twice", "container", ctr(func(c *provision.Container) {
			c.Mounts = []provision.Mount{{VolumeID: aliceVol, Mountpoint: "/d"}, {VolumeID: aliceVol, Mountpoint: "/d"}}
		}), fail, "mountpoint"},
		{"container-mount-other-users-volume", "container", ctr(mount(bobVol, "/data")), fail, "another user"},
		{"container-mount-a-network", "container", ctr(mount(aliceNet, "/data")), fail, "not a volume"},
		{"container-other-users-network", "container", ctr(func(c *provision.Container) {
			c.Network = provision.ContainerNetwork{NetworkID: bobNetID, IP: "10.245.2.10"}
		}), fail, "another user"},
		{"container-network-id-traversal", "container", ctr(func(c *provision.Container) { c.Network.NetworkID = "../../../run/ne" }), fail, "network_id"},
		{"container-ip-garbage", "container", ctr(func(c *provision.Container) { c.Network.IP = "999.1.1.1" }), fail, "container ip"},
		{"container-ip-without-network", "container", ctr(func(c *provision.Container) { c.Network = provision.ContainerNetwork{IP: "10.245.1.10"} }), fail, "container ip"},
		{"container-ip-outside-subnet", "container", ctr(func(c *provision.Container) { c.Network.IP = "10.99.0.1" }), tried, "10.99.0.1 is not a free host address"},
		{"container-ip-is-gateway", "container", ctr(func(c *provision.Container) { c.Network.IP = "10.245.1.1" }), tried, "10.245.1.1"},
		{"container-mount-unknown-volume", "container", ctr(mount("nosuchvolume", "/data")), held, ""},
		{"container-unknown-network", "container", ctr(func(c *provision.Container) { c.Network.NetworkID = "0123456789abcdef" }), held, ""},
	}
	for i, name := range badNames {
		answeredCases = append(answeredCases,
			answered{fmt.Sprintf("network-bad-name-%d", i), "network", netw(name, "10.246.0.0/16", "10.246.1.0/24"), fail, "network name"},
			answered{fmt.Sprintf("mount-bad-volume-id-%d", i), "container", ctr(mount(name, "/data")), fail, "volume_id"})
	}

	ids := map[string]answered{} // reservation ID → case
	submit := func(cases []answered) {
		for _, c := range cases {
			r := h.reservation(alice, c.typ, c.data)
			r.Sign(alice.key)
			id, err := alice.client.CreateReservation(t.Context(), r)
			if err != nil {
				t.Errorf("explorer-takes/%s: %v", c.name, err)
				continue
			}
			ids[id] = c
		}
	}
	haveResult := map[string]bool{} // IDs whose result arrived
	awaitAnswers := func() {
		t.Helper()
		harness.Eventually(t, converge, "error results of the hostile reservations", func() error {
			for id, c := range ids {
				if c.answer == answerHeld || haveResult[id] {
					continue
				}
				r, err := alice.client.GetReservation(t.Context(), id)
				if err != nil {
					return err
				}
				if r.Result == nil {
					return fmt.Errorf("%s: no result yet", c.name)
				}
				haveResult[id] = true
			}
			return nil
		})
	}
	// A container the node tries holds a core while it does (CPU 1 each,
	// and the node may have 2): submitted all at once, the ones past the
	// node's cores would be refused for capacity on a slow machine before
	// they were tried. They go one at a time, after the others.
	var rest, cores []answered
	for _, c := range answeredCases {
		if c.typ == provision.ContainerReservation && c.answer == answerErrorTried {
			cores = append(cores, c)
		} else {
			rest = append(rest, c)
		}
	}
	submit(rest)
	awaitAnswers()
	for _, c := range cores {
		submit([]answered{c})
		awaitAnswers()
	}
	// References to workloads that failed: known at once never to come.
	var failedVol string
	for id, c := range ids {
		if c.name == "volume-zero" {
			failedVol = id
		}
	}
	later := []answered{
		{"container-mount-failed-volume", "container", ctr(mount(failedVol, "/data")), fail, "volume " + failedVol + " is error"},
		{"container-mount-failed-volume-of-bob", "container", ctr(mount(failedVol, "/data")), fail, "another user"},
	}
	submit(later[:1])
	for _, c := range later[1:] { // bob names alice's failed volume
		data := strings.Replace(strings.Replace(c.data, aliceNetID, bobNetID, 1), "10.245.1.10", "10.245.2.10", 1)
		r := h.reservation(bob, c.typ, data)
		r.Sign(bob.key)
		id, err := bob.client.CreateReservation(t.Context(), r)
		if err != nil {
			t.Fatalf("explorer-takes/%s: %v", c.name, err)
		}
		ids[id] = c
	}
	answeredCases = append(answeredCases, later...)
	awaitAnswers()

	// 3. What only a misbehaving explorer would send: written straight
	// into the explorer's store while it is stopped.
	inj := func(name string, mut func(*provision.Reservation), signer ed25519.PrivateKey, msg string) injected {
		r := h.reservation(alice, provision.VolumeReservation, vol("1", "ssd"))
		r.ID = "inj-" + name
		if mut != nil {
			mut(r)
		}
		if signer != nil {
			r.Sign(signer)
		}
		return injected{name, testutil.MustJSON(t, r), msg}
	}
	forgedDelete := *aliceVolRes
	forgedDelete.Result, forgedDelete.ToDelete, forgedDelete.DeleteSignature = nil, true, testutil.RandHex(t, 64)
	bobDelete := *aliceVolRes
	bobDelete.Result, bobDelete.ToDelete = nil, true
	bobDelete.SignDelete(bob.key)
	noSigDelete := *aliceVolRes
	noSigDelete.Result, noSigDelete.ToDelete, noSigDelete.DeleteSignature = nil, true, ""
	sameIDOther := h.reservation(alice, provision.VolumeReservation, vol("2", "ssd"))
	sameIDOther.ID = aliceVol
	sameIDOther.Sign(alice.key)
	sameIDBob := h.reservation(bob, provision.VolumeReservation, vol("2", "ssd"))
	sameIDBob.ID = aliceVol
	sameIDBob.Sign(bob.key)
	repeat := *aliceVolRes
	repeat.Result = nil
	replay := *aliceVolRes
	replay.ID, replay.Result = "inj-replay", nil
	// A delete of bob's network whose signature is alice's: the owner is bob.
	bobNetRes, err := bob.client.GetReservation(t.Context(), bobNet)
	if err != nil {
		t.Fatal(err)
	}
	aliceDeletesBobNet := *bobNetRes
	aliceDeletesBobNet.Result, aliceDeletesBobNet.ToDelete = nil, true
	aliceDeletesBobNet.SignDelete(alice.key)
	injectedCases := []injected{
		inj("wrong-node", func(r *provision.Reservation) { r.NodeID = otherNode }, alice.key, "another node"),
		inj("forged-signature", func(r *provision.Reservation) { r.Signature = testutil.RandHex(t, 64) }, nil, "signature"),
		inj("no-signature", nil, nil, "signature"),
		inj("other-users-signature", func(r *provision.Reservation) { r.Sign(bob.key); r.UserID = alice.id }, nil, "signature"),
		inj("signed-then-changed", func(r *provision.Reservation) { r.Sign(alice.key); r.Data = json.RawMessage(vol("64", "ssd")) }, nil, "signature"),
		inj("expired", func(r *provision.Reservation) { r.Created = time.Now().Add(-2 * time.Hour) }, alice.key, "expired"),
		inj("data-over-64k", func(r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd","pad":"` + strings.Repeat("x", 64<<10) + `"}`)
		}, alice.key, "too large"),
		// Data explorerd refuses (a key twice, a name in another case, not
		// UTF-8): a misbehaving explorer relays it, the node refuses it.
		inj("data-duplicate-key", func(r *provision.Reservation) { r.Data = json.RawMessage(`{"size":1,"type":"ssd","size":100000}`) }, alice.key, `duplicate key "size"`),
		inj("data-field-case", func(r *provision.Reservation) { r.Data = json.RawMessage(`{"SIZE":1,"type":"ssd"}`) }, alice.key, `use "size"`),
		inj("data-invalid-utf8", func(r *provision.Reservation) {
			r.Type, r.Data = provision.NetworkReservation, json.RawMessage("{\"name\":\"a\xff\xfeb\",\"ip_range\":\"10.246.0.0/16\",\"subnet\":\"10.246.1.0/24\"}")
		}, alice.key, "utf-8"),
		inj("unknown-type", func(r *provision.Reservation) { r.Type = "firmware" }, alice.key, "unknown reservation type"),
		inj("empty-type", func(r *provision.Reservation) { r.Type = "" }, alice.key, "unknown reservation type"),
		inj("user-id-garbage", func(r *provision.Reservation) { r.UserID = "root" }, nil, "user_id"),
		inj("created-in-future", func(r *provision.Reservation) { r.Created = time.Now().Add(time.Hour) }, alice.key, "future"),
		inj("huge-reference", func(r *provision.Reservation) { r.Reference = strings.Repeat("r", 4<<10) }, alice.key, "reference"),
		// Larger than an event: the explorer relays only its id.
		inj("larger-than-an-event", func(r *provision.Reservation) { r.Reference = strings.Repeat("r", 1<<20) }, alice.key, "explorer relays only its id"),
		inj("absurd-duration", func(r *provision.Reservation) { r.Duration = 200 * 365 * 24 * time.Hour }, alice.key, "duration"),
		inj("delete-of-unknown-forged", func(r *provision.Reservation) {
			r.Sign(alice.key)
			r.ToDelete, r.DeleteSignature = true, testutil.RandHex(t, 64)
		}, nil, "delete signature"),
		{"wrong-types", []byte(`{"id":"inj-wrong-types","duration":"forever","data":7}`), "duration"},
		{"replay-under-new-id", testutil.MustJSON(t, &replay), "replay"},
		{"forged-delete", testutil.MustJSON(t, &forgedDelete), ""},
		{"delete-by-another-user", testutil.MustJSON(t, &bobDelete), ""},
		{"delete-without-signature", testutil.MustJSON(t, &noSigDelete), ""},
		{"delete-of-bobs-network-signed-by-alice", testutil.MustJSON(t, &aliceDeletesBobNet), ""},
		{"duplicate-id-other-content", testutil.MustJSON(t, sameIDOther), ""},
		{"duplicate-id-other-user", testutil.MustJSON(t, sameIDBob), ""},
		{"repeat-of-live", testutil.MustJSON(t, &repeat), ""},
		{"created-a-number", []byte(`{"id":"inj-created-a-number","created":12}`), "malformed event"},
		// Events without a reservation or an ID: nobody to answer; the
		// node logs them and passes on.
		{"json-array", []byte(`[1,2,3]`), ""},
		{"json-null", []byte(`null`), ""},
		{"json-string", []byte(`"reservation"`), ""},
	}
	unsafeIDs := []string{"../../etc/passwd", "\u202eevil", "a\x00b", "a/b", strings.Repeat("i", 65), "..", "prv-../../x"}
	for i, name := range unsafeIDs {
		r := h.reservation(alice, provision.VolumeReservation, vol("1", "ssd"))
		r.ID = name
		r.Sign(alice.key)
		injectedCases = append(injectedCases, injected{fmt.Sprintf("unsafe-id-%d", i), testutil.MustJSON(t, r), ""})
	}
	ex.Stop(t)
	lastSeq := injectEvents(t, ex, h.nodeID, func(yield func([]byte, bool)) {
		for _, c := range injectedCases {
			yield(c.raw, storable(c.raw))
		}
	})
	ex.Start(t)

	total := len(refusedCases) + len(answeredCases) + len(injectedCases)
	t.Logf("%d hostile inputs: %d requests refused by explorerd, %d reservations answered by the node through the API, %d events injected as a misbehaving explorer",
		total, len(refusedCases), len(answeredCases), len(injectedCases))
	if total < 100 {
		t.Errorf("only %d hostile inputs, want at least 100", total)
	}

	heldCount := 0
	for _, c := range ids {
		if c.answer == answerHeld {
			heldCount++
		}
	}
	harness.Eventually(t, converge, "the node past the injected events", func() error {
		st, err := statusOf(t, node)
		switch {
		case err != nil:
			return err
		case st.Cursor < lastSeq:
			return fmt.Errorf("cursor %d, the injected events end at %d; last poll error %q", st.Cursor, lastSeq, st.LastPollError)
		}
		return nil
	})
	settledHolding(t, node, converge, heldCount)
	recs := records(t, node)
	after := takeSnapshot(t, node)
	idsSorted := make([]string, 0, len(ids))
	for id := range ids {
		idsSorted = append(idsSorted, id)
	}
	sort.Slice(idsSorted, func(i, j int) bool { return ids[idsSorted[i]].name < ids[idsSorted[j]].name })
	for _, id := range idsSorted {
		c := ids[id]
		t.Run("node-answers/"+c.name, func(t *testing.T) {
			rec, ok := recs[id]
			if !ok {
				t.Fatalf("no record of %s", id)
			}
			if objs := after.objectsOf(id); len(objs) > 0 {
				t.Errorf("created for a hostile reservation: %v", objs)
			}
			if c.typ == provision.NetworkReservation && c.name != "network-name-in-use" {
				var n provision.Network
				if json.Unmarshal([]byte(c.data), &n) == nil && after.netns[provision.Prefix+provision.NetworkID(rec.Reservation.UserID, n.Name)] {
					t.Errorf("the network namespace of %q exists", n.Name)
				}
			}
			if c.answer == answerHeld {
				if rec.State != provision.Accepted || rec.Result != nil || provisioned(rec) {
					t.Errorf("record %s (result %+v, history %+v); want it accepted, waiting for its dependency", rec.State, rec.Result, rec.History)
				}
				return
			}
			if c.answer == answerError && provisioned(rec) {
				t.Errorf("entered provisioning: %+v", rec.History)
			}
			r, err := alice.client.GetReservation(t.Context(), id)
			if err != nil {
				t.Fatal(err)
			}
			if r.Result == nil {
				t.Fatal("no result at the explorer")
			}
			if err := r.Result.Verify(nodeK); err != nil || r.Result.State != provision.StateError || r.Result.ID != id || r.Result.Digest != r.Digest() ||
				!strings.Contains(strings.ToLower(r.Result.Message), strings.ToLower(c.msg)) {
				t.Errorf("result %s %q (signature: %v); want a signed error naming %q", r.Result.State, r.Result.Message, err, c.msg)
			}
			if rec.State != provision.Failed || rec.Result == nil || rec.Result.Signature != r.Result.Signature {
				t.Errorf("record %s with result %+v; want failed, holding the result the explorer has", rec.State, rec.Result)
			}
		})
	}
	for _, c := range injectedCases {
		if c.msg == "" {
			continue
		}
		t.Run("node-refuses-injected/"+c.name, func(t *testing.T) {
			var probe struct{ ID string }
			_ = json.Unmarshal(c.raw, &probe)
			rec, ok := recs[probe.ID]
			if !ok || rec.State != provision.Failed || rec.Result == nil || rec.Result.State != provision.StateError || provisioned(rec) ||
				!strings.Contains(strings.ToLower(rec.Result.Message), c.msg) {
				t.Errorf("record %+v; want failed, never provisioned, with a signed error naming %q", rec, c.msg)
				return
			}
			if err := rec.Result.Verify(nodeK); err != nil {
				t.Error(err)
			}
			if objs := after.objectsOf(probe.ID); len(objs) > 0 {
				t.Errorf("created for a hostile reservation: %v", objs)
			}
			if !storable(c.raw) || rec.Reservation.NodeID != h.nodeID {
				return // the explorer refused the result: no such reservation, or not of this node
			}
			// The explorer has the node's answer too.
			r, err := alice.client.GetReservation(t.Context(), probe.ID)
			if err != nil {
				t.Fatal(err)
			}
			if r.Result == nil || r.Result.Signature != rec.Result.Signature {
				t.Errorf("explorer holds result %+v; want the node's %+v", r.Result, rec.Result)
			}
		})
	}

	// The forged deletes, the other content under a live ID and the
	// repeat leave the live workloads as they were: same records, same ok
	// results at the explorer, the same volume (image inode and marker).
	t.Run("live-workloads-untouched", func(t *testing.T) {
		for _, id := range live {
			rec, base := recs[id], baseRecs[id]
			if rec == nil || rec.State != provision.Deployed || rec.Reservation.ToDelete || rec.Digest != base.Digest ||
				len(rec.History) != len(base.History) || rec.Result.Signature != base.Result.Signature {
				t.Errorf("%s after forged deletes, duplicate ids and a repeat: %+v; before %+v", id, rec, base)
			}
			r, err := alice.client.GetReservation(t.Context(), id)
			if err != nil || r.Result == nil || r.Result.State != provision.StateOk || r.Result.Signature != base.Result.Signature {
				t.Errorf("%s at the explorer: %+v %v", id, r, err)
			}
		}
		if ino, err := inode(volumeImage(node, aliceVol)); err != nil || ino != volIno {
			t.Errorf("alice's volume image: inode %d (%v), before %d", ino, err, volIno)
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != aliceVol {
			t.Errorf("alice's volume lost its marker: %q %v", b, err)
		}
	})
	t.Run("no-record-under-unsafe-ids", func(t *testing.T) {
		for _, name := range unsafeIDs {
			if _, ok := recs[name]; ok {
				t.Errorf("a record was stored under the unsafe id %q", name)
			}
		}
	})
	// Every record is a baseline one, a hostile one answered above, or an
	// injected one with a safe inj- ID: nothing else was recorded.
	t.Run("no-other-records", func(t *testing.T) {
		for id := range recs {
			_, base := baseRecs[id]
			_, hostile := ids[id]
			if !base && !hostile && !strings.HasPrefix(id, "inj-") {
				t.Errorf("unexpected record %s: %+v", id, recs[id])
			}
		}
	})

	// The held containers: their owner deletes them; they never touched
	// anything.
	for id, c := range ids {
		if c.answer != answerHeld {
			continue
		}
		if _, err := alice.user.Run(t, "delete", id); err != nil {
			t.Fatalf("deleting held %s: %v", c.name, err)
		}
		res := alice.user.WaitResult(t, id, provision.StateDeleted, converge)
		if err := res.Verify(nodeK); err != nil {
			t.Errorf("deleted result of %s: %v", c.name, err)
		}
	}
	settled(t, node, converge)
	recs = records(t, node)
	for id, c := range ids {
		if c.answer == answerHeld && (recs[id].State != provision.Deleted || provisioned(recs[id])) {
			t.Errorf("held %s after its delete: %s, history %+v; want deleted, never provisioned", c.name, recs[id].State, recs[id].History)
		}
	}

	// The daemon stayed up, nothing was created, the used units stand.
	if st, err := statusOf(t, node); err != nil || !st.Running {
		t.Fatalf("daemon after the hostile input: %+v %v\n%s", st, err, node.Log())
	}
	final := takeSnapshot(t, node)
	if extra := added(before, final); len(extra) > 0 {
		t.Errorf("created below the node's directory by the hostile input: %v", extra)
	}
	for id, c := range ids {
		if objs := final.objectsOf(id); len(objs) > 0 {
			t.Errorf("created for %s: %v", c.name, objs)
		}
	}
	got := nodeStats(t, node)
	if !unitsEqual(got.Used, baseStats.Used) {
		t.Errorf("used units moved: %+v, before %+v", got.Used, baseStats.Used)
	}
	for _, typ := range provision.Types {
		if got.Workloads[typ] != baseStats.Workloads[typ] {
			t.Errorf("%s workloads: %d, before %d", typ, got.Workloads[typ], baseStats.Workloads[typ])
		}
	}
	if err := statsMatch(recs, got); err != nil {
		t.Error(err)
	}
	if bad := orphans(t, node, recs); len(bad) > 0 {
		t.Errorf("runtime objects without a live record: %v", bad)
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// injectEvents appends raw events to node's stream in the stopped
// explorer's database, as a compromised or buggy explorer would serve
// them; with store set, the raw JSON is also stored as the reservation of
// its ID so that the node's result for it can be stored.
func injectEvents(t testing.TB, ex *harness.Explorer, node string, events func(yield func(raw []byte, store bool))) (last uint64) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(ex.Dir, "data", "explorer.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		eb := tx.Bucket([]byte("events")).Bucket([]byte(node))
		if eb == nil {
			return fmt.Errorf("no event bucket of %s", node)
		}
		var ferr error
		events(func(raw []byte, store bool) {
			if ferr != nil {
				return
			}
			seq, err := eb.NextSequence()
			last = seq
			if err == nil {
				err = eb.Put(seqKeyOf(seq), raw)
			}
			if err == nil && store {
				var probe struct{ ID string }
				_ = json.Unmarshal(raw, &probe)
				err = tx.Bucket([]byte("reservations")).Put([]byte(probe.ID), raw)
			}
			ferr = err
		})
		return ferr
	})
	if err != nil {
		t.Fatalf("injecting events: %v", err)
	}
	return last
}

// storable reports whether injectEvents stores an injected event as a
// reservation too, so that the node's result for it can land: when its ID
// is a new safe name and it decodes as a reservation. (Anything else
// would be a corrupt explorer database, which explorerd answers with 500
// to the result: a test of the explorer, not of the node.)
func storable(raw []byte) bool {
	var r provision.Reservation
	return json.Unmarshal(raw, &r) == nil && provision.ValidName("id", r.ID) == nil && strings.HasPrefix(r.ID, "inj-")
}

func seqKeyOf(seq uint64) []byte {
	return []byte{byte(seq >> 56), byte(seq >> 48), byte(seq >> 40), byte(seq >> 32), byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
}

// provisioned reports whether rec ever entered provisioning: the state is
// written before any side effect, so a record without it touched nothing.
func provisioned(rec *provision.Record) bool {
	for _, tr := range rec.History {
		if tr.State == provision.Provisioning {
			return true
		}
	}
	return false
}
