package provision_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

// init registers the -update flag (rewrite golden files instead of
// comparing against them) unless another test file of this binary already
// did: init runs after every package-level flag.Bool, so they cannot clash.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata/")
	}
}

// updating reports whether -update was given.
func updating() bool {
	b, _ := flag.Lookup("update").Value.(flag.Getter).Get().(bool)
	return b
}

// vectorsFile is the golden file of signing test vectors.
const vectorsFile = "testdata/vectors.json"

// fixture holds the fixed keys every model test signs with.
type fixture struct {
	user, other, node ed25519.PrivateKey
	nodeID            string
	now               time.Time
}

// seq returns n bytes start, start+1, ….
func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

// newFixture returns the fixed keys: the user key from seed 0x01..0x20,
// the node key from seed 0x21..0x40 and another user from 0x41..0x60.
func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	node := ed25519.NewKeyFromSeed(seq(0x21, ed25519.SeedSize))
	return &fixture{
		user:   ed25519.NewKeyFromSeed(seq(0x01, ed25519.SeedSize)),
		other:  ed25519.NewKeyFromSeed(seq(0x41, ed25519.SeedSize)),
		node:   node,
		nodeID: identity.NodeID(node.Public().(ed25519.PublicKey)),
		now:    fixedCreated.Add(time.Hour),
	}
}

// fixedCreated is when the fixture's reservations were created.
var fixedCreated = time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)

func (f *fixture) userID() string { return identity.UserID(f.user.Public().(ed25519.PublicKey)) }

// networkData, volumeData and containerData are the fixture's Data, as a
// user would submit them (not canonical: spaces, a literal <, & and U+2028).
const (
	networkData = `{"name": "office", "ip_range": "10.20.0.0/16", "subnet": "10.20.3.0/24"}`
	volumeData  = `{"size": 10, "type": "ssd"}`
)

func (f *fixture) containerData() string {
	return `{
  "image": "https://images.example.com/alpine-3.20.tar",
  "image_digest": "sha256:` + strings.Repeat("ab", 32) + `",
  "entrypoint": ["/bin/sh", "-c", "echo <hi> & bye"],
  "env": {"GREETING": "hello` + "\u2028" + `world"},
  "mounts": [{"volume_id": "r-volume", "mountpoint": "/data"}],
  "network": {"network_id": "` + provision.NetworkID(f.userID(), "office") + `", "ip": "10.20.3.5"},
  "capacity": {"cpu": 1, "memory": 256, "disk_size": 1024}
}`
}

// unsigned returns the fixture's reservation of type typ, not yet signed.
func (f *fixture) unsigned(typ provision.ReservationType) *provision.Reservation {
	r := &provision.Reservation{
		ID:       "r-" + string(typ),
		NodeID:   f.nodeID,
		Type:     typ,
		Created:  fixedCreated,
		Duration: 30 * 24 * time.Hour,
		Version:  1,
	}
	switch typ {
	case provision.NetworkReservation:
		r.Data = json.RawMessage(networkData)
		r.Reference = "office network"
	case provision.VolumeReservation:
		r.Data = json.RawMessage(volumeData)
	case provision.ContainerReservation:
		r.Data = json.RawMessage(f.containerData())
		r.Reference = "web <frontend>"
		r.Version = 3
	}
	return r
}

// signed returns the fixture's reservation of type typ signed by the user.
func (f *fixture) signed(tb testing.TB, typ provision.ReservationType) *provision.Reservation {
	tb.Helper()
	r := f.unsigned(typ)
	r.Sign(f.user)
	return r
}

// result returns a result of the node for r, signed.
func (f *fixture) result(tb testing.TB, r *provision.Reservation, state provision.ResultState, message, data string) *provision.Result {
	tb.Helper()
	res := &provision.Result{
		Type:    r.Type,
		ID:      r.ID,
		NodeID:  f.nodeID,
		Digest:  r.Digest(),
		Version: r.Version,
		Created: fixedCreated.Add(90 * time.Second),
		State:   state,
		Message: message,
	}
	if data != "" {
		res.Data = json.RawMessage(data)
	}
	if err := res.Sign(provision.KeySigner(f.node)); err != nil {
		tb.Fatalf("signing result: %v", err)
	}
	return res
}

