// Package logreq answers the owners' signed requests for the logs of
// their containers on this node. It long-polls the explorer for them
// (GET /api/v1/nodes/{node}/logs: the node needs no open port), checks
// each — the owner's signature, its time, that it names a container of
// this node that the signer owns, and that it was not answered before —
// reads the bounded tail of the container's output and uploads it sealed
// to the owner's key (explorer.SealLogs), or an error the owner reads.
package logreq

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/provision"
)

// Source is the node's side of the explorer's log endpoints
// (explorer.Client is one).
type Source interface {
	// LogRequests long-polls the node's pending requests.
	LogRequests(ctx context.Context) ([]explorer.LogRequest, error)
	// PutLogs uploads an answer.
	PutLogs(ctx context.Context, reply *explorer.LogReply) error
}

// Options configure a Responder.
type Options struct {
	// Source is the explorer (required).
	Source Source
	// NodeID is this node's ID (required).
	NodeID string
	// Key is the node's key: it signs the tail inside the sealed box
	// (required).
	Key ed25519.PrivateKey
	// Lookup returns the node's record of a reservation, or an error
	// wrapping provision.ErrNotFound (required).
	Lookup func(id string) (*provision.Record, error)
	// Tail returns the last n bytes of container id's output, or an error
	// wrapping fs.ErrNotExist when it has none (required).
	Tail func(id string, n int) ([]byte, error)
	// Rate bounds the requests answered per second (default 2, bursts of
	// explorer.MaxLogRequestsPerPoll).
	Rate rate.Limit
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives what happens.
	Log zerolog.Logger
}

// Responder answers log requests. Requests are honoured once: the names
// answered are remembered until their request expires, and a request
// signed before the Responder started is refused (it may be a replay that
// a previous process answered).
type Responder struct {
	o       Options
	started time.Time
	lim     *rate.Limiter
	log     zerolog.Logger

	mu       sync.Mutex
	answered map[string]time.Time // request name → when it expires
}

// New returns a Responder; it panics when a required option is missing.
func New(o Options) *Responder {
	if o.Source == nil || o.NodeID == "" || len(o.Key) != ed25519.PrivateKeySize || o.Lookup == nil || o.Tail == nil {
		panic("logreq: Source, NodeID, Key, Lookup and Tail are required")
	}
	if o.Rate == 0 {
		o.Rate = 2
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Responder{o: o, started: o.Now(), lim: rate.NewLimiter(o.Rate, explorer.MaxLogRequestsPerPoll),
		log: o.Log.With().Str("component", "logreq").Logger(), answered: map[string]time.Time{}}
}

// Run polls and answers until ctx ends. Poll failures are retried with
// jittered backoff; a failed upload leaves the request pending at the
// explorer, to be answered at the next poll.
func (r *Responder) Run(ctx context.Context) {
	policy := backoff.Policy{Base: time.Second, Max: time.Minute}
	failures := 0
	for ctx.Err() == nil {
		reqs, err := r.o.Source.LogRequests(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			d := policy.Delay(failures)
			r.log.Debug().Err(err).Dur("retry_in", d).Msg("polling log requests failed")
			if !backoff.Sleep(ctx, d) {
				return
			}
			continue
		}
		failures = 0
		for i := range reqs {
			if err := r.lim.Wait(ctx); err != nil {
				return
			}
			r.Answer(ctx, &reqs[i])
		}
	}
}

// Answer answers one request and uploads the answer; false when it was
// not uploaded (and not marked answered, so a later poll retries it).
func (r *Responder) Answer(ctx context.Context, q *explorer.LogRequest) bool {
	name := q.Name()
	reply := &explorer.LogReply{Request: name}
	tail, err := r.check(q)
	if err == nil {
		reply.Sealed, err = explorer.SealLogs(q, r.o.Key, tail)
	}
	if err != nil {
		reply.Error = short(err.Error(), explorer.MaxLogError)
	}
	if err := r.o.Source.PutLogs(ctx, reply); err != nil {
		r.forget(name)
		r.log.Warn().Err(err).Str("id", q.ID).Str("request", name).Msg("uploading logs failed")
		return false
	}
	ev := r.log.Info()
	if reply.Error != "" {
		ev = ev.Str("refused", reply.Error)
	}
	ev.Str("id", q.ID).Str("request", name).Int("bytes", len(tail)).Msg("log request answered")
	return true
}

// Errors a request is refused with (the owner reads them).
var (
	ErrNotOwner     = errors.New("not the owner of this reservation")
	ErrNotContainer = errors.New("not a container: only containers have logs")
	ErrUnknown      = errors.New("no such reservation on this node")
	ErrReplay       = errors.New("request already answered, or signed before the node's daemon started (a replay)")
	ErrNoLogs       = errors.New("the container has written no log yet")
)

// check decides a request and returns the tail to send.
func (r *Responder) check(q *explorer.LogRequest) ([]byte, error) {
	now := r.o.Now()
	if err := q.Verify(now); err != nil {
		return nil, err
	}
	if q.NodeID != r.o.NodeID {
		return nil, fmt.Errorf("request for node %s, this is %s", q.NodeID, r.o.NodeID)
	}
	if !r.remember(q.Name(), q.Created.Add(explorer.LogRequestTTL), now) || q.Created.Before(r.started.Add(-time.Second)) {
		return nil, ErrReplay
	}
	rec, err := r.o.Lookup(q.ID)
	if errors.Is(err, provision.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrUnknown, q.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the record of %s: %w", q.ID, err)
	}
	res := rec.Reservation
	switch {
	case res.UserID != q.UserID:
		return nil, ErrNotOwner
	case res.Type != provision.ContainerReservation:
		return nil, ErrNotContainer
	}
	tail, err := r.o.Tail(q.ID, q.Tail)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoLogs
	}
	if err != nil {
		return nil, fmt.Errorf("reading the log of %s failed", q.ID)
	}
	return tail, nil
}

// remember marks name answered until expires; false when it was already.
// Expired names are forgotten on the way, so the set holds at most the
// requests of the last LogRequestTTL.
func (r *Responder) remember(name string, expires, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for n, exp := range r.answered {
		if now.After(exp) {
			delete(r.answered, n)
		}
	}
	if _, ok := r.answered[name]; ok {
		return false
	}
	r.answered[name] = expires
	return true
}

// forget unmarks name after its answer could not be uploaded.
func (r *Responder) forget(name string) {
	r.mu.Lock()
	delete(r.answered, name)
	r.mu.Unlock()
}

// short cuts s to at most n bytes, at a rune boundary, as valid UTF-8.
func short(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
