package container

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestRotator writes through the rotator in uneven chunks and checks the
// files: none larger than maxSize, at most maxFiles, and together the
// newest bytes written, in order.
func TestRotator(t *testing.T) {
	for _, files := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(files, "-files"), func(t *testing.T) {
			const size = 100
			p := filepath.Join(t.TempDir(), "c.log")
			r := &rotator{path: p, maxSize: size, maxFiles: files}
			var all []byte
			for i := range 60 {
				chunk := bytes.Repeat([]byte{byte('a' + i%26)}, i*7%53+1)
				n, err := r.Write(chunk)
				if err != nil || n != len(chunk) {
					t.Fatalf("Write = %d, %v", n, err)
				}
				all = append(all, chunk...)
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			var kept []byte
			for i := files - 1; i >= 0; i-- {
				name := p
				if i > 0 {
					name = fmt.Sprintf("%s.%d", p, i)
				}
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				if len(b) > size || (i > 0 && len(b) != size) {
					t.Fatalf("%s: %d bytes", name, len(b))
				}
				kept = append(kept, b...)
			}
			if _, err := os.Stat(fmt.Sprintf("%s.%d", p, files)); !os.IsNotExist(err) {
				t.Fatalf("a file beyond %d kept: %v", files, err)
			}
			if !bytes.HasSuffix(all, kept) {
				t.Fatalf("kept bytes are not the newest ones written")
			}
			// Reopening appends to the current file, keeping its size.
			r2 := &rotator{path: p, maxSize: size, maxFiles: files}
			if _, err := r2.Write(bytes.Repeat([]byte("z"), size)); err != nil {
				t.Fatal(err)
			}
			r2.Close()
			if b, _ := os.ReadFile(p); len(b) > size {
				t.Fatalf("after reopening, %d bytes", len(b))
			}
		})
	}
}