// Vectors is the layout of testdata/vectors.json.
type Vectors struct {
	Comment      string              `json:"comment"`
	UserSeed     string              `json:"user_seed"`
	UserID       string              `json:"user_id"`
	NodeSeed     string              `json:"node_seed"`
	NodePublic   string              `json:"node_public"`
	NodeID       string              `json:"node_id"`
	Reservations []ReservationVector `json:"reservations"`
	Results      []ResultVector      `json:"results"`
	// Encodings are reservations whose signatures verify, chosen for the
	// encodings a verifier must get right: created in another zone with
	// trailing zeros in its nanoseconds, a whole second, absent data and
	// an empty reference. Not every one passes the node's validation.
	Encodings []ReservationVector `json:"encodings"`
	// Forgeries are signed documents changed after signing: a verifier must
	// refuse each one.
	Forgeries []Forgery `json:"forgeries"`
}

// Forgery is a signed document changed after signing.
type Forgery struct {
	// Name says what was changed.
	Name string `json:"name"`
	// Reservation is set for a forged reservation or delete.
	Reservation *provision.Reservation `json:"reservation,omitempty"`
	// Result is set for a forged result.
	Result *provision.Result `json:"result,omitempty"`
}

// ReservationVector is one signed reservation and its derived bytes.
type ReservationVector struct {
	Name            string                 `json:"name"`
	Reservation     *provision.Reservation `json:"reservation"`
	CanonicalData   string                 `json:"canonical_data"`
	Challenge       string                 `json:"challenge"`
	Digest          string                 `json:"digest"`
	Signature       string                 `json:"signature"`
	DeleteChallenge string                 `json:"delete_challenge"`
	DeleteSignature string                 `json:"delete_signature"`
}

// ResultVector is one node-signed result and its canonical bytes.
type ResultVector struct {
	Name      string            `json:"name"`
	Result    *provision.Result `json:"result"`
	Bytes     string            `json:"bytes"`
	Signature string            `json:"signature"`
}

// makeVectors computes the vectors from the fixed keys and reservations.
func makeVectors(tb testing.TB) *Vectors {
	tb.Helper()
	f := newFixture(tb)
	v := &Vectors{
		Comment: "provisiond signing test vectors; hex fields are lowercase; " +
			"regenerate with go test ./provision -run TestVectors -update",
		UserSeed:   hex.EncodeToString(f.user.Seed()),
		UserID:     f.userID(),
		NodeSeed:   hex.EncodeToString(f.node.Seed()),
		NodePublic: hex.EncodeToString(f.node.Public().(ed25519.PublicKey)),
		NodeID:     f.nodeID,
	}
	for _, typ := range provision.Types {
		r := f.signed(tb, typ)
		del := *r
		del.SignDelete(f.user)
		v.Reservations = append(v.Reservations, ReservationVector{
			Name:            string(typ),
			Reservation:     r,
			CanonicalData:   string(provision.CanonicalData(r.Data)),
			Challenge:       hex.EncodeToString(r.Challenge()),
			Digest:          r.Digest(),
			Signature:       r.Signature,
			DeleteChallenge: hex.EncodeToString(provision.DeleteChallenge(r.ID, r.Digest())),
			DeleteSignature: del.DeleteSignature,
		})
	}
	vol := f.signed(tb, provision.VolumeReservation)
	ctr := f.signed(tb, provision.ContainerReservation)
	for _, res := range []struct {
		name string
		r    *provision.Result
	}{
		{"volume-ok", f.result(tb, vol, provision.StateOk, "", `{"id": "r-volume", "path": "/var/lib/provisiond/volumes/prv-r-volume"}`)},
		{"container-error", f.result(tb, ctr, provision.StateError, "short of mru: need 0.25 GiB, 0.1 GiB free", "")},
		{"volume-deleted", f.result(tb, vol, provision.StateDeleted, "deleted by owner", "")},
	} {
		v.Results = append(v.Results, ResultVector{
			Name:      res.name,
			Result:    res.r,
			Bytes:     hex.EncodeToString(res.r.Bytes()),
			Signature: res.r.Signature,
		})
	}
	for _, enc := range []struct {
		name   string
		change func(*provision.Reservation)
	}{
		{"created-in-another-zone", func(r *provision.Reservation) {
			r.Created = time.Date(2025, 1, 2, 5, 4, 5, 123400000, time.FixedZone("", 2*3600))
		}},
		{"created-whole-second", func(r *provision.Reservation) {
			r.Created = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		}},
		{"data-absent-reference-empty", func(r *provision.Reservation) { r.Data, r.Reference = nil, "" }},
	} {
		r := f.unsigned(provision.VolumeReservation)
		r.ID = "r-" + enc.name
		enc.change(r)
		r.Sign(f.user)
		del := *r
		del.SignDelete(f.user)
		v.Encodings = append(v.Encodings, ReservationVector{
			Name:            enc.name,
			Reservation:     r,
			CanonicalData:   string(provision.CanonicalData(r.Data)),
			Challenge:       hex.EncodeToString(r.Challenge()),
			Digest:          r.Digest(),
			Signature:       r.Signature,
			DeleteChallenge: hex.EncodeToString(provision.DeleteChallenge(r.ID, r.Digest())),
			DeleteSignature: del.DeleteSignature,
		})
	}
	forge := func(name string, change func(*provision.Reservation)) {
		r := f.signed(tb, provision.NetworkReservation)
		change(r)
		v.Forgeries = append(v.Forgeries, Forgery{Name: name, Reservation: r})
	}
	forge("reservation-data-changed", func(r *provision.Reservation) {
		r.Data = json.RawMessage(`{"name": "office", "ip_range": "10.20.0.0/16", "subnet": "10.20.4.0/24"}`)
	})
	forge("reservation-created-a-nanosecond-later", func(r *provision.Reservation) { r.Created = r.Created.Add(time.Nanosecond) })
	forge("reservation-signed-by-another-user", func(r *provision.Reservation) {
		r.Signature = f.signed(tb, provision.NetworkReservation).Signature
		other := *r
		other.Sign(f.other)
		r.Signature = other.Signature
	})
	forge("delete-of-another-digest", func(r *provision.Reservation) {
		other := f.signed(tb, provision.VolumeReservation)
		other.ID = r.ID
		other.SignDelete(f.user)
		r.ToDelete, r.DeleteSignature = true, other.DeleteSignature
	})
	res := f.result(tb, vol, provision.StateError, "no space", "")
	res.State = provision.StateOk
	v.Forgeries = append(v.Forgeries, Forgery{Name: "result-state-changed", Result: res})
	res = f.result(tb, vol, provision.StateOk, "", `{"path": "/a"}`)
	res.Data = json.RawMessage(`{"path": "/b"}`)
	v.Forgeries = append(v.Forgeries, Forgery{Name: "result-data-changed", Result: res})
	return v
}

