package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/explorer/ui"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
)

// Errors of the server package. Each maps to one HTTP status (see statusOf).
var (
	ErrSchema      = errors.New("server: unknown database schema")
	ErrUnknownNode = errors.New("server: unknown node")
	ErrNotFound    = errors.New("server: not found")
	ErrDuplicate   = errors.New("server: duplicate")
	ErrReplay      = errors.New("server: replayed request")
	ErrBusy        = errors.New("server: too many requests in flight")
	ErrForbidden   = errors.New("server: forbidden")
	ErrBadRequest  = errors.New("server: bad request")
	ErrConflict    = errors.New("server: conflict")
	ErrTooLarge    = errors.New("server: request body too large")
	ErrGone        = errors.New("server: cursor below the retained events")
	// ErrTooManyWaits refuses a long-poll of a user who holds MaxWatches.
	ErrTooManyWaits = errors.New("server: too many long-polls held by this key")
	ErrQuota        = errors.New("server: quota exceeded")
	ErrTooMany      = errors.New("server: too many requests")
	ErrTimeout      = errors.New("server: request body timed out")
	// ErrNotRegistered refuses a node endpoint of a node that never
	// registered (403, code explorer.CodeNotRegistered); it wraps
	// ErrForbidden.
	ErrNotRegistered = fmt.Errorf("%w: node not registered", ErrForbidden)
)

// Config configures a Server.
type Config struct {
	// DataDir holds the database explorer.db (required unless Store is set).
	DataDir string
	// Store, when set, is the database instead of DataDir/explorer.db (for
	// example a pgstore.Store); the server closes it in Close (default nil).
	Store Store
	// EventRetention is how long a store that prunes (a Pruner) keeps
	// events; a node whose cursor fell below them reconciles from
	// GET /api/v1/nodes/{node}/state (default 30 days).
	EventRetention time.Duration
	// PruneInterval is how often the server asks a Pruner to prune
	// (default 1 minute).
	PruneInterval time.Duration
	// ReservationRetention is how long the explorer keeps a reservation
	// (and its result) after it expired, for its owner's history; the
	// expiry job then deletes it (Store.Expire). An expired reservation is
	// no longer Active: the node's state snapshot leaves it out (default
	// 30 days).
	ReservationRetention time.Duration
	// ExpireInterval is how often the expiry job runs (default 10 minutes).
	ExpireInterval time.Duration
	// Logger receives the server's logs (default: none).
	Logger zerolog.Logger
	// Now is the clock request timestamps are checked against (default time.Now).
	Now func() time.Time
	// MaxSkew is how far a request timestamp may lie from Now (default explorer.MaxSkew).
	MaxSkew time.Duration
	// MaxWait caps the wait of a long-poll (default explorer.MaxWait).
	MaxWait time.Duration
	// PageLimit is the most events one poll returns (default explorer.PageLimit).
	PageLimit int
	// MaxReplay bounds the remembered request signatures; when full, requests
	// are refused with 503 until old ones go stale (default 262144). Each
	// key and each address has a share of its own (Limits).
	MaxReplay int
	// Limits bound what one caller may make the explorer do (see Limits
	// for each default).
	Limits Limits
	// ShutdownTimeout bounds the graceful shutdown of Serve (default 10s).
	ShutdownTimeout time.Duration
	// NoSync skips fsync on commit: for tests and benchmarks only (default false).
	NoSync bool
	// DownAfter is the status rule of GET /api/v1/nodes: a node whose last
	// request is older than this is down (default DefaultDownAfter, 3m).
	DownAfter time.Duration
	// SeenFlush is how often the times nodes were last seen are stored,
	// in one transaction (default DefaultSeenFlush, 15s); between flushes
	// they are in memory, and another explorerd on the same database sees
	// them up to this late.
	SeenFlush time.Duration
	// MaxWatches bounds the long-polls on reservations and lists one key
	// may hold at once; one more is refused with 429 (default 8).
	MaxWatches int
	// MaxWatchesTotal bounds those long-polls of all keys together; one
	// more is refused with 429 (default 4096).
	MaxWatchesTotal int
	// OnWatch, when set, is called each time a user's long-poll starts
	// waiting on topic (tests synchronise on it; default none).
	OnWatch func(topic string)
	// NoUI turns off the read-only pages at /ui/ (default false: served).
	NoUI bool
	// UI configures the pages' rate limits (defaults: see ui.Options).
	UI ui.Options
	// OnHold, when set, is called each time a long-poll of a node starts
	// waiting for an event (tests synchronise on it; default none).
	OnHold func(node string)
}

// Server is the reference explorer. It is an http.Handler; Serve runs it on
// a listener with a graceful shutdown.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	db      Store      // the database, timed (metrics)
	fleet   FleetStore // its heartbeats and logs (nil: not kept)
	metrics *metrics
	mux     *http.ServeMux
	replay  *replaySet
	hub     *hub
	lim     Limits

	keyRate  *keyed   // requests per key
	addrRate *keyed   // requests per remote address
	regRate  *keyed   // new node registrations per remote address
	bodyRate *keyed   // request body bytes per remote address
	polls    *counter // long-polls held per node
	bodies   *counter // request body bytes held per remote address

	known sync.Map // node ID → struct{}: registered nodes seen since start

	stopJobs context.CancelFunc // stops the listener and the pruner
	jobs     sync.WaitGroup

	seenMu sync.Mutex
	seen   map[string]time.Time // node ID → last request
	dirty  map[string]time.Time // node ID → last request not yet stored (seenLoop)

	watchMu  sync.Mutex
	watches  map[string]int // key ID → users' long-polls held
	watching int            // their sum

	deliveredMu sync.Mutex
	deliveredTo map[string]uint64 // node ID → highest cursor recorded delivered

	closeOnce sync.Once
	closing   chan struct{}

	lastRefused atomic.Int64 // unix second of the last refused-connection log
}

