package provctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// watchHold is the longest one long-poll of a watch is held; the explorer
// caps it at explorer.MaxWait.
const watchHold = 30 * time.Second

// progress shows the steps of a reservation as they happen, with the time
// since start. On a terminal, a status line below the steps says what is
// awaited and counts the seconds; elsewhere each step is one plain line.
type progress struct {
	w     io.Writer
	start time.Time
	now   func() time.Time
	tty   bool

	mu      sync.Mutex
	waiting string // what the status line says is awaited
	drawn   bool   // the status line is on screen

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// progressModes are the values of --progress.
const (
	progressAuto  = "auto"
	progressTTY   = "tty"
	progressPlain = "plain"
	progressNone  = "none"
)

// newProgress returns the progress display of mode on w, timing from
// start; auto is tty when w is a terminal. A nil *progress shows nothing.
// Close stops its status line.
func newProgress(w io.Writer, mode string, start time.Time) (*progress, error) {
	p := &progress{w: w, start: start, now: time.Now}
	switch mode {
	case progressAuto:
		p.tty = isTerminal(w)
	case progressTTY:
		p.tty = true
	case progressPlain:
	case progressNone:
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: --progress %q: want auto, tty, plain or none", ErrUsage, mode)
	}
	if p.tty {
		ctx, cancel := context.WithCancel(context.Background())
		p.stop = cancel
		p.wg.Go(func() { p.tick(ctx) })
	}
	return p, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// tick redraws the status line ten times a second until ctx ends.
func (p *progress) tick(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mu.Lock()
			p.draw()
			p.mu.Unlock()
		}
	}
}

// elapsed formats the time since start.
func (p *progress) elapsed() string {
	return fmt.Sprintf("%7.3fs", p.now().Sub(p.start).Seconds())
}

// draw writes the status line (tty only, p.mu held).
func (p *progress) draw() {
	if !p.tty || p.waiting == "" {
		return
	}
	fmt.Fprintf(p.w, "\r\033[K  …      %s  %s", p.elapsed(), p.waiting)
	p.drawn = true
}

// step shows a step that happened, then waiting as what is awaited next
// (empty: nothing more).
func (p *progress) step(mark, what, waiting string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		if p.drawn {
			fmt.Fprint(p.w, "\r\033[K")
			p.drawn = false
		}
		fmt.Fprintf(p.w, "  %s %s  %s\n", mark, p.elapsed(), what)
	} else {
		fmt.Fprintf(p.w, "%s %s\n", p.elapsed(), what)
	}
	p.waiting = waiting
	p.draw()
}

// Close clears the status line and stops its redrawing.
func (p *progress) Close() {
	if p == nil || p.stop == nil {
		return
	}
	p.stop()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// follow long-polls reservation id until its verified result is until,
// showing each step on p: the delivery to the node, each result. It
// returns the reservation as last seen. A result of another final state
// ends it with ErrWatch; a result or reservation that does not verify
// with ErrUnverified; the end of ctx with ErrWatch.
func (s *session) follow(ctx context.Context, id string, until provision.ResultState, p *progress) (*provision.Reservation, error) {
	token := ""
	delivered := false
	lastSig := ""
	retry := 100 * time.Millisecond
	for {
		wait := watchHold
		if dl, ok := ctx.Deadline(); ok {
			if wait = min(wait, time.Until(dl)); wait < time.Millisecond {
				return nil, fmt.Errorf("%w: %s did not reach %s in time", ErrWatch, id, until)
			}
		}
		asked := time.Now()
		r, err := s.client.WaitReservation(ctx, id, token, wait)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%w: %s did not reach %s in time: %w", ErrWatch, id, until, ctx.Err())
			}
			if !provision.IsTemporary(err) {
				return nil, err
			}
			// The explorer is away or busy: look again soon.
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s did not reach %s in time (last failure: %v)", ErrWatch, id, until, err)
			case <-time.After(retry):
			}
			retry = min(2*retry, 5*time.Second)
			continue
		}
		retry = 100 * time.Millisecond
		if next := explorer.ChangeToken(r); next != token {
			token = next
		} else if time.Since(asked) < time.Second {
			// Unchanged and answered early: an explorer shutting down, or
			// one without the long-poll. Look again a second later, as
			// a plain poll would.
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s did not reach %s in time", ErrWatch, id, until)
			case <-time.After(time.Second):
			}
			continue
		}
		if r.Delivered != nil && !delivered {
			delivered = true
			p.step("✓", "delivered to node "+r.NodeID, "waiting for the node's result")
		}
		if r.Result == nil || r.Result.Signature == lastSig {
			continue
		}
		lastSig = r.Result.Signature
		if err := verify(r); err != nil {
			return r, err
		}
		got := r.Result.State
		if got == until {
			p.step("✓", fmt.Sprintf("%s: signature of node %s verified", got, r.NodeID), "")
			return r, nil
		}
		// An error result ends a wait for ok, and the other way round;
		// while waiting for deleted, earlier results are steps on the way.
		if until != provision.StateDeleted && (got == provision.StateOk || got == provision.StateError) || got == provision.StateDeleted {
			p.step("✗", fmt.Sprintf("%s: %s", got, r.Result.Message), "")
			return r, fmt.Errorf("%w: %s is %s, not %s: %s", ErrWatch, id, got, until, r.Result.Message)
		}
		p.step("·", fmt.Sprintf("%s (verified)", got), "waiting for "+string(until))
	}
}
