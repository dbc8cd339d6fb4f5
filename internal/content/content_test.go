package content_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/edgeprov/provisiond/internal/content"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// failAfter is a body that breaks after n bytes, as a dropped connection.
type failAfter struct {
	r io.Reader
	n int
}

var errDropped = errors.New("connection dropped")

func (f *failAfter) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errDropped
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestIngestResumes(t *testing.T) {
	s := content.New(t.TempDir())
	blob := bytes.Repeat([]byte("0123456789"), 100_000)
	d := digestOf(blob)
	var offsets []int64
	fetch := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		offsets = append(offsets, off)
		if len(offsets) == 1 {
			return io.NopCloser(&failAfter{r: bytes.NewReader(blob), n: 300_000}), false, nil
		}
		return io.NopCloser(bytes.NewReader(blob[off:])), true, nil
	}
	if err := s.Ingest(t.Context(), d, int64(len(blob)), fetch); !errors.Is(err, errDropped) {
		t.Fatalf("first Ingest = %v, want the dropped connection", err)
	}
	if s.Has(d) {
		t.Fatal("an interrupted blob is in the store")
	}
	if dl, _ := s.Downloads(); len(dl) != 1 || dl[0].Size != 300_000 {
		t.Fatalf("downloads = %+v, want one of 300000 bytes", dl)
	}
	if err := s.Ingest(t.Context(), d, int64(len(blob)), fetch); err != nil {
		t.Fatal(err)
	}
	if len(offsets) != 2 || offsets[1] != 300_000 {
		t.Fatalf("fetched from offsets %v, want [0 300000]", offsets)
	}
	got, err := s.ReadVerified(d, 1<<20)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadVerified = %d bytes, %v", len(got), err)
	}
	if dl, _ := s.Downloads(); len(dl) != 0 {
		t.Fatalf("downloads left: %+v", dl)
	}
}

func TestIngestServerIgnoresRange(t *testing.T) {
	s := content.New(t.TempDir())
	blob := bytes.Repeat([]byte("x"), 5000)
	d := digestOf(blob)
	calls := 0
	fetch := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		calls++
		if calls == 1 {
			return io.NopCloser(&failAfter{r: bytes.NewReader(blob), n: 1000}), false, nil
		}
		return io.NopCloser(bytes.NewReader(blob)), false, nil // a 200: whole blob
	}
	s.Ingest(t.Context(), d, int64(len(blob)), fetch)
	if err := s.Ingest(t.Context(), d, int64(len(blob)), fetch); err != nil {
		t.Fatal(err)
	}
	if !s.Has(d) {
		t.Fatal("blob not stored")
	}
}

func TestIngestRefuses(t *testing.T) {
	blob := []byte("hello, blob")
	d := digestOf(blob)
	tests := []struct {
		name string
		body []byte
		size int64
		err  error
	}{
		{"other-digest", []byte("hello, blub"), int64(len(blob)), content.ErrDigestMismatch},
		{"too-long", append(append([]byte{}, blob...), 'x'), int64(len(blob)), content.ErrSizeMismatch},
		{"too-short", blob[:5], int64(len(blob)), content.ErrSizeMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := content.New(dir)
			err := s.Ingest(t.Context(), d, tc.size, func(context.Context, int64) (io.ReadCloser, bool, error) {
				return io.NopCloser(bytes.NewReader(tc.body)), false, nil
			})
			if !errors.Is(err, tc.err) {
				t.Fatalf("Ingest = %v, want %v", err, tc.err)
			}
			for _, sub := range []string{"sha256", "ingest"} {
				if es, _ := os.ReadDir(filepath.Join(dir, sub)); len(es) != 0 {
					t.Fatalf("%s left behind: %v", sub, es)
				}
			}
		})
	}
	if err := content.New(t.TempDir()).Ingest(t.Context(), "../x", 1, nil); !errors.Is(err, content.ErrBadDigest) {
		t.Fatalf("bad digest: %v", err)
	}
}