var _ http.Handler = (*Server)(nil)

// New opens (or creates) the database in cfg.DataDir, or takes cfg.Store,
// and returns the server. A store that is a Notifier gets its listener
// started, a Pruner its periodic pruning; Close stops both.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" && cfg.Store == nil {
		return nil, fmt.Errorf("%w: no data directory", ErrBadRequest)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = explorer.MaxSkew
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = explorer.MaxWait
	}
	if cfg.PageLimit <= 0 {
		cfg.PageLimit = explorer.PageLimit
	}
	if cfg.MaxReplay <= 0 {
		cfg.MaxReplay = 1 << 18
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.EventRetention <= 0 {
		cfg.EventRetention = 30 * 24 * time.Hour
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = time.Minute
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	if cfg.SeenFlush <= 0 {
		cfg.SeenFlush = DefaultSeenFlush
	}
	if cfg.MaxWatches <= 0 {
		cfg.MaxWatches = 8
	}
	if cfg.MaxWatchesTotal <= 0 {
		cfg.MaxWatchesTotal = 4096
	}
	if cfg.ReservationRetention <= 0 {
		cfg.ReservationRetention = 30 * 24 * time.Hour
	}
	if cfg.ExpireInterval <= 0 {
		cfg.ExpireInterval = 10 * time.Minute
	}
	db := cfg.Store
	if db == nil {
		bs, err := OpenBolt(cfg.DataDir, cfg.NoSync)
		if err != nil {
			return nil, err
		}
		db = bs
	}
	m := newMetrics()
	lim := cfg.Limits.withDefaults()
	cfg.Limits = lim
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger.With().Str("component", "explorer").Logger(),
		db:      &timedStore{Store: db, m: m},
		metrics: m,
		mux:     http.NewServeMux(),
		replay:  newReplaySet(cfg.MaxSkew, cfg.MaxReplay, lim.MaxReplayPerKey, lim.MaxReplayPerAddr),
		hub:     newHub(),
		lim:     lim,
		polls:   newCounter(int64(lim.MaxPollsPerNode), 0),
		bodies:  newCounter(lim.MaxBodyBytesPerAddr, lim.MaxBodyBytes),
		seen:    map[string]time.Time{},
		dirty:   map[string]time.Time{},
		closing: make(chan struct{}),

		watches:     map[string]int{},
		deliveredTo: map[string]uint64{},
	}
	if !lim.Off {
		s.keyRate = newKeyed(lim.KeyRate, lim.KeyBurst, lim.Tracked)
		s.addrRate = newKeyed(lim.AddrRate, lim.AddrBurst, lim.Tracked)
		s.regRate = newKeyed(lim.RegisterRate, lim.RegisterBurst, lim.Tracked)
		s.bodyRate = newKeyed(lim.AddrBodyRate, max(lim.AddrBodyBurst, explorer.MaxBatchBodySize), lim.Tracked)
	}
	s.fleet, _ = db.(FleetStore)
	s.routes()
	s.startJobs(db)
	return s, nil
}

// startJobs starts the store's listener (a Notifier) and the periodic
// pruning (a Pruner), owned by the server until Close.
func (s *Server) startJobs(db Store) {
	ctx, cancel := context.WithCancel(context.Background())
	s.stopJobs = cancel
	if n, ok := db.(Notifier); ok {
		s.jobs.Go(func() { n.Listen(ctx, s.hub.publish, s.hub.publishAll) })
	}
	if p, ok := db.(Pruner); ok {
		s.jobs.Go(func() { s.pruneLoop(ctx, p) })
	}
	s.jobs.Go(func() { s.seenLoop(ctx) })
	s.jobs.Go(func() { s.expireLoop(ctx) })
	s.jobs.Go(func() { s.logsExpireLoop(ctx) })
}

