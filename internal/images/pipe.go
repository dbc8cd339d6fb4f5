package images

import (
	"io"
	"sync"
)

// pipeChunks is how many writes a pipe holds before its writer waits
// (each at most a download's 1 MiB buffer).
const pipeChunks = 8

// pipe is io.Pipe with a bounded buffer: a write is copied and queued,
// so the download (reading the network, writing and hashing the blob)
// and the unpacker (decompressing, hashing, writing files) run at the
// same time instead of taking turns at each write. Like io.Pipe, the
// reader's Close stops the writer, and the writer's Close ends the
// reader once it took what was queued.
type pipe struct {
	ch   chan []byte
	done chan struct{} // closed by closeRead
	once sync.Once
	rerr error // what writes return once done is closed
	werr error // what reads return once ch is drained, set before ch is closed
	cur  []byte
}

func newPipe() *pipe {
	return &pipe{ch: make(chan []byte, pipeChunks), done: make(chan struct{})}
}

// Write queues a copy of b; it waits while the pipe is full, and fails
// once the reader closed.
func (p *pipe) Write(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	select {
	case <-p.done:
		return 0, p.rerr
	default:
	}
	select {
	case p.ch <- append([]byte(nil), b...):
		return len(b), nil
	case <-p.done:
		return 0, p.rerr
	}
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
		c, ok := <-p.ch
		if !ok {
			return 0, p.werr
		}
		p.cur = c
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
