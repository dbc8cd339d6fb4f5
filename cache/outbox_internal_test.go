package cache

import (
	"reflect"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// An entry encoded before its write is queued and numbered in the commit
// decodes to the entry with that Seq, whatever Seq the caller had set.
func TestWithSeq(t *testing.T) {
	e := provision.OutboxEntry{
		Seq:  77, // ignored: the store numbers entries
		Kind: provision.OutboxResult,
		Result: &provision.Result{
			Type: provision.VolumeReservation, ID: "r-1", NodeID: "node", Digest: "d", Version: 2,
			Created: time.Unix(1700000000, 5).UTC(), State: provision.StateOk,
			Data: []byte(`{"path":"/v"}`), Signature: "ab",
		},
		Created: time.Unix(1700000001, 0).UTC(),
	}
	enc, err := encodeEntries([]*provision.OutboxEntry{nil, &e})
	if err != nil {
		t.Fatal(err)
	}
	if enc[0].v != nil {
		t.Errorf("a nil entry was encoded as %q", enc[0].v)
	}
	for _, seq := range []uint64{1, 10, 18446744073709551615} {
		got, err := decodeEntry(withSeq(enc[1].v, seq))
		if err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
		want := e
		want.Seq = seq
		if !reflect.DeepEqual(got, &want) {
			t.Errorf("seq %d: decoded %+v, want %+v", seq, got, &want)
		}
	}
}
