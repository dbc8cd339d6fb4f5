// Package explorertest runs the real explorer (explorer/server) on
// 127.0.0.1 for tests, with its database in a temporary directory, and
// offers helpers to act as a user or a node against it.
//
//	xs := explorertest.New(t)
//	node := explorertest.NewKey(t)
//	nc := xs.RegisterNode(t, node)                  // *explorer.Client of the node
//	user := explorertest.NewKey(t)
//	id := xs.Reserve(t, user, explorertest.Volume(explorertest.NodeID(node), 1))
//	xs.Restart()                                    // same URL, same database
package explorertest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/server"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// Server is a running explorer whose data survives Restart.
type Server struct {
	t    testing.TB
	cfg  server.Config
	srv  *server.Server
	hs   *httptest.Server
	addr string
	tls  *tls.Config // nil: plain HTTP
}

// New starts an explorer on 127.0.0.1 with a database in t.TempDir()
// (without fsync: tests need no durability against power loss); it is
// closed when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	return NewWithConfig(t, server.Config{NoSync: true})
}

// NewWithConfig is New with a server configuration, used as given except
// that an empty DataDir becomes t.TempDir().
func NewWithConfig(t testing.TB, cfg server.Config) *Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	s := &Server{t: t, cfg: cfg}
	s.start("127.0.0.1:0")
	t.Cleanup(s.Close)
	return s
}

// NewTLS is New serving HTTPS with cfg (its certificates; the clients
// must trust them): URL returns an https URL. TLS handshake errors (a
// client that refuses the certificate) are not logged.
func NewTLS(t testing.TB, cfg *tls.Config) *Server {
	t.Helper()
	s := &Server{t: t, cfg: server.Config{DataDir: t.TempDir(), NoSync: true}, tls: cfg}
	s.start("127.0.0.1:0")
	t.Cleanup(s.Close)
	return s
}

func (s *Server) start(addr string) {
	s.t.Helper()
	srv, err := server.New(s.cfg)
	if err != nil {
		s.t.Fatalf("explorertest: starting the explorer: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		srv.Close()
		s.t.Fatalf("explorertest: listening on %s: %v", addr, err)
	}
	s.srv, s.addr = srv, ln.Addr().String()
	s.hs = httptest.NewUnstartedServer(srv)
	s.hs.Listener.Close()
	s.hs.Listener = ln
	if s.tls != nil {
		s.hs.Listener = tls.NewListener(ln, s.tls)
		s.hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	}
	s.hs.Start()
}

// URL returns the explorer's base URL (http://127.0.0.1:port, https with
// NewTLS); it stays the same across Restart.
func (s *Server) URL() string {
	if s.tls != nil {
		return "https://" + s.addr
	}
	return "http://" + s.addr
}

// Explorer returns the running server (for InjectEvent and Waiting).
func (s *Server) Explorer() *server.Server { return s.srv }

// Close stops the explorer: held long-polls are released, then the
// database is closed. Closing twice is harmless.
func (s *Server) Close() {
	if s.hs == nil {
		return
	}
	s.srv.Release()
	s.hs.CloseClientConnections()
	s.hs.Close()
	if err := s.srv.Close(); err != nil {
		s.t.Errorf("explorertest: closing the explorer: %v", err)
	}
	s.hs = nil
}

// Restart stops the explorer and starts a new one on the same address with
// the same database: what an explorerd restart does to its clients.
func (s *Server) Restart() {
	s.t.Helper()
	s.Close()
	s.start(s.addr)
}

// NewKey returns a fresh ed25519 key.
func NewKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("explorertest: generating key: %v", err)
	}
	return key
}

// NodeID returns the node ID of key.
func NodeID(key ed25519.PrivateKey) string {
	return identity.NodeID(key.Public().(ed25519.PublicKey))
}

// UserID returns the user ID of key.
func UserID(key ed25519.PrivateKey) string {
	return identity.UserID(key.Public().(ed25519.PublicKey))
}

// ClientOptions returns options fit for tests: no rate limits, quick
// backoff, short poll waits.
func ClientOptions() explorer.ClientOptions {
	return explorer.ClientOptions{
		PollWait:   5 * time.Second,
		Timeout:    10 * time.Second,
		ReadLimit:  rate.Inf,
		WriteLimit: rate.Inf,
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		Logger:     zerolog.Nop(),
	}
}

// NodeClient returns a client of the node key with ClientOptions.
func (s *Server) NodeClient(key ed25519.PrivateKey) *explorer.Client {
	return explorer.NewClient(s.URL(), key, ClientOptions())
}

