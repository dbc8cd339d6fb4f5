package gc

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/cache"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// fakeImages records the references a sweep was given.
type fakeImages struct {
	refs map[string]bool
	err  error
}

func (f *fakeImages) SweepImages(_ context.Context, referenced func() (map[string]bool, error)) (container.SweepResult, error) {
	f.refs, f.err = referenced()
	return container.SweepResult{}, f.err
}

func containerRecord(t testing.TB, id string, st provision.State, digest string) *provision.Record {
	t.Helper()
	rec := provisiontest.NewRecord(id, st, time.Hour, "")
	rec.Reservation.Type = provision.ContainerReservation
	data, err := json.Marshal(map[string]any{
		"image": "/img.tar", "image_digest": digest, "entrypoint": []string{"/bin/sh"},
		"network":  map[string]string{"network_id": "", "ip": ""},
		"capacity": map[string]int{"cpu": 1, "memory": 512, "disk_size": 256},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec.Reservation.Data = data
	return rec
}

func digest(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// TestSweepDerivesFromStore reads the references of the live records from
// the store at each sweep, and purges exactly the final records expired
// longer than the allowed skew.
func TestSweepDerivesFromStore(t *testing.T) {
	st, err := cache.Open(filepath.Join(t.TempDir(), "db"), cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, rec := range []*provision.Record{
		containerRecord(t, "live-a", provision.Deployed, digest('a')),
		containerRecord(t, "live-b", provision.Accepted, digest('b')),
		containerRecord(t, "gone-c", provision.Deleted, digest('c')),
		provisiontest.NewRecord("vol", provision.Deployed, time.Hour, ""),
		provisiontest.NewRecord("old-deleted", provision.Deleted, time.Hour, ""),
		provisiontest.NewRecord("recent-deleted", provision.Deleted, 2*time.Hour, ""),
	} {
		if err := st.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	images := &fakeImages{}
	// One hour and a half after the epoch: gone-c, live-a … (one hour)
	// expired 30 minutes ago, recent-deleted not yet.
	now := provisiontest.SuiteEpoch.Add(90 * time.Minute)
	c := New(Options{Store: st, Images: images, Now: func() time.Time { return now }})
	r, err := c.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]bool{digest('a'): true, digest('b'): true}; len(images.refs) != 2 || !images.refs[digest('a')] || !images.refs[digest('b')] {
		t.Errorf("references = %v, want %v", images.refs, want)
	}
	slices.Sort(r.Records)
	if want := []string{"gone-c", "old-deleted"}; !slices.Equal(r.Records, want) {
		t.Errorf("purged %v, want %v", r.Records, want)
	}
	if _, err := st.Get("recent-deleted"); err != nil {
		t.Errorf("recent-deleted: %v", err)
	}
	if got, ok := c.Last(); !ok || !got.At.Equal(now) {
		t.Errorf("Last() = %+v, %t", got, ok)
	}
	// Within the skew after expiry a final record stays: a replay of it
	// could still pass a node whose clock is behind.
	now = provisiontest.SuiteEpoch.Add(2*time.Hour + provision.MaxClockSkew - time.Second)
	if r, err := c.Sweep(t.Context()); err != nil || len(r.Records) != 0 {
		t.Errorf("Sweep within the skew purged %v, %v", r.Records, err)
	}
	now = now.Add(2 * time.Second)
	if r, err := c.Sweep(t.Context()); err != nil || !slices.Equal(r.Records, []string{"recent-deleted"}) {
		t.Errorf("Sweep past the skew purged %v, %v", r.Records, err)
	}
	// A record removed from the store no longer keeps its image.
	if err := st.Save(containerRecord(t, "live-b", provision.Deleted, digest('b'))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Sweep(t.Context()); err != nil || len(images.refs) != 1 || !images.refs[digest('a')] {
		t.Errorf("references after live-b ended = %v, %v", images.refs, err)
	}
}

// TestSweepUndecodableKeepsAll makes a live record the collector cannot
// read stop the image removal: nothing is deleted on a doubt.
func TestSweepUndecodableKeepsAll(t *testing.T) {
	st, err := cache.Open(filepath.Join(t.TempDir(), "db"), cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := containerRecord(t, "bad", provision.Deployed, digest('a'))
	rec.Reservation.Data = json.RawMessage(`{"image": 5}`)
	if err := st.Add(rec); err != nil {
		t.Fatal(err)
	}
	images := &fakeImages{}
	c := New(Options{Store: st, Images: images})
	if _, err := c.Sweep(t.Context()); err == nil || images.err == nil {
		t.Fatalf("Sweep = %v (references error %v), want an error", err, images.err)
	}
}

func TestMeasure(t *testing.T) {
	dir := t.TempDir()
	write := func(p string, n int) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "images", "x", "f"), 1<<20)
	write(filepath.Join(dir, "containers", "prv-a", "upper", "f"), 2<<20)
	write(filepath.Join(dir, "logs", "prv-a.log"), 3<<20)
	write(filepath.Join(dir, "vol", "prv-v.img"), 4<<20)
	write(filepath.Join(dir, "vol", "other"), 8<<20) // not a volume
	write(filepath.Join(dir, "db"), 5<<20)
	sparse, err := os.Create(filepath.Join(dir, "vol", "prv-s.img"))
	if err != nil {
		t.Fatal(err)
	}
	sparse.Truncate(1 << 30) // sparse: counts nothing
	sparse.Close()
	u := Measure(Paths{
		Images: filepath.Join(dir, "images"), Containers: []string{filepath.Join(dir, "containers")},
		Logs: filepath.Join(dir, "logs"), Volumes: []string{filepath.Join(dir, "vol"), filepath.Join(dir, "vol")},
		Database: filepath.Join(dir, "db"),
	}, time.Now())
	near := func(name string, got, want int64) {
		if got < want || got > want+64<<10 {
			t.Errorf("%s = %d, want about %d", name, got, want)
		}
	}
	near("images", u.Images, 1<<20)
	near("containers", u.Containers, 2<<20)
	near("logs", u.Logs, 3<<20)
	near("volumes", u.Volumes, 4<<20)
	near("database", u.Database, 5<<20)
}
