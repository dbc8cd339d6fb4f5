// Package writeback starts the kernel's writeback of a file while the
// file is being written, so that the fsync (or syncfs) that makes it
// durable at the end finds little left to write: the disk works while
// the network or the decompressor produces the next bytes, rather than
// all at once after them. Databases do the same (RocksDB's
// bytes_per_sync).
package writeback

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Window is how many bytes are written before their writeback starts.
const Window = 4 << 20

// Writer writes to a file and starts the writeback of every Window bytes
// it wrote, with sync_file_range(SYNC_FILE_RANGE_WRITE): that does not
// wait for the disk and promises nothing (the final fsync does). On a
// file system without sync_file_range the file is written all the same.
type Writer struct {
	f       *os.File
	off     int64 // the file offset after the last write
	started int64 // where the next writeback starts
	failed  bool  // sync_file_range failed: not asked again
}

// New returns a Writer to f, whose offset is off.
func New(f *os.File, off int64) *Writer { return &Writer{f: f, off: off, started: off} }

// Write writes p to the file.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.off += int64(n)
	if !w.failed && w.off-w.started >= Window {
		if unix.SyncFileRange(int(w.f.Fd()), w.started, w.off-w.started, unix.SYNC_FILE_RANGE_WRITE) != nil {
			w.failed = true
		}
		w.started = w.off
	}
	return n, err
}

// Copy copies r to f, whose offset is off, through a Writer, in 1 MiB
// reads and writes.
func Copy(f *os.File, off int64, r io.Reader) (int64, error) {
	return io.CopyBuffer(New(f, off), r, make([]byte, 1<<20))
}
