package provisiontest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Poller is a provision.Poller over a scripted event log. Events get
// sequence numbers 1, 2, …; Poll(from) returns up to PageSize events with
// a larger Seq and the last one's Seq as next. With nothing to return it
// holds the poll until an event is appended or Hold passes (a long-poll).
// Errors queued with FailNext are returned first, one per poll. Every
// from it was asked is recorded.
type Poller struct {
	// PageSize bounds a reply. Default (0): 100.
	PageSize int
	// Hold is how long an empty poll waits. Default (0): 30s.
	Hold time.Duration

	mu     sync.Mutex
	events []provision.Event
	errs   []error
	froms  []uint64
	added  chan struct{}
}

var _ provision.Poller = (*Poller)(nil)

// NewPoller returns a Poller with an empty log.
func NewPoller() *Poller {
	return &Poller{added: make(chan struct{})}
}

// Append adds r to the log and returns its sequence number.
func (p *Poller) Append(r *provision.Reservation) uint64 {
	return p.append(provision.Event{Reservation: r})
}

// AppendBad adds an item that could not be decoded: err, with whatever of
// the reservation could be read (r may be nil).
func (p *Poller) AppendBad(r *provision.Reservation, err error) uint64 {
	return p.append(provision.Event{Reservation: r, Err: err})
}

func (p *Poller) append(ev provision.Event) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	ev.Seq = uint64(len(p.events) + 1)
	p.events = append(p.events, ev)
	close(p.added)
	p.added = make(chan struct{})
	return ev.Seq
}

// FailNext makes the next polls return errs, one each.
func (p *Poller) FailNext(errs ...error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, errs...)
}

// Froms returns the cursors Poll was called with, in order.
func (p *Poller) Froms() []uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.froms)
}

// Poll returns the events after from.
func (p *Poller) Poll(ctx context.Context, from uint64) ([]provision.Event, uint64, error) {
	hold := p.Hold
	if hold <= 0 {
		hold = 30 * time.Second
	}
	t := time.NewTimer(hold)
	defer t.Stop()
	p.mu.Lock()
	p.froms = append(p.froms, from)
	if len(p.errs) > 0 {
		err := p.errs[0]
		p.errs = p.errs[1:]
		p.mu.Unlock()
		return nil, from, err
	}
	for {
		if evs := p.after(from); len(evs) > 0 {
			p.mu.Unlock()
			return evs, evs[len(evs)-1].Seq, nil
		}
		added := p.added
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, from, ctx.Err()
		case <-t.C:
			return nil, from, nil
		case <-added:
		}
		p.mu.Lock()
	}
}

// after returns the events with Seq > from, at most PageSize. p.mu is held.
func (p *Poller) after(from uint64) []provision.Event {
	if from >= uint64(len(p.events)) {
		return nil
	}
	n := p.PageSize
	if n <= 0 {
		n = 100
	}
	evs := p.events[from:]
	if len(evs) > n {
		evs = evs[:n]
	}
	return slices.Clone(evs)
}