// loadVectors reads testdata/vectors.json.
func loadVectors(tb testing.TB) *Vectors {
	tb.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		tb.Fatalf("reading vectors (run with -update to create them): %v", err)
	}
	var v Vectors
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatalf("decoding %s: %v", vectorsFile, err)
	}
	return &v
}

func TestVectors(t *testing.T) {
	// Without HTML escaping, data keeps its literal <, >, & and U+2028 in
	// the file: an independent verifier must escape them as signing does.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(makeVectors(t)); err != nil {
		t.Fatal(err)
	}
	want := buf.Bytes()
	if updating() {
		if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("reading vectors (run with -update to create them): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the vectors computed now; the canonical bytes or signatures changed.\n"+
			"If that is intended (a new domain version), run with -update and review the diff.", vectorsFile)
	}
}

// TestVectorsVerify checks the golden file on its own terms: what a
// relay delivers (the decoded JSON) gives the recorded bytes and verifies.
func TestVectorsVerify(t *testing.T) {
	v := loadVectors(t)
	nodePub, err := identity.PublicKey(v.NodeID)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(nodePub) != v.NodePublic {
		t.Fatalf("node_id %s does not decode to node_public", v.NodeID)
	}
	if len(v.Reservations) != len(provision.Types) || len(v.Results) == 0 {
		t.Fatalf("vectors hold %d reservations and %d results", len(v.Reservations), len(v.Results))
	}
	for _, rv := range v.Reservations {
		t.Run(rv.Name, func(t *testing.T) {
			r := rv.Reservation
			if got := hex.EncodeToString(r.Challenge()); got != rv.Challenge {
				t.Errorf("Challenge() = %s, want %s", got, rv.Challenge)
			}
			if got := string(provision.CanonicalData(r.Data)); got != rv.CanonicalData {
				t.Errorf("CanonicalData() = %s, want %s", got, rv.CanonicalData)
			}
			if r.Digest() != rv.Digest || r.Signature != rv.Signature {
				t.Errorf("Digest, Signature = %s, %s; want %s, %s", r.Digest(), r.Signature, rv.Digest, rv.Signature)
			}
			if err := provision.Validate(r, v.NodeID, r.Created.Add(time.Minute)); err != nil {
				t.Errorf("Validate() = %v", err)
			}
			if got := hex.EncodeToString(provision.DeleteChallenge(r.ID, r.Digest())); got != rv.DeleteChallenge {
				t.Errorf("DeleteChallenge() = %s, want %s", got, rv.DeleteChallenge)
			}
			del := *r
			del.ToDelete, del.DeleteSignature = true, rv.DeleteSignature
			if err := provision.Validate(&del, v.NodeID, r.Expires().Add(time.Hour)); err != nil {
				t.Errorf("Validate(delete after expiry) = %v", err)
			}
		})
	}
	if len(v.Encodings) == 0 || len(v.Forgeries) == 0 {
		t.Fatalf("vectors hold %d encodings and %d forgeries", len(v.Encodings), len(v.Forgeries))
	}
	for _, rv := range v.Encodings {
		t.Run(rv.Name, func(t *testing.T) {
			r := rv.Reservation
			if got := hex.EncodeToString(r.Challenge()); got != rv.Challenge || r.Digest() != rv.Digest {
				t.Errorf("Challenge() = %s, want %s", got, rv.Challenge)
			}
			if err := r.Verify(); err != nil {
				t.Errorf("Verify() = %v", err)
			}
			del := *r
			del.DeleteSignature = rv.DeleteSignature
			if err := del.VerifyDelete(); err != nil {
				t.Errorf("VerifyDelete() = %v", err)
			}
		})
	}
	for _, fv := range v.Forgeries {
		t.Run(fv.Name, func(t *testing.T) {
			var err error
			switch {
			case fv.Result != nil:
				err = fv.Result.Verify(nodePub)
			case fv.Reservation.ToDelete:
				if err = fv.Reservation.Verify(); err != nil {
					t.Fatalf("the reservation under a forged delete must verify: %v", err)
				}
				err = fv.Reservation.VerifyDelete()
			default:
				err = fv.Reservation.Verify()
			}
			if err == nil {
				t.Fatal("a forgery verifies")
			}
		})
	}
	for _, rv := range v.Results {
		t.Run(rv.Name, func(t *testing.T) {
			if got := hex.EncodeToString(rv.Result.Bytes()); got != rv.Bytes {
				t.Errorf("Bytes() = %s, want %s", got, rv.Bytes)
			}
			if err := rv.Result.Verify(nodePub); err != nil {
				t.Errorf("Verify() = %v", err)
			}
		})
	}
}

