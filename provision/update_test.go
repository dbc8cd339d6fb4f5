package provision_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// Previous is signed: it extends the challenge only when set (first
// versions sign the bytes they always did), and changing it breaks the
// signature.
func TestPreviousIsSigned(t *testing.T) {
	u := provisiontest.NewUser(1)
	v1 := u.Volume("v", "n", 2, time.Unix(1e9, 0), time.Hour)
	plain := *v1
	plain.Previous = ""
	if !bytes.Equal(plain.Challenge(), v1.Challenge()) {
		t.Fatal("a first version's challenge changed")
	}
	v2 := u.Update(v1, provision.Volume{Size: 3, Type: provision.SSD})
	if err := v2.Verify(); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(v2.Challenge(), provision.LengthPrefixed(v1.Digest())) {
		t.Fatal("the challenge does not end with the previous digest")
	}
	v2.Previous = strings.Repeat("1", 64)
	if err := v2.Verify(); !errors.Is(err, provision.ErrBadSignature) {
		t.Fatalf("a changed previous digest verifies: %v", err)
	}
	v2.Previous = "not hex"
	v2.Sign(u.Key)
	if err := provision.Validate(v2, "n", time.Unix(1e9, 0)); !errors.Is(err, provision.ErrBadField) {
		t.Fatalf("a malformed previous digest validates: %v", err)
	}
}

// What may change in place, per type.
func TestCheckUpdate(t *testing.T) {
	u := provisiontest.NewUser(1)
	at := time.Unix(1e9, 0)
	net := u.Network("n", "node", "net", at, time.Hour)
	c1 := u.Container("c", "node", 1, 512, provision.NetworkID(u.ID, "net"), []string{"v"}, at, time.Hour)
	var spec provision.Container
	w, _ := c1.Workload()
	spec = *w.(*provision.Container)
	live := spec
	live.Capacity = provision.ContainerCapacity{CPU: 2, Memory: 1024}
	live.Env = map[string]string{"A": "b"}
	live.Entrypoint = []string{"/bin/true"}
	moved := spec
	moved.Network.IP = "10.1.1.11"
	remount := spec
	remount.Mounts = nil
	nw, _ := net.Workload()
	peers := *nw.(*provision.Network)
	renamed := peers
	renamed.Name = "other"
	for _, c := range []struct {
		name string
		cur  *provision.Reservation
		data any
		ok   bool
	}{
		{"container capacity, env, entrypoint", c1, live, true},
		{"container IP", c1, moved, false},
		{"container mounts", c1, remount, false},
		{"network unchanged", net, peers, true},
		{"network name", net, renamed, false},
	} {
		next := u.Update(c.cur, c.data)
		err := provision.CheckUpdate(c.cur, c.cur.Digest(), next)
		if (err == nil) != c.ok || (err != nil && (!errors.Is(err, provision.ErrBadUpdate) || provision.IsTemporary(err))) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
