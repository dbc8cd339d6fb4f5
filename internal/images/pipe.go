package images

import (
	"io"
	"sync"
)

const (
	// pipeChunks is how many chunks a pipe holds before its writer waits.
	pipeChunks = 8
	// pipeChunk is the size of a chunk: a download's read.
	pipeChunk = 1 << 20
)

// pipe is io.Pipe with a bounded buffer: a write is copied into chunks
// and queued, so the download (reading the network, writing and hashing
// the blob) and the unpacker (decompressing, hashing, writing files) run
// at the same time instead of taking turns at each write. The chunks are
// reused (fresh memory for every write costs page faults as much as the
// copy). Like io.Pipe, the reader's Close stops the writer, and the
// writer's Close ends the reader once it took what was queued.
type pipe struct {
	ch   chan []byte   // full chunks, in order
	free chan []byte   // chunks the reader is done with
	done chan struct{} // closed by closeRead
	once sync.Once
	rerr error // what writes return once done is closed
	werr error // what reads return once ch is drained, set before ch is closed
	cur  []byte
	buf  []byte // the chunk cur is in
}

func newPipe() *pipe {
	p := &pipe{ch: make(chan []byte, pipeChunks), free: make(chan []byte, pipeChunks+1), done: make(chan struct{})}
	for range pipeChunks + 1 {
		p.free <- nil // allocated when first used
	}
	return p
}

// Write queues a copy of b; it waits while every chunk is queued, and
// fails once the reader closed.
func (p *pipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		var c []byte
		select {
		case c = <-p.free:
		case <-p.done:
			return n, p.rerr
		}
		if c == nil {
			c = make([]byte, pipeChunk)
		}
		k := copy(c[:cap(c)], b)
		select {
		case <-p.done:
			return n, p.rerr
		default:
		}
		select {
		case p.ch <- c[:k]:
		case <-p.done:
			return n, p.rerr
		}
		n += k
		b = b[k:]
	}
	return n, nil
}

// closeWrite ends the stream: reads return err (io.EOF when nil) once
// the queued writes are read. It is called once, after the last Write.
func (p *pipe) closeWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.werr = err
	close(p.ch)
}

// Read reads what was written, in order.
func (p *pipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.buf != nil {
			p.free <- p.buf
			p.buf = nil
		}
		c, ok := <-p.ch
		if !ok {
			return 0, p.werr
		}
		p.cur, p.buf = c, c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// closeRead makes the writes from now on (and one waiting) fail with err.
func (p *pipe) closeRead(err error) {
	p.once.Do(func() {
		if err == nil {
			err = io.ErrClosedPipe
		}
		p.rerr = err
		close(p.done)
	})
}