func TestIngestOnce(t *testing.T) {
	s := content.New(t.TempDir())
	blob := bytes.Repeat([]byte("y"), 1<<20)
	d := digestOf(blob)
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(context.Context, int64) (io.ReadCloser, bool, error) {
		fetches.Add(1)
		<-release
		return io.NopCloser(bytes.NewReader(blob)), false, nil
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() { errs[i] = s.Ingest(t.Context(), d, int64(len(blob)), fetch) })
	}
	for !s.InFlight(d) {
		runtime.Gosched() // the first to start blocks in fetch
	}
	close(release)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("fetched %d times, want once", n)
	}
}

func TestTamperedBlobRemoved(t *testing.T) {
	s := content.New(t.TempDir())
	blob := []byte(`{"schemaVersion":2}`)
	d := digestOf(blob)
	if err := s.Put(d, blob); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.Path(d), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Path(d), []byte(`{"schemaVersion":3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadVerified(d, 1024); !errors.Is(err, content.ErrTampered) {
		t.Fatalf("ReadVerified = %v, want ErrTampered", err)
	}
	if s.Has(d) {
		t.Fatal("tampered blob kept")
	}
}

func TestCheckKeepsNothing(t *testing.T) {
	s := content.New(t.TempDir())
	blob := bytes.Repeat([]byte("layer "), 1_000_000) // more than a writeback window
	d := digestOf(blob)
	whole := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		return io.NopCloser(bytes.NewReader(blob[off:])), off > 0, nil
	}
	stored, err := s.Check(t.Context(), d, int64(len(blob)), whole)
	if err != nil || stored {
		t.Fatalf("Check = %v, %v; want checked, not stored", stored, err)
	}
	if s.Has(d) {
		t.Fatal("a checked blob is stored")
	}
	if dl, _ := s.Downloads(); len(dl) != 0 {
		t.Fatalf("downloads left: %+v", dl)
	}

	// Another digest: refused, nothing left.
	other := digestOf([]byte("other"))
	if _, err := s.Check(t.Context(), other, int64(len(blob)), whole); !errors.Is(err, content.ErrDigestMismatch) {
		t.Fatalf("Check of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	if dl, _ := s.Downloads(); len(dl) != 0 {
		t.Fatalf("downloads left after a mismatch: %+v", dl)
	}

	// Interrupted: the bytes so far stay, and the Check that resumes them
	// stores the blob (its caller did not see the first bytes).
	cut := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		return io.NopCloser(&failAfter{r: bytes.NewReader(blob), n: 100_000}), false, nil
	}
	if _, err := s.Check(t.Context(), d, int64(len(blob)), cut); !errors.Is(err, errDropped) {
		t.Fatalf("cut Check = %v, want the dropped connection", err)
	}
	if dl, _ := s.Downloads(); len(dl) != 1 || dl[0].Size != 100_000 {
		t.Fatalf("downloads after a cut = %+v, want the 100000 bytes so far", dl)
	}
	stored, err = s.Check(t.Context(), d, int64(len(blob)), whole)
	if err != nil || !stored || !s.Has(d) {
		t.Fatalf("resumed Check = %v, %v (stored: %v); want the blob stored", stored, err, s.Has(d))
	}
}

// An Ingest that comes while a Check of the same blob runs fetches the
// blob itself once the Check is done: Ingest always ends with the blob
// stored.
func TestIngestAfterCheck(t *testing.T) {
	s := content.New(t.TempDir())
	blob := []byte("shared layer")
	d := digestOf(blob)
	release := make(chan struct{})
	checking := make(chan struct{})
	var fetches atomic.Int32
	fetch := func(_ context.Context, off int64) (io.ReadCloser, bool, error) {
		if fetches.Add(1) == 1 {
			close(checking)
			<-release
		}
		return io.NopCloser(bytes.NewReader(blob)), false, nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.Check(t.Context(), d, int64(len(blob)), fetch)
		done <- err
	}()
	<-checking
	ingested := make(chan error, 1)
	go func() { ingested <- s.Ingest(t.Context(), d, int64(len(blob)), fetch) }()
	for !s.InFlight(d) {
		runtime.Gosched()
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-ingested; err != nil || !s.Has(d) {
		t.Fatalf("Ingest after Check = %v, stored %v", err, s.Has(d))
	}
	if n := fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (the Check's, then the Ingest's own)", n)
	}
}
