package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/internal/httpserve"
	"github.com/edgeprov/provisiond/provision"
)

// Server answers the admin API from a Reader (the daemon's own view).
type Server struct {
	r   Reader
	log zerolog.Logger
}

// NewServer returns a Server reading from r.
func NewServer(r Reader, log zerolog.Logger) *Server {
	return &Server{r: r, log: log.With().Str("component", "admin").Logger()}
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, req *http.Request) {
		st, err := s.r.Status(req.Context())
		s.reply(w, st, err)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, req *http.Request) {
		st, err := s.r.Stats(req.Context())
		s.reply(w, st, err)
	})
	mux.HandleFunc("GET /v1/records/{id}", func(w http.ResponseWriter, req *http.Request) {
		rec, err := s.r.Record(req.Context(), req.PathValue("id"))
		s.reply(w, rec, err)
	})
	mux.HandleFunc("GET /v1/records", s.records)
	return mux
}

func (s *Server) records(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	f := Filter{State: provision.State(q.Get("state")), Type: provision.ReservationType(q.Get("type")), User: q.Get("user")}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	err := s.r.Records(req.Context(), f, func(rec *provision.Record) error { return enc.Encode(rec) })
	if err != nil {
		// Headers are gone; a trailing error line tells the client the list is cut.
		s.log.Warn().Err(err).Msg("listing records failed")
		_ = enc.Encode(map[string]string{"error": err.Error()})
	}
	_ = bw.Flush()
}

func (s *Server) reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case errors.Is(err, provision.ErrNotFound), errors.Is(err, ErrNotFound):
		w.WriteHeader(http.StatusNotFound)
		v = map[string]string{"error": err.Error()}
	case err != nil:
		s.log.Warn().Err(err).Msg("admin request failed")
		w.WriteHeader(http.StatusInternalServerError)
		v = map[string]string{"error": err.Error()}
	}
	_ = json.NewEncoder(w).Encode(v)
}

// Listen binds the unix socket at path with mode 0600, replacing a stale
// socket file but never a live daemon's socket or a non-socket file.
func Listen(path string) (net.Listener, error) {
	// The socket itself is 0600. Its directory, made here if missing, is
	// 0711 whatever the umask: searchable, not listable, because the
	// containers' root filesystems may live below it (the default
	// --container-run-dir, /run/provisiond/rootfs), where their user
	// namespaces must reach them.
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o711); err != nil {
			return nil, fmt.Errorf("creating admin socket directory: %w", err)
		}
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, fmt.Errorf("creating admin socket directory: %w", err)
		}
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("securing admin socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve serves the API on ln until ctx ends, then closes ln (removing the
// socket file).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if err := httpserve.Serve(ctx, ln, s.Handler()); err != nil {
		return fmt.Errorf("serving admin socket: %w", err)
	}
	return nil
}

// removeStale removes a socket file nobody listens on; it refuses to touch
// a path that is not a socket, or one a live daemon answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking admin socket %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("admin socket path %s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("admin socket %s: another provisiond is listening", path)
	}
	return os.Remove(path)
}
