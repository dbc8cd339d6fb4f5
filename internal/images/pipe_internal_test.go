package images

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestPipeCarriesEverythingInOrder(t *testing.T) {
	p := newPipe()
	var want bytes.Buffer
	go func() {
		buf := make([]byte, 1000)
		for i := range 3 * pipeChunks {
			for j := range buf {
				buf[j] = byte(i + j) // the writer reuses buf: the pipe copies
			}
			p.Write(buf)
		}
		p.closeWrite(nil)
	}()
	for i := range 3 * pipeChunks {
		for j := range 1000 {
			want.WriteByte(byte(i + j))
		}
	}
	got, err := io.ReadAll(p)
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("read %d bytes (%v), want the %d written", len(got), err, want.Len())
	}
}

func TestPipeErrors(t *testing.T) {
	errDown := errors.New("download failed")
	p := newPipe()
	p.Write([]byte("abc"))
	p.closeWrite(errDown)
	if got, err := io.ReadAll(p); string(got) != "abc" || !errors.Is(err, errDown) {
		t.Fatalf("ReadAll = %q, %v; want what was queued, then the writer's error", got, err)
	}

	// The reader's close stops a writer waiting on a full pipe.
	errStop := errors.New("too large")
	p = newPipe()
	for range pipeChunks {
		p.Write([]byte("x"))
	}
	wrote := make(chan error)
	go func() {
		_, err := p.Write([]byte("waits"))
		wrote <- err
	}()
	p.closeRead(errStop)
	if err := <-wrote; !errors.Is(err, errStop) {
		t.Fatalf("waiting Write = %v, want the reader's error", err)
	}
	if _, err := p.Write([]byte("later")); !errors.Is(err, errStop) {
		t.Fatalf("Write after closeRead = %v", err)
	}
}