// expireLoop deletes the reservations that expired more than
// ReservationRetention ago, at once and then every ExpireInterval. With
// replicas, the store lets one at a time do it.
func (s *Server) expireLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ExpireInterval)
	defer t.Stop()
	for {
		n, err := s.db.Expire(ctx, s.cfg.Now().Add(-s.cfg.ReservationRetention))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn().Err(err).Msg("deleting expired reservations failed")
		case n > 0:
			s.log.Info().Int64("reservations", n).Msg("expired reservations deleted")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneLoop asks p to prune the events older than EventRetention at once
// and then every PruneInterval.
func (s *Server) pruneLoop(ctx context.Context, p Pruner) {
	t := time.NewTicker(s.cfg.PruneInterval)
	defer t.Stop()
	for {
		n, err := p.Prune(ctx, s.cfg.Now().Add(-s.cfg.EventRetention))
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn().Err(err).Msg("pruning events failed")
		case n > 0:
			s.log.Info().Int64("events", n).Msg("old events pruned")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// role says who may send a request.
type role int

const (
	roleAny  role = iota // any valid signature (users, nodes)
	roleNode             // the node named by {node}, registered
)

// call is a request whose signature verified.
type call struct {
	signed *explorer.Signed
	body   []byte
	held   int64  // body memory held until the request ends
	addr   string // the remote address's rate-limit identity
}

type handlerFunc func(w http.ResponseWriter, r *http.Request, c *call) error

func (s *Server) routes() {
	s.handle("POST /api/v1/nodes", roleAny, s.register)
	s.handle("GET /api/v1/nodes", roleAny, s.listNodes)
	s.handle("GET /api/v1/nodes/{node}", roleAny, s.getNode)
	s.handle("PUT /api/v1/nodes/{node}/capacity", roleNode, s.putCapacity)
	s.handle("PUT /api/v1/nodes/{node}/stats", roleNode, s.putStats)
	s.handle("GET /api/v1/nodes/{node}/events", roleNode, s.events)
	s.handle("GET /api/v1/nodes/{node}/state", roleNode, s.state)
	s.handle("PUT /api/v1/nodes/{node}/results/{id}", roleNode, s.putResult)
	s.handleBody("POST /api/v1/nodes/{node}/results", roleNode, explorer.MaxBatchBodySize, s.postResults)
	s.handle("POST /api/v1/reservations", roleAny, s.createReservation)
	s.handle("GET /api/v1/reservations", roleAny, s.listReservations)
	s.handle("GET /api/v1/reservations/{id}", roleAny, s.getReservation)
	s.handle("POST /api/v1/reservations/{id}/delete", roleAny, s.deleteReservation)
	s.handle("PUT /api/v1/reservations/{id}", roleAny, s.updateReservation)
	s.fleetRoutes()
	if !s.cfg.NoUI {
		opts := s.cfg.UI
		opts.Logger = s.log
		s.mux.Handle("GET /ui/", ui.New(uiSource{s}, opts))
		s.mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
}

// ServeHTTP serves the Explorer API v1. Every answer must be written
// within BodyTimeout and WriteTimeout of the request's start (a long-poll:
// of its hold's end); a deadline a handler set for an earlier request of
// the connection does not carry over.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(s.lim.BodyTimeout + s.lim.WriteTimeout))
	s.metrics.observe(s.mux, w, r)
}

// handle routes pattern to h, for callers of role who, with bodies of up
// to explorer.MaxBodySize.
func (s *Server) handle(pattern string, who role, h handlerFunc) {
	s.handleBody(pattern, who, explorer.MaxBodySize, h)
}

// handleBody is handle with a body limit of maxBody bytes.
func (s *Server) handleBody(pattern string, who role, maxBody int64, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		addr := addrOf(r)
		c, err := s.authenticate(w, r, who, addr, maxBody)
		if err == nil {
			defer s.bodies.release(addr, c.held)
			err = h(w, r, c)
		} else if r.ContentLength != 0 {
			// Refused before or while its body was read: net/http would
			// read what is left of it before answering, as slowly as it
			// comes. Not a byte more: the connection ends with the answer.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			w.Header().Set("Connection", "close")
		}
		if err != nil {
			s.fail(w, r, err)
		}
	})
}

// authenticate admits a request, cheapest checks first, so that what a
// stranger sends costs little before it is known to be signed: the
// address's rate; the signature headers' shape and timestamp, and the
// key's rate, before a byte of the body is read; the body, read within
// BodyTimeout and a share of the body memory; the signature; a token of
// the key; the replay set. For node requests it then checks that the
// signer is the registered node of the path.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, who role, addr string, maxBody int64) (*call, error) {
	now := s.cfg.Now()
	if d := s.addrRate.take(addr, now); d > 0 {
		return nil, tooMany(d, "address %s sends more than %g requests a second", addr, s.lim.AddrRate)
	}
	hd, err := explorer.CheckHeaders(r.Header, now, s.cfg.MaxSkew)
	if err != nil {
		return nil, err
	}
	key := hex.EncodeToString(hd.Key)
	if d := s.keyRate.check(key, now); d > 0 {
		return nil, tooMany(d, "key %s sends more than %g requests a second", hd.KeyID, s.lim.KeyRate)
	}
	body, held, err := s.readBody(w, r, addr, maxBody)
	if err != nil {
		return nil, err
	}
	c := &call{body: body, held: held}
	defer func() {
		if c.signed == nil {
			s.bodies.release(addr, held)
		}
	}()
	signed, err := hd.Verify(r.Method, r.URL.RequestURI(), body)
	if err != nil {
		return nil, err
	}
	now = s.cfg.Now()
	if d := s.keyRate.take(key, now); d > 0 {
		return nil, tooMany(d, "key %s sends more than %g requests a second", hd.KeyID, s.lim.KeyRate)
	}
	sig, _ := hex.DecodeString(signed.Signature) // hex made by Verify
	if err := s.replay.add(key, addr, sig, now); err != nil {
		return nil, err
	}
	if who == roleNode {
		node := r.PathValue("node")
		pub, err := identity.PublicKey(node)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		if !pub.Equal(signed.Key) {
			return nil, fmt.Errorf("%w: request signed by %s, not by node %s", ErrForbidden, signed.KeyID, node)
		}
		if err := s.registered(r.Context(), node); err != nil {
			return nil, err
		}
		s.touch(node, now)
	}
	c.signed, c.addr = signed, addr
	return c, nil
}

