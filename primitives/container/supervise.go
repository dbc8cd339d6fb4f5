package container

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeprov/provisiond/internal/backoff"
)

// Supervision. Each container the Manager provisioned or took up (by
// Inspect, after a daemon restart) has one goroutine that follows it top
// to bottom: it watches for its exit, runs its health check, kills it
// when it becomes unhealthy, records the exit (recordExit decides by the
// policy), and tells the Engine (Options.OnChange) when its status
// changed or its restart is due. It never restarts the container itself:
// the Engine does, through Inspect (ErrVanished once the restart is due)
// and Provision, serialised with every other operation on the
// reservation. Provision and Decommission stop the supervisor first.

// exitPoll is how often a supervisor looks for its container's exit file.
const exitPoll = 500 * time.Millisecond

// statePoll is how often it also asks runc (a container started by an
// earlier release has no shim to write its exit).
const statePoll = 10 * time.Second

// shimGrace is how long a shim may take to write the exit code of a
// container runc no longer runs.
const shimGrace = 2 * time.Second

// supervisor is the goroutine of one container.
type supervisor struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// supervise starts the supervisor of container id unless one runs.
func (m *Manager) supervise(id string) {
	m.supMu.Lock()
	defer m.supMu.Unlock()
	if _, ok := m.sups[id]; ok || m.closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &supervisor{cancel: cancel, done: make(chan struct{})}
	m.sups[id] = s
	go func() {
		defer close(s.done)
		m.superviseLoop(ctx, id)
		m.supMu.Lock()
		if m.sups[id] == s {
			delete(m.sups, id)
		}
		m.supMu.Unlock()
	}()
}

// unsupervise stops the supervisor of container id and waits for it.
func (m *Manager) unsupervise(id string) {
	m.supMu.Lock()
	s, ok := m.sups[id]
	delete(m.sups, id)
	m.supMu.Unlock()
	if ok {
		s.cancel()
		<-s.done
	}
}

// changed tells the Engine that container id's status changed or that it
// should be inspected.
func (m *Manager) changed(id string) {
	if m.onChange != nil {
		m.onChange(id)
	}
}

// superviseLoop follows container id until its restart is due (the Engine
// is told), it stays exited, or ctx ends.
func (m *Manager) superviseLoop(ctx context.Context, id string) {
	lc, ok, err := m.loadLifecycle(id)
	if err != nil || !ok {
		if err != nil {
			m.log.Warn().Err(err).Str("container", id).Msg("reading container lifecycle")
		}
		return
	}
	if lc.State == StatusRunning {
		if lc, err = m.watch(ctx, id, lc); err != nil {
			if ctx.Err() == nil {
				m.log.Warn().Err(err).Str("container", id).Msg("supervising container")
			}
			return
		}
		m.changed(id) // it stopped: a new status
	}
	if lc.State != StatusRestarting {
		return
	}
	if !backoff.Sleep(ctx, lc.NextStart.Sub(m.now())) {
		return
	}
	m.changed(id) // its restart is due: Inspect says so, the Engine repairs it
}

// watch follows running container id until it stops, and returns its
// lifecycle with the exit recorded. With a health check it checks the
// container: while it starts, every second (or its interval, if shorter)
// until the check passes or the start period ends; then every interval.
// A start period that ends, or Failures checks in a row that fail, make
// it unhealthy: the node kills it, and its exit says why.
func (m *Manager) watch(ctx context.Context, id string, lc lifecycle) (lifecycle, error) {
	bundle := m.Bundle(id)
	shim := exists(bundle, pidFile)
	h := lc.Health
	var next time.Time // of the next check
	failures := 0
	lastState := m.now()
	var gone time.Time // when runc first said it no longer runs
	for {
		if !backoff.Sleep(ctx, exitPoll) {
			return lc, ctx.Err()
		}
		now := m.now()
		if shim && exists(bundle, exitFile) {
			return m.recordExit(id)
		}
		if now.Sub(lastState) >= statePoll || !gone.IsZero() {
			lastState = now
			st, err := m.runc.state(ctx, Name(id))
			if err != nil {
				return lc, err
			}
			switch {
			case st == stateRunning:
				gone = time.Time{}
			case !shim || (!gone.IsZero() && now.Sub(gone) >= shimGrace):
				// No shim, or one that died: the exit code is lost.
				return m.recordExit(id)
			case gone.IsZero():
				gone = now // its shim writes the exit code in a moment
			}
		}
		if h == nil || now.Before(next) || lc.Kill != "" {
			continue
		}
		err := m.check(ctx, id, h, lc.IP)
		if ctx.Err() != nil {
			return lc, ctx.Err()
		}
		now = m.now()
		if lc.HealthState == HealthStarting {
			next = now.Add(min(time.Second, h.IntervalOrDefault()))
			switch {
			case err == nil:
				failures = 0
				next = now.Add(h.IntervalOrDefault())
				if lc, err = m.setHealth(id, HealthHealthy); err != nil {
					return lc, err
				}
				m.changed(id)
			case now.Sub(lc.StartedAt) >= h.StartPeriodOrDefault():
				reason := fmt.Sprintf("unhealthy: health check %s did not pass within %s of the start: %v", h, h.StartPeriodOrDefault(), err)
				if lc, err = m.killUnhealthy(ctx, id, reason); err != nil {
					return lc, err
				}
			}
			continue
		}
		next = now.Add(h.IntervalOrDefault())
		if err == nil {
			failures = 0
			continue
		}
		failures++
		m.log.Info().Err(err).Str("container", id).Int("failures", failures).Msg("health check failed")
		if failures >= h.FailuresOrDefault() {
			reason := fmt.Sprintf("unhealthy: health check %s failed %d times in a row, the last: %v", h, failures, err)
			if lc, err = m.killUnhealthy(ctx, id, reason); err != nil {
				return lc, err
			}
		}
	}
}

// setHealth records the health of container id.
func (m *Manager) setHealth(id, health string) (lifecycle, error) {
	return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
		lc.HealthState = health
		return nil
	})
}

// killUnhealthy records why container id is killed and kills it; its
// exit, seen next, carries the reason.
func (m *Manager) killUnhealthy(ctx context.Context, id, reason string) (lifecycle, error) {
	m.log.Warn().Str("container", id).Str("reason", reason).Msg("killing unhealthy container")
	lc, err := m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
		lc.Kill = reason
		lc.HealthState = HealthUnhealthy
		return nil
	})
	if err != nil {
		return lc, err
	}
	if err := m.runc.kill(ctx, Name(id), "KILL"); err != nil {
		if st, serr := m.runc.state(ctx, Name(id)); serr == nil && st != stateRunning {
			return lc, nil // it stopped meanwhile
		}
		return lc, fmt.Errorf("killing unhealthy container %s: %w", id, err)
	}
	return lc, nil
}