// UserClient returns a client of the user key with ClientOptions.
func (s *Server) UserClient(key ed25519.PrivateKey) *explorer.Client {
	return explorer.NewUserClient(s.URL(), key, ClientOptions())
}

// RegisterNode registers the node key and returns its client.
func (s *Server) RegisterNode(t testing.TB, key ed25519.PrivateKey) *explorer.Client {
	t.Helper()
	c := s.NodeClient(key)
	if err := c.Register(t.Context()); err != nil {
		t.Fatalf("explorertest: registering node: %v", err)
	}
	return c
}

// Volume returns an unsigned reservation of a size-GiB SSD volume on node,
// created now, for an hour.
func Volume(node string, size int64) *provision.Reservation {
	data, _ := json.Marshal(provision.Volume{Size: size, Type: provision.SSD})
	return &provision.Reservation{
		NodeID:   node,
		Type:     provision.VolumeReservation,
		Data:     data,
		Created:  time.Now().UTC().Truncate(time.Second),
		Duration: time.Hour,
	}
}

// Reserve signs r with the user key, submits it and returns its ID.
func (s *Server) Reserve(t testing.TB, user ed25519.PrivateKey, r *provision.Reservation) string {
	t.Helper()
	r.Sign(user)
	id, err := s.UserClient(user).CreateReservation(t.Context(), r)
	if err != nil {
		t.Fatalf("explorertest: creating reservation: %v", err)
	}
	return id
}

// Delete signs and submits the owner's delete of reservation id.
func (s *Server) Delete(t testing.TB, user ed25519.PrivateKey, id string) {
	t.Helper()
	if _, err := s.UserClient(user).DeleteReservation(t.Context(), id); err != nil {
		t.Fatalf("explorertest: deleting reservation %s: %v", id, err)
	}
}

// Reservation returns reservation id with its latest result.
func (s *Server) Reservation(t testing.TB, id string) *provision.Reservation {
	t.Helper()
	r, err := s.UserClient(NewKey(t)).GetReservation(t.Context(), id)
	if err != nil {
		t.Fatalf("explorertest: reading reservation %s: %v", id, err)
	}
	return r
}

// Inject publishes raw as the reservation of a new event for node, with no
// check at all: for tests of a node facing what it cannot decode.
func (s *Server) Inject(t testing.TB, node string, raw string) uint64 {
	t.Helper()
	seq, err := s.srv.InjectEvent(node, json.RawMessage(raw))
	if err != nil {
		t.Fatalf("explorertest: injecting event: %v", err)
	}
	return seq
}

// Follower checks a node's event stream poll by poll: every event follows
// the one before (no hole), no reservation comes twice, and a poll's next
// cursor is its last event.
type Follower struct {
	// Cursor is the last event taken: poll from it.
	Cursor uint64
	// Seen holds the event of each reservation taken.
	Seen map[string]uint64
}

// Take checks the events and next cursor of one poll from f.Cursor,
// failing the test at the first break of the rules, and returns how many
// events it took.
func (f *Follower) Take(t testing.TB, evs []provision.Event, next uint64) int {
	t.Helper()
	if f.Seen == nil {
		f.Seen = map[string]uint64{}
	}
	for _, ev := range evs {
		if ev.Seq != f.Cursor+1 {
			t.Fatalf("event %d after %d: a hole", ev.Seq, f.Cursor)
		}
		if at, dup := f.Seen[ev.Reservation.ID]; dup {
			t.Fatalf("reservation %s delivered at %d and %d", ev.Reservation.ID, at, ev.Seq)
		}
		f.Seen[ev.Reservation.ID] = ev.Seq
		f.Cursor = ev.Seq
	}
	if next != f.Cursor {
		t.Fatalf("next %d, cursor %d", next, f.Cursor)
	}
	return len(evs)
}

// Follow calls poll (one poll whose events Take took: their count, or -1
// on an error) for d, pausing 50 ms after an error.
func (f *Follower) Follow(d time.Duration, poll func() int) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		if poll() < 0 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Drain calls poll (see Follow) until a poll finds nothing, pausing
// 100 ms after an error.
func (f *Follower) Drain(poll func() int) {
	for n := poll(); n != 0; n = poll() {
		if n < 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// CheckDelivered fails the test for each reservation of accepted that was
// never taken.
func (f *Follower) CheckDelivered(t testing.TB, accepted map[string]bool) {
	t.Helper()
	for id := range accepted {
		if _, ok := f.Seen[id]; !ok {
			t.Errorf("accepted reservation %s was never delivered", id)
		}
	}
}
