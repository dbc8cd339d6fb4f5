package writeback_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgeprov/provisiond/internal/writeback"
)

func TestCopyWritesEveryByte(t *testing.T) {
	for _, tc := range []struct {
		name      string
		off, size int
	}{
		{"empty", 0, 0},
		{"below-a-window", 0, writeback.Window - 1},
		{"windows-and-a-tail", 0, 3*writeback.Window + 12345},
		{"from-an-offset", 1000, 2*writeback.Window + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := make([]byte, tc.off+tc.size)
			rand.Read(want)
			p := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(p, want[:tc.off], 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Seek(int64(tc.off), 0); err != nil {
				t.Fatal(err)
			}
			n, err := writeback.Copy(f, int64(tc.off), bytes.NewReader(want[tc.off:]))
			if err != nil || n != int64(tc.size) {
				t.Fatalf("Copy = %d, %v; want %d", n, err, tc.size)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("file has %d bytes (%v), want the %d written", len(got), err, len(want))
			}
		})
	}
}

// A Writer on a file that is not a regular file (a pipe: sync_file_range
// fails) writes all the same.
func TestWriterOnAPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, writeback.Window+10)
	rand.Read(want)
	got := make(chan []byte)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		got <- b.Bytes()
	}()
	wr := writeback.New(w, 0)
	for i := 0; i < len(want); i += 1 << 16 {
		if _, err := wr.Write(want[i:min(i+1<<16, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the pipe carried %d bytes, want %d", len(b), len(want))
	}
}