// readBody reads the body of r, at most maxBody bytes, within BodyTimeout
// and a share of the memory for bodies (held bytes, which the caller
// releases), then sets the write deadline of the answer.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, addr string, maxBody int64) ([]byte, int64, error) {
	if r.ContentLength > maxBody {
		return nil, 0, fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, r.ContentLength, maxBody)
	}
	held := maxBody // a body of unknown length may use it all
	if r.ContentLength >= 0 {
		held = r.ContentLength
	}
	if d := s.bodyRate.takeN(addr, s.cfg.Now(), int(held)); d > 0 {
		return nil, 0, tooMany(d, "address %s sends more than %g body bytes a second", addr, s.lim.AddrBodyRate)
	}
	if held > 0 && !s.bodies.acquire(addr, held) {
		return nil, 0, &retryError{err: fmt.Errorf("%w: request bodies of %s or of everyone fill their memory", ErrBusy, addr), after: time.Second}
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.lim.BodyTimeout)) // not every ResponseWriter has one
	buf := bytes.NewBuffer(make([]byte, 0, min(held, maxBody)+1))
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, maxBody))
	body := buf.Bytes()
	_ = rc.SetWriteDeadline(time.Now().Add(s.lim.WriteTimeout))
	if err != nil {
		// The read deadline stays: net/http reads what is left of a body
		// before it answers, and must not wait for it. The connection
		// ends with the answer.
		w.Header().Set("Connection", "close")
		s.bodies.release(addr, held)
		var tooLarge *http.MaxBytesError
		var ne net.Error
		switch {
		case errors.As(err, &tooLarge):
			return nil, 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, maxBody)
		case errors.As(err, &ne) && ne.Timeout():
			return nil, 0, fmt.Errorf("%w: the body did not arrive within %s", ErrTimeout, s.lim.BodyTimeout)
		}
		return nil, 0, fmt.Errorf("%w: reading body: %v", ErrBadRequest, err)
	}
	_ = rc.SetReadDeadline(time.Time{}) // the connection's reads after the body: its own affair
	return body, held, nil
}

func (s *Server) registered(ctx context.Context, node string) error {
	if _, ok := s.known.Load(node); ok {
		return nil
	}
	if _, _, err := s.db.Node(ctx, node); err != nil {
		if errors.Is(err, ErrUnknownNode) {
			return fmt.Errorf("%w: node %s is not registered (POST /api/v1/nodes first)", ErrNotRegistered, node)
		}
		return err
	}
	s.known.Store(node, struct{}{})
	return nil
}

func (s *Server) touch(node string, now time.Time) {
	s.seenMu.Lock()
	s.seen[node] = now.UTC()
	s.dirty[node] = now.UTC()
	s.seenMu.Unlock()
}

func (s *Server) lastSeen(node string, stored time.Time) time.Time {
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	if t, ok := s.seen[node]; ok && t.After(stored) {
		return t
	}
	return stored
}

// statusOf maps an error to its HTTP status.
func statusOf(err error) int {
	switch {
	case errors.Is(err, explorer.ErrUnsigned), errors.Is(err, explorer.ErrBadKey),
		errors.Is(err, explorer.ErrBadSignature), errors.Is(err, explorer.ErrStale),
		errors.Is(err, ErrReplay):
		return http.StatusUnauthorized
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrUnknownNode):
		return http.StatusNotFound
	case errors.Is(err, ErrDuplicate), errors.Is(err, ErrConflict):
		return http.StatusConflict
	case errors.Is(err, ErrGone):
		return http.StatusGone
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrTooManyWaits), errors.Is(err, ErrTooMany):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrQuota):
		return http.StatusForbidden
	case errors.Is(err, ErrTimeout):
		return http.StatusRequestTimeout
	case errors.Is(err, ErrNotImplemented):
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		s.log.Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("request failed")
		msg = "internal error"
	} else {
		s.log.Debug().Err(err).Int("status", status).Str("method", r.Method).Str("path", r.URL.Path).Msg("request refused")
	}
	if after := retryAfter(err); after > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(after))
	} else if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	reply := explorer.ErrorReply{Error: msg}
	if errors.Is(err, ErrNotRegistered) {
		reply.Code = explorer.CodeNotRegistered
	}
	writeJSON(w, status, reply)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, explorer.ErrorReply{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		status, raw = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(raw)
	w.Write([]byte{'\n'})
}

// decode decodes a request body into v under the node's own strict rule
// (provision.DecodeData): invalid UTF-8, unknown, duplicate or case-folded
// field names and trailing data are refused, so that what the explorer
// stores and relays reads the same to every reader.
func decode(body []byte, v any) error {
	if err := provision.DecodeData(body, v); err != nil {
		return fmt.Errorf("%w: decoding body: %v", ErrBadRequest, err)
	}
	return nil
}

func (s *Server) register(w http.ResponseWriter, r *http.Request, c *call) error {
	var req explorer.RegisterRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	pub, err := identity.PublicKey(req.NodeID)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if !pub.Equal(c.signed.Key) {
		return fmt.Errorf("%w: a node registers itself: the request must be signed by the key of %s", ErrForbidden, req.NodeID)
	}
	now := s.cfg.Now()
	if _, _, err := s.db.Node(r.Context(), req.NodeID); errors.Is(err, ErrUnknownNode) {
		// A new node: registrations from one address are rate limited
		// (a node registering again is not).
		if d := s.regRate.take(c.addr, now); d > 0 {
			return tooMany(d, "address %s registers more than %g new nodes a second", c.addr, s.lim.RegisterRate)
		}
	} else if err != nil {
		return err
	}
	created, err := s.db.RegisterNode(r.Context(), req.NodeID, now)
	if err != nil {
		return err
	}
	s.known.Store(req.NodeID, struct{}{})
	s.touch(req.NodeID, now)
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info().Str("node", req.NodeID).Msg("node registered")
	}
	info, err := s.nodeInfo(r.Context(), req.NodeID)
	if err != nil {
		return err
	}
	writeJSON(w, status, info)
	return nil
}