func TestReservationSignVerify(t *testing.T) {
	f := newFixture(t)
	for _, typ := range provision.Types {
		t.Run(string(typ), func(t *testing.T) {
			r := f.signed(t, typ)
			if r.UserID != f.userID() {
				t.Fatalf("Sign set UserID %s, want %s", r.UserID, f.userID())
			}
			if err := r.Verify(); err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			// Signing is deterministic.
			if again := f.signed(t, typ); again.Signature != r.Signature {
				t.Errorf("two signatures of the same reservation differ")
			}
		})
	}
}

func TestReservationVerifyFailures(t *testing.T) {
	f := newFixture(t)
	otherSig := func(r *provision.Reservation) {
		o := *r
		o.Sign(f.other)
		r.Signature = o.Signature
	}
	tests := []struct {
		name string
		edit func(r *provision.Reservation)
	}{
		{"signature-of-another-user", otherSig},
		{"user-id-of-another-user", func(r *provision.Reservation) { r.UserID = identity.UserID(f.other.Public().(ed25519.PublicKey)) }},
		{"signature-not-hex", func(r *provision.Reservation) { r.Signature = strings.Repeat("zz", 64) }},
		{"signature-short", func(r *provision.Reservation) { r.Signature = r.Signature[:126] }},
		{"signature-empty", func(r *provision.Reservation) { r.Signature = "" }},
		{"user-id-not-hex", func(r *provision.Reservation) { r.UserID = "alice" }},
		{"user-id-short", func(r *provision.Reservation) { r.UserID = r.UserID[:62] }},
		{"user-id-empty", func(r *provision.Reservation) { r.UserID = "" }},
		{"signature-bit-flip", func(r *provision.Reservation) {
			b, _ := hex.DecodeString(r.Signature)
			b[10] ^= 1
			r.Signature = hex.EncodeToString(b)
		}},
		{"data-changed", func(r *provision.Reservation) { r.Data = json.RawMessage(`{"size":11,"type":"ssd"}`) }},
		{"node-changed", func(r *provision.Reservation) { r.NodeID = "other" }},
		{"type-changed", func(r *provision.Reservation) { r.Type = provision.NetworkReservation }},
		{"created-changed", func(r *provision.Reservation) { r.Created = r.Created.Add(time.Nanosecond) }},
		{"duration-changed", func(r *provision.Reservation) { r.Duration++ }},
		{"reference-changed", func(r *provision.Reservation) { r.Reference = "x" }},
		{"version-changed", func(r *provision.Reservation) { r.Version++ }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.signed(t, provision.VolumeReservation)
			tt.edit(r)
			if err := r.Verify(); !errors.Is(err, provision.ErrBadSignature) {
				t.Fatalf("Verify() = %v, want ErrBadSignature", err)
			}
		})
	}
}

