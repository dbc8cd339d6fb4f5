package provision_test

import (
	"bytes"
	"encoding/json"
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
	checked := spec
	checked.Health = &provision.HealthCheck{TCPPort: 80}
	never := spec
	never.Restart = provision.RestartNever
	always := spec
	always.Restart = provision.RestartAlways
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
		{"container health check", c1, checked, true},
		{"container restart policy", c1, never, true},
		{"container restart policy named as its default", c1, always, true},
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

// FuzzCheckUpdate judges arbitrary data as the next version of a volume,
// a network and a container: it never panics, a refusal is permanent and
// wraps ErrBadUpdate, an accepted update is the next version naming the
// current digest, and a signature over previous binds it.
func FuzzCheckUpdate(f *testing.F) {
	u := provisiontest.NewUser(1)
	at := time.Unix(1e9, 0)
	curs := []*provision.Reservation{
		u.Volume("v", "node", 2, at, time.Hour),
		u.Network("n", "node", "net", at, time.Hour),
		u.Container("c", "node", 1, 512, provision.NetworkID(u.ID, "net"), []string{"v"}, at, time.Hour),
	}
	for _, c := range curs {
		f.Add(uint8(0), []byte(c.Data), uint32(1), false)
	}
	f.Add(uint8(0), []byte(`{"size":1,"type":"ssd"}`), uint32(1), false)
	f.Add(uint8(2), []byte(`{"image":"x"}`), uint32(2), true)
	f.Fuzz(func(t *testing.T, which uint8, data []byte, step uint32, wrongPrev bool) {
		cur := curs[int(which)%len(curs)]
		next := u.Update(cur, json.RawMessage(`{}`))
		next.Data = data
		next.Version = cur.Version + step
		if wrongPrev {
			next.Previous = strings.Repeat("ab", 32)
		}
		next.Sign(u.Key)
		err := provision.CheckUpdate(cur, cur.Digest(), next)
		if err != nil {
			if !errors.Is(err, provision.ErrBadUpdate) || provision.IsTemporary(err) {
				t.Fatalf("refusal %v is not a permanent ErrBadUpdate", err)
			}
			return
		}
		if next.Version != cur.Version+1 || next.Previous != cur.Digest() || wrongPrev {
			t.Fatalf("accepted version %d naming %s after version %d (%s)", next.Version, next.Previous, cur.Version, cur.Digest())
		}
		if _, err := next.Workload(); err != nil {
			t.Fatalf("accepted an update whose data is not a workload: %v", err)
		}
		tampered := *next
		tampered.Previous = strings.Repeat("cd", 32)
		if tampered.Verify() == nil {
			t.Fatal("the signature does not cover previous")
		}
	})
}

func TestSameCheck(t *testing.T) {
	tcp := &provision.HealthCheck{TCPPort: 80}
	spelled := &provision.HealthCheck{TCPPort: 80, Interval: provision.DefaultHealthInterval, Timeout: provision.DefaultHealthTimeout,
		Failures: provision.DefaultHealthFailures, StartPeriod: provision.DefaultHealthStartPeriod}
	for _, c := range []struct {
		name string
		a, b *provision.HealthCheck
		same bool
	}{
		{"both nil", nil, nil, true},
		{"nil and one", nil, tcp, false},
		{"defaults spelled out", tcp, spelled, true},
		{"another port", tcp, &provision.HealthCheck{TCPPort: 81}, false},
		{"another interval", tcp, &provision.HealthCheck{TCPPort: 80, Interval: 3}, false},
		{"another command", &provision.HealthCheck{Exec: []string{"a"}}, &provision.HealthCheck{Exec: []string{"a", "b"}}, false},
	} {
		if got := c.a.SameCheck(c.b); got != c.same {
			t.Errorf("%s: SameCheck = %v", c.name, got)
		}
	}
}