func (s *Server) nodeInfo(ctx context.Context, node string) (*explorer.NodeInfo, error) {
	rec, seq, err := s.db.Node(ctx, node)
	if err != nil {
		return nil, err
	}
	return &explorer.NodeInfo{
		NodeID:     rec.NodeID,
		Registered: rec.Registered,
		LastSeen:   s.lastSeen(node, rec.LastSeen),
		Capacity:   rec.Capacity,
		Stats:      rec.Stats,
		Events:     seq,
		Version:    rec.Version,
	}, nil
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request, _ *call) error {
	info, err := s.nodeInfo(r.Context(), r.PathValue("node"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) putStats(w http.ResponseWriter, r *http.Request, c *call) error {
	var stats provision.Stats
	if err := decode(c.body, &stats); err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	if err := s.db.UpdateNode(r.Context(), r.PathValue("node"), func(rec *NodeRecord) {
		if rec.Stats == nil || !stats.Updated.Before(rec.Stats.Updated) {
			rec.Stats = &stats
		}
		rec.LastSeen = now
	}); err != nil {
		return fmt.Errorf("storing stats: %w", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// events serves the long-poll: it answers at once when events after from
// exist, else holds the request until one is published, wait passes, the
// client leaves or the server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request, _ *call) error {
	node := r.PathValue("node")
	q := r.URL.Query()
	var from uint64
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: from=%q is not a sequence number", ErrBadRequest, v)
		}
		from = n
	}
	var wait time.Duration
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%w: wait=%q is not a duration like 30s", ErrBadRequest, v)
		}
		wait = min(d, s.cfg.MaxWait)
	}
	ctx := r.Context()
	s.markDelivered(ctx, node, from)
	evs, next, err := s.db.Events(ctx, node, from, s.cfg.PageLimit)
	if err != nil {
		return err
	}
	if len(evs) == 0 && wait > 0 {
		if !s.lim.Off {
			if !s.polls.acquire(node, 1) {
				return tooMany(time.Second, "node %s has %d long-polls held already, at most %d", node, s.lim.MaxPollsPerNode, s.lim.MaxPollsPerNode)
			}
			defer s.polls.release(node, 1)
		}
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Now().Add(wait + s.lim.WriteTimeout))
		t := time.NewTimer(wait)
		defer t.Stop()
		held := false
		defer func() {
			if held {
				s.metrics.longpolls.Dec()
			}
		}()
		gone, err := s.waitFor(ctx, NodeTopic(node), t, func() {
			held = true
			s.metrics.longpolls.Inc()
			if s.cfg.OnHold != nil {
				s.cfg.OnHold(node)
			}
		}, func() (bool, error) {
			var err error
			evs, next, err = s.db.Events(ctx, node, from, s.cfg.PageLimit)
			return len(evs) > 0, err
		})
		if gone {
			return nil
		}
		if err != nil {
			return err
		}
	}
	body, err := page(evs, next)
	if err != nil {
		return fmt.Errorf("encoding the events of %s: %w", node, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(append(body, '\n'))
	return nil
}

// pageFrame is the most an events reply takes besides its events: the
// object, the largest next and the newline.
const pageFrame = len(`{"events":[],"next":18446744073709551615}`) + 1

// page returns the body of the events reply for evs and next: the longest
// prefix of evs whose reply stays within explorer.MaxPageSize bytes, with
// the cursor after it (next when every event fits). An event larger than
// explorer.MaxEventSize (one stored before the limit, or injected) goes as
// a stub holding only its id, with Oversized set, so the node can answer
// it with an error result and move on. An event of at most MaxEventSize
// takes at most 6 times that once encoding/json escapes it again, so the
// first event always fits. The reply is encoded once when it fits, which
// is the rule; only an overfull page measures its events one by one.
func page(evs []explorer.WireEvent, next uint64) ([]byte, error) {
	for i := range evs {
		if n := len(evs[i].Reservation); n > explorer.MaxEventSize {
			evs[i].Reservation, evs[i].Oversized = stub(evs[i].Reservation), n
		}
	}
	if evs == nil {
		evs = []explorer.WireEvent{}
	}
	body, err := json.Marshal(explorer.EventsReply{Events: evs, Next: next})
	if err != nil || len(body)+1 <= explorer.MaxPageSize {
		return body, err
	}
	size := pageFrame
	for i := range evs {
		n, err := eventSize(evs[i])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			n++ // the comma
		}
		if size+n > explorer.MaxPageSize {
			evs, next = evs[:i], evs[i-1].Seq
			break
		}
		size += n
	}
	return json.Marshal(explorer.EventsReply{Events: evs, Next: next})
}

// eventSize is the size of ev in a reply: encoding/json compacts and
// escapes the raw reservation again.
func eventSize(ev explorer.WireEvent) (int, error) {
	raw, err := json.Marshal(ev)
	return len(raw), err
}

// stub returns the reservation of an oversized event as an object holding
// only its id (null when even that is too long).
func stub(raw json.RawMessage) json.RawMessage {
	var partial struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &partial) // best effort: the ID lets the node answer
	if len(partial.ID) > 256 {
		return json.RawMessage("null")
	}
	b, _ := json.Marshal(partial)
	return b
}

