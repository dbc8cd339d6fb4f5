package container

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Container logs. A container's stdout and stderr are a FIFO,
// <bundle>/log.pipe, which the container holds open for reading and
// writing (so a write never fails for want of a reader) and the daemon
// reads, writing what comes into <DataDir>/logs/prv-<id>.log rotated at
// LogMaxSize into .log.1 … .log.<LogMaxFiles-1>: at most LogMaxSize ×
// LogMaxFiles bytes per container. While the daemon is away (a restart)
// the pipe buffers 1 MiB, then the container's writes wait; the daemon
// takes the pipe up again when it next provisions or inspects the
// container.

// Defaults of the log bounds.
const (
	// DefaultLogMaxSize is the size a container's log file is rotated at.
	DefaultLogMaxSize = 10 << 20
	// DefaultLogMaxFiles is how many log files (the current one included)
	// a container keeps.
	DefaultLogMaxFiles = 3
	// pipeSize is the log FIFO's buffer.
	pipeSize = 1 << 20
	logPipe  = "log.pipe"
)

// logPipePath returns the log FIFO of a bundle.
func logPipePath(bundle string) string { return filepath.Join(bundle, logPipe) }

// openLogPipe creates the log FIFO of bundle unless it exists and opens it
// for reading and writing. The container's end blocks; the daemon's is
// non-blocking (nonblock), so that closing it ends a pending read.
func openLogPipe(bundle string, nonblock bool) (*os.File, error) {
	p := logPipePath(bundle)
	if err := unix.Mkfifo(p, 0o600); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating log pipe: %w", err)
	}
	flags := os.O_RDWR | unix.O_CLOEXEC
	if nonblock {
		flags |= unix.O_NONBLOCK
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("opening log pipe: %w", err)
	}
	return f, nil
}

// rotator writes a container's log, rotating it.
type rotator struct {
	path     string
	maxSize  int64
	maxFiles int
	f        *os.File
	size     int64
}

func (r *rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	r.f, r.size = f, st.Size()
	return nil
}

// rotate shifts .log.N-1 to .log.N (dropping the last) and .log to .log.1,
// and opens a new .log.
func (r *rotator) rotate() error {
	if err := r.f.Close(); err != nil {
		return err
	}
	r.f = nil
	if r.maxFiles <= 1 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return r.open()
	}
	for i := r.maxFiles - 1; i >= 1; i-- {
		src := r.path
		if i > 1 {
			src = fmt.Sprintf("%s.%d", r.path, i-1)
		}
		if err := os.Rename(src, fmt.Sprintf("%s.%d", r.path, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return r.open()
}

// Write writes p, rotating whenever the current file would pass maxSize.
func (r *rotator) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if r.f == nil {
			if err := r.open(); err != nil {
				return n, err
			}
		}
		room := r.maxSize - r.size
		if room <= 0 {
			if err := r.rotate(); err != nil {
				return n, err
			}
			continue
		}
		chunk := p[:min(int64(len(p)), room)]
		w, err := r.f.Write(chunk)
		n += w
		r.size += int64(w)
		if err != nil {
			return n, err
		}
		p = p[w:]
	}
	return n, nil
}

func (r *rotator) Close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

// logPump copies one container's log FIFO into its rotated log files.
type logPump struct {
	pipe *os.File
	done chan struct{}
}