func TestDigest(t *testing.T) {
	f := newFixture(t)
	base := f.signed(t, provision.ContainerReservation)
	same := []struct {
		name string
		edit func(r *provision.Reservation)
	}{
		{"id-changed", func(r *provision.Reservation) { r.ID = "another-id" }},
		{"to-delete-set", func(r *provision.Reservation) { r.SignDelete(f.user) }},
		{"created-in-another-zone", func(r *provision.Reservation) { r.Created = r.Created.In(time.FixedZone("x", 5*3600)) }},
		{"data-reindented", func(r *provision.Reservation) {
			var b bytes.Buffer
			if err := json.Indent(&b, r.Data, "  ", "\t"); err != nil {
				t.Fatal(err)
			}
			r.Data = b.Bytes()
		}},
		{"data-html-escaped", func(r *provision.Reservation) { r.Data = provision.CanonicalData(r.Data) }},
		{"result-attached", func(r *provision.Reservation) { r.Result = &provision.Result{State: provision.StateOk} }},
	}
	for _, tt := range same {
		t.Run(tt.name, func(t *testing.T) {
			r := *base
			tt.edit(&r)
			if r.Digest() != base.Digest() {
				t.Fatalf("Digest changed: %s, want %s", r.Digest(), base.Digest())
			}
			if err := r.Verify(); err != nil {
				t.Fatalf("Verify() = %v", err)
			}
		})
	}
	changed := []struct {
		name string
		edit func(r *provision.Reservation)
	}{
		{"node-id", func(r *provision.Reservation) { r.NodeID += "x" }},
		{"user-id", func(r *provision.Reservation) { r.UserID = strings.Repeat("0", 64) }},
		{"type", func(r *provision.Reservation) { r.Type = provision.VolumeReservation }},
		{"created", func(r *provision.Reservation) { r.Created = r.Created.Add(time.Nanosecond) }},
		{"duration", func(r *provision.Reservation) { r.Duration += time.Nanosecond }},
		{"reference", func(r *provision.Reservation) { r.Reference += " " }},
		{"version", func(r *provision.Reservation) { r.Version++ }},
		{"data", func(r *provision.Reservation) {
			r.Data = json.RawMessage(strings.Replace(string(r.Data), `"cpu": 1`, `"cpu": 2`, 1))
		}},
		{"data-key-order", func(r *provision.Reservation) {
			r.Data = json.RawMessage(`{"type":"ssd","size":10}`)
		}},
	}
	for _, tt := range changed {
		t.Run(tt.name, func(t *testing.T) {
			r := *base
			tt.edit(&r)
			if r.Digest() == base.Digest() {
				t.Fatalf("Digest did not change")
			}
		})
	}
}

func TestChallengeLengthPrefixed(t *testing.T) {
	// Moving bytes from one field to the next must change the challenge.
	a := &provision.Reservation{NodeID: "ab", UserID: "c"}
	b := &provision.Reservation{NodeID: "a", UserID: "bc"}
	if bytes.Equal(a.Challenge(), b.Challenge()) {
		t.Fatal("challenges of different field splits are equal")
	}
	if bytes.Equal(provision.DeleteChallenge("ab", "c"), provision.DeleteChallenge("a", "bc")) {
		t.Fatal("delete challenges of different field splits are equal")
	}
}

func TestCanonicalDataRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, typ := range provision.Types {
		t.Run(string(typ), func(t *testing.T) {
			r := f.signed(t, typ)
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var got provision.Reservation
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if err := got.Verify(); err != nil {
				t.Fatalf("Verify() after a JSON round trip = %v", err)
			}
			if err := provision.Validate(&got, f.nodeID, f.now); err != nil {
				t.Fatalf("Validate() after a JSON round trip = %v", err)
			}
			var indented bytes.Buffer
			if err := json.Indent(&indented, b, "", "    "); err != nil {
				t.Fatal(err)
			}
			var again provision.Reservation
			if err := json.Unmarshal(indented.Bytes(), &again); err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(again.Data, r.Data) {
				t.Fatal("re-indentation left data unchanged; the test proves nothing")
			}
			if again.Digest() != r.Digest() {
				t.Fatalf("Digest after re-indentation = %s, want %s", again.Digest(), r.Digest())
			}
			if err := again.Verify(); err != nil {
				t.Fatalf("Verify() after re-indentation = %v", err)
			}
		})
	}
}

func TestCanonicalData(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", ""},
		{"compact", `{"a":1}`, `{"a":1}`},
		{"spaces", " { \"a\" : [ 1 , 2 ] }\n", `{"a":[1,2]}`},
		{"html", `{"a":"<b>&"}`, `{"a":"\u003cb\u003e\u0026"}`},
		{"line-separators", "{\"a\":\"\u2028\u2029\"}", `{"a":"\u2028\u2029"}`},
		{"already-escaped", `{"a":"\u003c"}`, `{"a":"\u003c"}`},
		{"invalid-kept", `{"a":`, `{"a":`},
		{"spaces-in-strings-kept", `{"a b":" c "}`, `{"a b":" c "}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(provision.CanonicalData([]byte(tt.in)))
			if got != tt.want {
				t.Errorf("CanonicalData(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	r := f.signed(t, provision.VolumeReservation)
	r.SignDelete(f.user)
	if !r.ToDelete {
		t.Fatal("SignDelete did not set ToDelete")
	}
	if err := r.VerifyDelete(); err != nil {
		t.Fatalf("VerifyDelete() = %v", err)
	}
	tests := []struct {
		name string
		edit func(r *provision.Reservation)
	}{
		{"another-id", func(r *provision.Reservation) { r.ID = "r-other" }},
		{"another-digest", func(r *provision.Reservation) { r.Version++ }},
		{"signed-by-another-user", func(r *provision.Reservation) {
			o := *r
			o.SignDelete(f.other)
			r.DeleteSignature = o.DeleteSignature
		}},
		{"reservation-signature-as-delete", func(r *provision.Reservation) { r.DeleteSignature = r.Signature }},
		{"missing", func(r *provision.Reservation) { r.DeleteSignature = "" }},
		{"not-hex", func(r *provision.Reservation) { r.DeleteSignature = "not hex" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := *r
			tt.edit(&d)
			if err := d.VerifyDelete(); !errors.Is(err, provision.ErrBadDeleteSignature) {
				t.Fatalf("VerifyDelete() = %v, want ErrBadDeleteSignature", err)
			}
		})
	}
}

func TestResultSignVerify(t *testing.T) {
	f := newFixture(t)
	nodePub := f.node.Public().(ed25519.PublicKey)
	r := f.signed(t, provision.VolumeReservation)
	base := f.result(t, r, provision.StateOk, "", `{"path": "/x"}`)
	if err := base.Verify(nodePub); err != nil {
		t.Fatalf("Verify() = %v", err)
	}

	b, err := json.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	var relayed provision.Result
	if err := json.Unmarshal(b, &relayed); err != nil {
		t.Fatal(err)
	}
	if err := relayed.Verify(nodePub); err != nil {
		t.Fatalf("Verify() after a JSON round trip = %v", err)
	}

	tests := []struct {
		name string
		edit func(res *provision.Result)
		key  ed25519.PublicKey
	}{
		{"another-node-key", nil, f.other.Public().(ed25519.PublicKey)},
		{"short-node-key", nil, nodePub[:31]},
		{"node-id", func(res *provision.Result) { res.NodeID = "x" }, nodePub},
		{"id", func(res *provision.Result) { res.ID = "r-other" }, nodePub},
		{"digest", func(res *provision.Result) { res.Digest = strings.Repeat("0", 64) }, nodePub},
		{"version", func(res *provision.Result) { res.Version++ }, nodePub},
		{"state", func(res *provision.Result) { res.State = provision.StateDeleted }, nodePub},
		{"created", func(res *provision.Result) { res.Created = res.Created.Add(time.Second) }, nodePub},
		{"message", func(res *provision.Result) { res.Message = "ok" }, nodePub},
		{"data", func(res *provision.Result) { res.Data = json.RawMessage(`{"path":"/y"}`) }, nodePub},
		{"signature-not-hex", func(res *provision.Result) { res.Signature = "zz" }, nodePub},
		{"signature-empty", func(res *provision.Result) { res.Signature = "" }, nodePub},
		{"reservation-signature", func(res *provision.Result) { res.Signature = r.Signature }, nodePub},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := *base
			if tt.edit != nil {
				tt.edit(&res)
			}
			if err := res.Verify(tt.key); !errors.Is(err, provision.ErrBadResultSignature) {
				t.Fatalf("Verify() = %v, want ErrBadResultSignature", err)
			}
		})
	}
}

// TestResultSignSurvivesJSON checks that a result whose strings are not
// valid UTF-8 (an error message naming a file with a Latin-1 name) still
// verifies after encoding/json carried it to the explorer.
func TestResultSignSurvivesJSON(t *testing.T) {
	f := newFixture(t)
	nodePub := f.node.Public().(ed25519.PublicKey)
	tests := []struct {
		name, id, message string
	}{
		{"invalid-utf8-message", "r-1", "opening /data/caf\xe9: no such file"},
		{"invalid-utf8-run", "r-1", "bad \xff\xfe\xfd bytes"},
		{"truncated-rune", "r-1", "cut \xe2\x82"},
		{"invalid-utf8-id", "r-\xff", "bad id"},
		{"valid-utf8", "r-1", "café ✓"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &provision.Result{ID: tt.id, NodeID: f.nodeID, State: provision.StateError, Message: tt.message, Created: fixedCreated}
			if err := res.Sign(provision.KeySigner(f.node)); err != nil {
				t.Fatal(err)
			}
			if err := res.Verify(nodePub); err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			b, err := json.Marshal(res)
			if err != nil {
				t.Fatal(err)
			}
			var got provision.Result
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if err := got.Verify(nodePub); err != nil {
				t.Fatalf("Verify() after a JSON round trip = %v", err)
			}
		})
	}
}

func TestKeySignerBadKey(t *testing.T) {
	res := &provision.Result{ID: "r-1"}
	if err := res.Sign(provision.KeySigner(make([]byte, 10))); err == nil {
		t.Fatal("Sign with a 10-byte key succeeded")
	}
	if res.Signature != "" {
		t.Fatalf("a failed Sign set Signature %q", res.Signature)
	}
}

func TestNetworkID(t *testing.T) {
	f := newFixture(t)
	user := f.userID()
	other := identity.UserID(f.other.Public().(ed25519.PublicKey))
	id := provision.NetworkID(user, "office")
	if len(id) != 16 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("NetworkID = %q, want 16 lowercase hex characters", id)
	}
	if provision.NetworkID(user, "office") != id {
		t.Fatal("NetworkID is not deterministic")
	}
	for _, other := range [][2]string{{other, "office"}, {user, "office2"}, {user + "o", "ffice"}} {
		if provision.NetworkID(other[0], other[1]) == id {
			t.Errorf("NetworkID(%q, %q) equals NetworkID(user, office)", other[0], other[1])
		}
	}
}

// TestVectorsOpenSSL verifies every signature of the golden file with
// OpenSSL, an implementation that shares no code with ours, and checks that
// OpenSSL refuses a tampered message.
func TestVectorsOpenSSL(t *testing.T) {
	openssl := testutil.RequiresCommand(t, "openssl")
	v := loadVectors(t)
	userPub, err := hex.DecodeString(v.UserID)
	if err != nil {
		t.Fatal(err)
	}
	nodePub, err := hex.DecodeString(v.NodePublic)
	if err != nil {
		t.Fatal(err)
	}
	type signed struct {
		name     string
		pub      []byte
		msg, sig string
	}
	var all []signed
	for _, rv := range v.Reservations {
		all = append(all,
			signed{rv.Name + "-reservation", userPub, rv.Challenge, rv.Signature},
			signed{rv.Name + "-delete", userPub, rv.DeleteChallenge, rv.DeleteSignature})
	}
	for _, rv := range v.Results {
		all = append(all, signed{rv.Name + "-result", nodePub, rv.Bytes, rv.Signature})
	}
	for _, s := range all {
		t.Run(s.name, func(t *testing.T) {
			dir := t.TempDir()
			pubPEM := writePublicKeyPEM(t, dir, s.pub)
			msg := mustHex(t, s.msg)
			sig := writeFile(t, dir, "sig.bin", mustHex(t, s.sig))

			ok, out := opensslVerify(t, openssl, pubPEM, writeFile(t, dir, "msg.bin", msg), sig)
			if !ok || !strings.Contains(out, "Signature Verified Successfully") {
				t.Fatalf("openssl refused a golden signature:\n%s", out)
			}

			tampered := bytes.Clone(msg)
			tampered[len(tampered)-1] ^= 0x01
			ok, out = opensslVerify(t, openssl, pubPEM, writeFile(t, dir, "tampered.bin", tampered), sig)
			if ok || strings.Contains(out, "Signature Verified Successfully") {
				t.Fatalf("openssl accepted a tampered message:\n%s", out)
			}
		})
	}
}

// opensslVerify runs openssl pkeyutl -verify and reports whether it exited
// successfully, with its combined output.
func opensslVerify(tb testing.TB, openssl, pubPEM, msg, sig string) (bool, string) {
	tb.Helper()
	cmd := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pubPEM, "-rawin", "-in", msg, "-sigfile", sig)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		tb.Fatalf("running openssl: %v", err)
	}
	return err == nil, string(out)
}

// writePublicKeyPEM writes an ed25519 public key as a PEM
// SubjectPublicKeyInfo and returns its path.
func writePublicKeyPEM(tb testing.TB, dir string, pub []byte) string {
	tb.Helper()
	der, err := x509.MarshalPKIXPublicKey(ed25519.PublicKey(pub))
	if err != nil {
		tb.Fatal(err)
	}
	return writeFile(tb, dir, "pub.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func writeFile(tb testing.TB, dir, name string, b []byte) string {
	tb.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("decoding hex: %v", err)
	}
	return b
}

// TestReservationSignSurvivesJSON checks that a reservation whose strings
// are not valid UTF-8 still verifies after encoding/json carried it.
func TestReservationSignSurvivesJSON(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name string
		edit func(r *provision.Reservation)
	}{
		{"invalid-utf8-reference", func(r *provision.Reservation) { r.Reference = "caf\xe9 \xff\xfe" }},
		{"invalid-utf8-node-id", func(r *provision.Reservation) { r.NodeID = "node\xc3" }},
		{"valid-utf8-reference", func(r *provision.Reservation) { r.Reference = "café ✓ <b>" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.unsigned(provision.VolumeReservation)
			tt.edit(r)
			r.Sign(f.user)
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var got provision.Reservation
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if err := got.Verify(); err != nil {
				t.Fatalf("Verify() after a JSON round trip = %v", err)
			}
			if got.Digest() != r.Digest() {
				t.Fatalf("Digest after a JSON round trip = %s, want %s", got.Digest(), r.Digest())
			}
		})
	}
}

// TestVectorsIndependentVerifier runs scripts/verify-vectors.py, a verifier
// written from docs/explorer-api.md in Python and openssl, on the golden
// vectors, and on a copy in which a forgery stands in for a genuine
// reservation, which it must refuse.
func TestVectorsIndependentVerifier(t *testing.T) {
	python := testutil.RequiresCommand(t, "python3")
	testutil.RequiresCommand(t, "openssl")
	script := filepath.Join("..", "scripts", "verify-vectors.py")
	out, err := exec.Command(python, script, vectorsFile).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatalf("the independent verifier refused the vectors: %v\n%s", err, out)
	}
	t.Logf("verify-vectors.py: %s", bytes.TrimSpace(out))

	v := loadVectors(t)
	forged := v.Forgeries[0]
	if forged.Reservation == nil {
		t.Fatalf("forgery %s is not a reservation", forged.Name)
	}
	v.Reservations[0].Reservation = forged.Reservation
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	bad := writeFile(t, t.TempDir(), "vectors.json", b)
	out, err = exec.Command(python, script, bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAIL reservations/") {
		t.Fatalf("the independent verifier accepted %s as a genuine reservation: %v\n%s", forged.Name, err, out)
	}
}