func (s *Server) putResult(w http.ResponseWriter, r *http.Request, c *call) error {
	node, id := r.PathValue("node"), r.PathValue("id")
	var res provision.Result
	if err := decode(c.body, &res); err != nil {
		return err
	}
	if res.ID != id {
		return fmt.Errorf("%w: result id %q is not the path's %q", ErrBadRequest, res.ID, id)
	}
	if err := checkResult(node, c.signed.Key, &res); err != nil {
		return err
	}
	check := matchReservation(node, &res)
	var user string
	stored, errs, err := s.db.PutResults(r.Context(), []*provision.Result{&res}, func(_ int, rv *provision.Reservation) error {
		user = rv.UserID
		return check(rv)
	})
	if err != nil {
		return err
	}
	if errs[0] != nil {
		return errs[0]
	}
	if stored[0] {
		s.publishChange(id, user)
		s.log.Debug().Str("node", node).Str("id", id).Str("state", string(res.State)).Msg("result stored")
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkResult checks what the explorer can check of a result that node
// sent before reading the database: it names node, and its signature
// verifies against key, the node's public key (the request's signer).
func checkResult(node string, key ed25519.PublicKey, res *provision.Result) error {
	if res.NodeID != node {
		return fmt.Errorf("%w: result names node %q, but node %s sent it", ErrForbidden, res.NodeID, node)
	}
	if err := res.Verify(key); err != nil {
		return fmt.Errorf("%w: result signature does not verify against node %s: %v", ErrForbidden, node, err)
	}
	return nil
}

// matchReservation returns the check of res, sent by node, against the
// reservation it answers: the reservation is node's and has the digest
// res answers.
func matchReservation(node string, res *provision.Result) func(*provision.Reservation) error {
	return func(rv *provision.Reservation) error {
		if rv.NodeID != node {
			return fmt.Errorf("%w: reservation %s belongs to another node", ErrForbidden, rv.ID)
		}
		if d := rv.Digest(); res.Digest != d {
			return fmt.Errorf("%w: result answers digest %s, reservation %s has digest %s", ErrConflict, res.Digest, rv.ID, d)
		}
		return nil
	}
}

// postResults stores a batch of the node's results: each is checked as
// putResult checks one (the same functions), all that pass are stored in
// one transaction, and the reply says per result what became of it. A
// refused result does not fail the others; only a malformed body, too many
// results or a failed transaction fail the request.
func (s *Server) postResults(w http.ResponseWriter, r *http.Request, c *call) error {
	node := r.PathValue("node")
	items, err := decodeResults(c.body, explorer.MaxBatchResults)
	if err != nil {
		return err
	}
	rs := make([]*provision.Result, len(items))
	errs := make([]error, len(items))
	for i, it := range items {
		rs[i], errs[i] = it.res, it.err
	}
	verifyResults(node, c.signed.Key, rs, errs)
	for i := range rs {
		if errs[i] != nil {
			rs[i] = nil // refused already: not for the database
		}
	}
	users := make([]string, len(rs)) // the owners, for the wake-ups
	stored, dbErrs, err := s.db.PutResults(r.Context(), rs, func(i int, rv *provision.Reservation) error {
		users[i] = rv.UserID
		return matchReservation(node, rs[i])(rv)
	})
	if err != nil {
		return err
	}
	for i, ok := range stored {
		if ok {
			s.publishChange(rs[i].ID, users[i])
		}
	}
	reply := explorer.ResultsReply{Results: make([]explorer.ResultStatus, len(items))}
	n := 0
	for i, it := range items {
		st := explorer.ResultStatus{ID: it.id, Code: http.StatusOK}
		switch {
		case errs[i] != nil:
			st.Code, st.Error = s.refusal(r, errs[i])
		case dbErrs[i] != nil:
			st.Code, st.Error = s.refusal(r, dbErrs[i])
		case stored[i]:
			n++
		}
		reply.Results[i] = st
	}
	if n > 0 {
		s.log.Debug().Str("node", node).Int("results", len(items)).Int("stored", n).Msg("results stored")
	}
	writeJSON(w, http.StatusOK, reply)
	return nil
}

// verifyResults runs checkResult on every rs[i] whose errs[i] is nil and
// sets errs[i] to its verdict. A large batch is verified on every CPU: a
// signature check is the bulk of a result's cost.
func verifyResults(node string, key ed25519.PublicKey, rs []*provision.Result, errs []error) {
	const perWorker = 16
	workers := min(runtime.GOMAXPROCS(0), (len(rs)+perWorker-1)/perWorker)
	if workers <= 1 {
		for i, res := range rs {
			if errs[i] == nil {
				errs[i] = checkResult(node, key, res)
			}
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(rs); i = int(next.Add(1)) - 1 {
				if errs[i] == nil {
					errs[i] = checkResult(node, key, rs[i])
				}
			}
		})
	}
	wg.Wait()
}

// refusal returns the status and message of one refused result of a
// batch, as fail would answer it for a request of its own.
func (s *Server) refusal(r *http.Request, err error) (int, string) {
	status := statusOf(err)
	if status == http.StatusInternalServerError {
		s.log.Error().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("storing a result of a batch failed")
		return status, "internal error"
	}
	s.log.Debug().Err(err).Int("status", status).Str("path", r.URL.Path).Msg("result of a batch refused")
	return status, err.Error()
}

// userKeyOf returns the public key of a user ID: 64 lowercase hex
// characters of a key identity.CheckPublicKey accepts.
func userKeyOf(userID string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(userID)
	if err != nil || len(b) != ed25519.PublicKeySize || hex.EncodeToString(b) != userID {
		return nil, fmt.Errorf("%w: user_id %q is not a lowercase hex-encoded ed25519 public key", ErrBadRequest, userID)
	}
	if err := identity.CheckPublicKey(b); err != nil {
		return nil, fmt.Errorf("%w: user_id %s: %v", ErrBadRequest, userID, err)
	}
	return ed25519.PublicKey(b), nil
}

// checkReservation refuses what no node could accept, so users learn early:
// a malformed node ID, no type, a delete flag, data JSON readers would read
// differently, and everything provision.CheckSubmitted refuses (the node's
// own validation but for the node and the ID). Unknown types and
// everything else about the workload pass: the node answers them with a
// signed error result.
func (s *Server) checkReservation(r *provision.Reservation, now time.Time) error {
	if _, err := identity.PublicKey(r.NodeID); err != nil {
		return fmt.Errorf("%w: node_id: %v", ErrBadRequest, err)
	}
	if r.Type == "" {
		return fmt.Errorf("%w: no type", ErrBadRequest)
	}
	if r.ToDelete || r.DeleteSignature != "" {
		return fmt.Errorf("%w: a new reservation cannot be marked for deletion", ErrBadRequest)
	}
	if r.Type.Known() && len(r.Data) > 0 && len(r.Data) <= provision.MaxDataSize {
		// Data that JSON readers would read differently (a name in
		// another case than its field's, a key twice, not UTF-8: the
		// body's own check covers most of it) is refused here as the
		// node refuses it. Everything else about the workload is the
		// node's to judge, in a signed result.
		if _, err := r.Workload(); errors.Is(err, provision.ErrAmbiguousJSON) {
			return fmt.Errorf("%w: data: %v", ErrBadRequest, err)
		}
	}
	if err := provision.CheckSubmitted(r, now); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

func (s *Server) createReservation(w http.ResponseWriter, r *http.Request, c *call) error {
	var rv provision.Reservation
	if err := decode(c.body, &rv); err != nil {
		return err
	}
	owner, err := userKeyOf(rv.UserID)
	if err != nil {
		return err
	}
	if !owner.Equal(c.signed.Key) {
		return fmt.Errorf("%w: the request is signed by %s, not by the reservation's user %s", ErrForbidden, c.signed.KeyID, rv.UserID)
	}
	now := s.cfg.Now()
	if err := s.checkReservation(&rv, now); err != nil {
		return err
	}
	if rv.IsUpdate() {
		return fmt.Errorf("%w: a new reservation names no previous version (PUT /api/v1/reservations/{id} updates one)", ErrBadRequest)
	}
	rv.Delivered = nil // the explorer's to say
	if err := checkEventSize(&rv); err != nil {
		return err
	}
	seq, err := s.db.CreateReservationWithin(r.Context(), &rv, now, Quota{MaxActive: s.lim.MaxActivePerUser, MaxUnits: s.lim.MaxUnitsPerUser})
	if err != nil {
		return err
	}
	s.hub.publish(NodeTopic(rv.NodeID))
	s.hub.publish(UserTopic(rv.UserID))
	s.log.Info().Str("id", rv.ID).Str("node", rv.NodeID).Str("user", rv.UserID).Str("type", string(rv.Type)).Uint64("seq", seq).Msg("reservation created")
	writeJSON(w, http.StatusCreated, explorer.CreateReply{ID: rv.ID})
	return nil
}

// updateReservation stores the owner-signed next version of reservation
// id (provision.CheckVersion: same owner, node, type and created, version
// plus one, naming the stored digest) and publishes it to its node, which
// applies it or refuses it in a signed result. Only the owner may update;
// a reservation marked for deletion cannot be updated; a digest any
// reservation holds or held is a replay.
func (s *Server) updateReservation(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	var rv provision.Reservation
	if err := decode(c.body, &rv); err != nil {
		return err
	}
	if rv.ID != id {
		return fmt.Errorf("%w: body id %q is not the path's %q", ErrBadRequest, rv.ID, id)
	}
	owner, err := userKeyOf(rv.UserID)
	if err != nil {
		return err
	}
	if !owner.Equal(c.signed.Key) {
		return fmt.Errorf("%w: the request is signed by %s, not by the reservation's user %s", ErrForbidden, c.signed.KeyID, rv.UserID)
	}
	now := s.cfg.Now()
	if err := s.checkReservation(&rv, now); err != nil {
		return err
	}
	if !rv.IsUpdate() {
		return fmt.Errorf("%w: an update names the digest of the version it replaces (previous)", ErrBadRequest)
	}
	rv.Delivered = nil
	if err := checkEventSize(&rv); err != nil {
		return err
	}
	quota := Quota{MaxUnits: s.lim.MaxUnitsPerUser}
	seq, err := s.db.UpdateReservationWithin(r.Context(), id, &rv, now, quota, func(cur *provision.Reservation) error {
		if cur.UserID != rv.UserID {
			return fmt.Errorf("%w: only the owner %s may update reservation %s", ErrForbidden, cur.UserID, id)
		}
		if cur.ToDelete {
			return fmt.Errorf("%w: reservation %s is marked for deletion", ErrConflict, id)
		}
		if err := provision.CheckVersion(cur, cur.Digest(), &rv); err != nil {
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.hub.publish(NodeTopic(rv.NodeID))
	s.publishChange(id, rv.UserID)
	s.log.Info().Str("id", id).Str("node", rv.NodeID).Uint32("version", rv.Version).Uint64("seq", seq).Msg("reservation updated")
	writeJSON(w, http.StatusOK, explorer.CreateReply{ID: id})
	return nil
}

// eventMargin is what a reservation's JSON may grow by after the check of
// checkEventSize: its id and, on a delete, to_delete and the delete
// signature.
const eventMargin = 512

// checkEventSize refuses a reservation whose JSON, as the store keeps and
// relays it, would not fit an event (explorer.MaxEventSize): a node reads
// no more of a page than explorer.MaxPageSize.
func checkEventSize(rv *provision.Reservation) error {
	c := *rv
	c.ID, c.Result = "", nil
	raw, err := json.Marshal(&c)
	if err != nil {
		return fmt.Errorf("%w: encoding the reservation: %v", ErrBadRequest, err)
	}
	if len(raw)+eventMargin > explorer.MaxEventSize {
		return fmt.Errorf("%w: the reservation takes %d bytes as JSON, at most %d", ErrTooLarge, len(raw), explorer.MaxEventSize-eventMargin)
	}
	return nil
}

func (s *Server) deleteReservation(w http.ResponseWriter, r *http.Request, c *call) error {
	id := r.PathValue("id")
	var req explorer.DeleteRequest
	if err := decode(c.body, &req); err != nil {
		return err
	}
	if req.ID != id {
		return fmt.Errorf("%w: body id %q is not the path's %q", ErrBadRequest, req.ID, id)
	}
	rv, seq, err := s.db.MarkDelete(r.Context(), id, func(rv *provision.Reservation) error {
		owner, err := userKeyOf(rv.UserID)
		if err != nil {
			return err
		}
		if !owner.Equal(c.signed.Key) {
			return fmt.Errorf("%w: only the owner %s may delete reservation %s", ErrForbidden, rv.UserID, id)
		}
		rv.ToDelete, rv.DeleteSignature = true, req.DeleteSignature
		if err := rv.VerifyDelete(); err != nil {
			return fmt.Errorf("%w: %v", ErrForbidden, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if seq > 0 {
		s.hub.publish(NodeTopic(rv.NodeID))
		s.publishChange(id, rv.UserID)
		s.log.Info().Str("id", id).Str("node", rv.NodeID).Uint64("seq", seq).Msg("reservation deleted by owner")
	}
	writeJSON(w, http.StatusAccepted, rv)
	return nil
}

// InjectEvent publishes raw as the reservation of a new event for node,
// without any check. It exists for tests of how nodes handle events they
// cannot decode; the API offers no way to do this.
func (s *Server) InjectEvent(node string, raw json.RawMessage) (uint64, error) {
	seq, err := s.db.InjectEvent(context.Background(), node, raw)
	if err != nil {
		return 0, err
	}
	s.hub.publish(NodeTopic(node))
	return seq, nil
}

// Waiting returns how many topics have a long-poll held right now: nodes'
// event streams, and reservations and lists users watch.
func (s *Server) Waiting() int { return s.hub.size() }

// Release answers every held long-poll at once (with the events it has,
// usually none) and makes later polls return without waiting. Serve calls
// it before its graceful shutdown; it is safe to call more than once.
func (s *Server) Release() {
	s.closeOnce.Do(func() { close(s.closing) })
}

// Serve serves the API on ln until ctx ends, then releases held long-polls
// and shuts down gracefully within Config.ShutdownTimeout. It does not
// close the database (Close does).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	if !s.lim.Off {
		ln = &connLimiter{Listener: ln, counts: newCounter(int64(s.lim.MaxConnsPerAddr), 0), log: s.refusedConn}
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.Release()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc // http.ErrServerClosed
	if err != nil {
		return fmt.Errorf("shutting down: %w", err)
	}
	return nil
}

// refusedConn logs, at most once a second, a connection closed because
// its address holds too many.
func (s *Server) refusedConn(addr string) {
	now := time.Now().Unix()
	if last := s.lastRefused.Load(); now > last && s.lastRefused.CompareAndSwap(last, now) {
		s.log.Warn().Str("addr", addr).Int("max", s.lim.MaxConnsPerAddr).Msg("connection refused: too many from one address")
	}
}

// Close releases held long-polls, stops the store's listener, pruning,
// expiry job and the flush of last-seen times, and closes the database
// (Config.Store too). Call it after Serve returned (or the httptest server
// closed).
func (s *Server) Close() error {
	s.Release()
	s.stopJobs()
	s.jobs.Wait()
	return s.db.Close()
}

// state serves the node's full-state snapshot: its active reservations
// (id, digest, version) and the sequence number they are as of.
func (s *Server) state(w http.ResponseWriter, r *http.Request, _ *call) error {
	st, err := s.db.State(r.Context(), r.PathValue("node"), s.cfg.Now())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// waitFor is every long-poll's wait: it subscribes to topic, then asks found
// (the query), and waits for a wake-up before asking again, until found
// finds something or fails, timer fires, the server closes or ctx ends
// (gone: the caller has no one left to answer). Subscribing before the
// query means an event committed before it is found by the query and one
// committed after it wakes the wait; a wake-up without a new event (the
// store's polling fallback) just queries again. onHold, when set, runs
// once, before the first wait.
func (s *Server) waitFor(ctx context.Context, topic string, timer *time.Timer, onHold func(), found func() (bool, error)) (gone bool, err error) {
	for first := true; ; first = false {
		ch, done := s.hub.subscribe(topic)
		ok, err := found()
		if err != nil || ok {
			done()
			return false, err
		}
		if first && onHold != nil {
			onHold()
		}
		select {
		case <-ch:
			done()
		case <-timer.C:
			done()
			return false, nil
		case <-s.closing:
			done()
			return false, nil
		case <-ctx.Done():
			done()
			return true, nil
		}
	}
}
