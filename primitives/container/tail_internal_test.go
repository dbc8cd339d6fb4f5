package container

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"
)

// TestTail writes a log through the rotator and checks that Tail returns
// exactly the newest n bytes written, across the rotated files, for every
// n from nothing to more than is kept.
func TestTail(t *testing.T) {
	const size, files = 100, 3
	m := &Manager{logsDir: t.TempDir()}
	if _, err := m.Tail("c1", 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Tail of a container without log = %v, want fs.ErrNotExist", err)
	}
	r := &rotator{path: m.LogPath("c1"), maxSize: size, maxFiles: files}
	var all []byte
	for i := range 40 {
		chunk := bytes.Repeat([]byte{byte('a' + i%26)}, i*11%37+1)
		if _, err := r.Write(chunk); err != nil {
			t.Fatal(err)
		}
		all = append(all, chunk...)
	}
	r.Close()
	kept := len(all) % size
	if kept == 0 {
		kept = size
	}
	kept += (files - 1) * size
	for _, n := range []int{0, 1, 5, 99, 100, 101, 150, 250, kept, kept + 1, 10 * kept} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			got, err := m.Tail("c1", n)
			if err != nil {
				t.Fatal(err)
			}
			want := all[len(all)-min(n, kept):]
			if !bytes.Equal(got, want) {
				t.Fatalf("Tail(%d) = %d bytes %.20q…, want %d bytes %.20q…", n, len(got), got, len(want), want)
			}
		})
	}
	// The current file gone (rotated a moment ago): the tail starts from .log.1.
	if err := os.Remove(m.LogPath("c1")); err != nil {
		t.Fatal(err)
	}
	got, err := m.Tail("c1", 10)
	if err != nil || len(got) != 10 {
		t.Fatalf("Tail after the current file went = %q, %v", got, err)
	}
}
