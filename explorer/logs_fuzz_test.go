package explorer

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// fuzzKeys are the fixed keys of the log fuzz targets.
func fuzzKeys() (owner, node ed25519.PrivateKey) {
	return ed25519.NewKeyFromSeed(make([]byte, 32)), ed25519.NewKeyFromSeed([]byte("0123456789abcdef0123456789abcdef"))
}

// FuzzLogRequest decodes arbitrary request bodies as the explorer does
// and verifies them: never a panic, and a request that verifies names a
// valid reservation ID, a bounded tail and a user key, and still verifies
// after a JSON round trip.
func FuzzLogRequest(f *testing.F) {
	owner, node := fuzzKeys()
	now := time.Unix(1767225600, 0)
	q := &LogRequest{ID: "9f2c4e1a7b3d5e60", NodeID: identity.NodeID(node.Public().(ed25519.PublicKey)),
		UserID: identity.UserID(owner.Public().(ed25519.PublicKey)), Tail: 100}
	if err := q.Sign(owner, now); err != nil {
		f.Fatal(err)
	}
	raw, _ := json.Marshal(q)
	f.Add(raw)
	f.Add([]byte(`{"id":"../x","tail":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r LogRequest
		if provision.DecodeData(data, &r) != nil {
			return
		}
		_ = r.Name()
		if r.Verify(now) != nil {
			return
		}
		if r.Tail < 1 || r.Tail > MaxLogTail || provision.ValidName("id", r.ID) != nil {
			t.Fatalf("a verified request out of range: %+v", r)
		}
		again, _ := json.Marshal(&r)
		var back LogRequest
		if err := provision.DecodeData(again, &back); err != nil || back.Verify(now) != nil || back.Name() != r.Name() {
			t.Fatalf("a verified request changed in a round trip: %s → %s: %v", data, again, err)
		}
	})
}

// FuzzOpenLogs opens arbitrary sealed answers: never a panic, and only a
// box sealed to the owner holding the node's signature opens.
func FuzzOpenLogs(f *testing.F) {
	owner, node := fuzzKeys()
	q := &LogRequest{ID: "9f2c4e1a7b3d5e60", NodeID: identity.NodeID(node.Public().(ed25519.PublicKey)),
		UserID: identity.UserID(owner.Public().(ed25519.PublicKey)), Tail: 100, Created: time.Unix(1, 0), Nonce: "00"}
	good, err := SealLogs(q, node, []byte("hello"))
	if err != nil {
		f.Fatal(err)
	}
	unsigned, _ := identity.Seal(owner.Public().(ed25519.PublicKey), []byte("hello"))
	f.Add(good)
	f.Add(unsigned)
	f.Add("!!")
	f.Fuzz(func(t *testing.T, sealed string) {
		out, err := OpenLogs(q, owner, sealed)
		if err == nil && string(out) != "hello" {
			t.Fatalf("a box without the node's signature over its tail opened: %q", out)
		}
	})
}

// FuzzCheckLogReply judges arbitrary node answers: never a panic, and an
// accepted answer holds either a bounded sealed box or a bounded error.
func FuzzCheckLogReply(f *testing.F) {
	f.Add([]byte(`{"request":"ab","sealed":"aGVsbG8="}`), "ab")
	f.Add([]byte(`{"request":"ab","error":"not a container"}`), "ab")
	f.Add([]byte(`{"request":"ab","sealed":"x","error":"y"}`), "ab")
	f.Fuzz(func(t *testing.T, data []byte, name string) {
		var r LogReply
		if provision.DecodeData(data, &r) != nil {
			return
		}
		if CheckLogReply(&r, name) != nil {
			return
		}
		if r.Request != name || (r.Sealed == "") == (r.Error == "") || len(r.Sealed) > MaxSealedLog || len(r.Error) > MaxLogError {
			t.Fatalf("accepted %+v for %q", r, name)
		}
	})
}