// startLog starts copying the log FIFO of container id unless a pump runs
// for it already. A bundle without a FIFO (a container started by a
// release that wrote its log directly) gets none.
func (m *Manager) startLog(id string) error {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if _, ok := m.pumps[id]; ok {
		return nil
	}
	bundle := m.Bundle(id)
	if _, err := os.Stat(logPipePath(bundle)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	pipe, err := openLogPipe(bundle, true)
	if err != nil {
		return err
	}
	if _, err := unix.FcntlInt(pipe.Fd(), unix.F_SETPIPE_SZ, pipeSize); err != nil {
		m.log.Debug().Err(err).Str("container", id).Msg("log pipe keeps its default size")
	}
	if err := os.MkdirAll(m.logsDir, 0o700); err != nil {
		pipe.Close()
		return err
	}
	r := &rotator{path: m.LogPath(id), maxSize: m.logMaxSize, maxFiles: m.logMaxFiles}
	if err := r.open(); err != nil {
		pipe.Close()
		return fmt.Errorf("opening log of container %s: %w", id, err)
	}
	p := &logPump{pipe: pipe, done: make(chan struct{})}
	m.pumps[id] = p
	go func() {
		defer close(p.done)
		buf := make([]byte, 64<<10)
		failing := false // warned about a write error; said once until one succeeds
		for {
			n, err := pipe.Read(buf)
			if n > 0 {
				_, werr := r.Write(buf[:n])
				if werr != nil && !failing {
					m.log.Warn().Err(werr).Str("container", id).Msg("writing container log; dropping what the container writes until it works again")
				}
				failing = werr != nil
			}
			if err != nil {
				if !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
					m.log.Warn().Err(err).Str("container", id).Msg("reading container log pipe")
				}
				break
			}
		}
		if err := r.Close(); err != nil {
			m.log.Warn().Err(err).Str("container", id).Msg("closing container log")
		}
	}()
	return nil
}

// stopLog stops the pump of container id and waits for it. What is still
// in the FIFO stays there for the next pump.
func (m *Manager) stopLog(id string) {
	m.logMu.Lock()
	p, ok := m.pumps[id]
	delete(m.pumps, id)
	m.logMu.Unlock()
	if ok {
		p.pipe.Close()
		<-p.done
	}
}

// Close stops the supervisors and copying the containers' logs. The
// containers keep running; their output waits in their pipes, their exits
// in their bundles, for the next Manager.
func (m *Manager) Close() error {
	m.supMu.Lock()
	m.closed = true
	sups := make([]string, 0, len(m.sups))
	for id := range m.sups {
		sups = append(sups, id)
	}
	m.supMu.Unlock()
	for _, id := range sups {
		m.unsupervise(id)
	}
	m.logMu.Lock()
	ids := make([]string, 0, len(m.pumps))
	for id := range m.pumps {
		ids = append(ids, id)
	}
	m.logMu.Unlock()
	for _, id := range ids {
		m.stopLog(id)
	}
	return nil
}

// removeLogs removes the log files of container id, rotated ones included
// (whatever LogMaxFiles was when they were written).
func (m *Manager) removeLogs(id string) error {
	entries, err := os.ReadDir(m.logsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	base := Name(id) + ".log"
	var errs []error
	for _, e := range entries {
		n := e.Name()
		if n != base && !strings.HasPrefix(n, base+".") {
			continue
		}
		if err := os.Remove(filepath.Join(m.logsDir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// maxRotated bounds how many rotated log files Tail looks through.
const maxRotated = 100

// Tail returns the last n bytes (at most) container id wrote to its log,
// across its rotated files (.log.N … .log.1, then .log), oldest byte
// first. A container that has no log file fails with an error wrapping
// fs.ErrNotExist. It reads at most n bytes, whatever the files' sizes; a
// rotation during the read may cut or repeat a few bytes at a file's
// edge.
func (m *Manager) Tail(id string, n int) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	base := m.LogPath(id)
	var parts [][]byte // newest first
	have, found := 0, false
	for i := 0; i <= maxRotated && have < n; i++ {
		p := base
		if i > 0 {
			p = fmt.Sprintf("%s.%d", base, i)
		}
		b, err := readLast(p, n-have)
		if errors.Is(err, fs.ErrNotExist) {
			if i == 0 {
				continue // rotated a moment ago, or never written: look at .log.1
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading log of container %s: %w", id, err)
		}
		found = true
		parts = append(parts, b)
		have += len(b)
	}
	if !found {
		return nil, fmt.Errorf("container %s has no log: %w", id, fs.ErrNotExist)
	}
	out := make([]byte, 0, have)
	for i := len(parts) - 1; i >= 0; i-- {
		out = append(out, parts[i]...)
	}
	return out, nil
}

// readLast returns the last n bytes of the file at path (all of it when
// shorter).
func readLast(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-int64(n), 0)
	buf := make([]byte, st.Size()-off)
	k, err := f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf[:k], nil
}
