package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeprov/provisiond/internal/backoff"
	"github.com/edgeprov/provisiond/provision"
)

// Restarts. A container's lifecycle — its restart policy and health check
// as last provisioned, whether it ever was ready, its restarts, its exits
// within the crash-loop window, its last exit and when it may start again
// — is kept in <bundle>/lifecycle.json, written atomically at each change,
// so that a daemon restart forgets nothing: the restart count, the
// backoff and the crash-loop count carry over.
//
// A container runs under a shim, a shell that runs `runc run` in the
// foreground (runc then waits for the container and exits with its exit
// code) and writes that code to <bundle>/exit; it is in a session of its
// own and outlives the daemon (the unit's KillMode=process), so an exit
// while no daemon runs is known to the next one. runc writes
// <bundle>/pid once the container's process runs.

// Defaults of the restart backoff.
const (
	// DefaultRestartBackoff is the wait before the first restart; each
	// exit within the exit window doubles it.
	DefaultRestartBackoff = 10 * time.Second
	// DefaultRestartBackoffMax caps the wait.
	DefaultRestartBackoffMax = 5 * time.Minute
)

// The states of a container in its status.
const (
	// StatusRunning: the container runs.
	StatusRunning = "running"
	// StatusRestarting: it stopped and waits for its restart (backoff).
	StatusRestarting = "restarting"
	// StatusExited: it stopped and its policy leaves it stopped.
	StatusExited = "exited"
)

// The health of a container with a check, in its status.
const (
	// HealthStarting: it (re)started and its check has not passed yet.
	HealthStarting = "starting"
	// HealthHealthy: its check passed last (or failed fewer times in a
	// row than allowed).
	HealthHealthy = "healthy"
	// HealthUnhealthy: it failed its check and was killed.
	HealthUnhealthy = "unhealthy"
)

// UnknownExitCode is the exit code of a container whose exit nobody saw
// (the node rebooted, or it was started by an earlier release).
const UnknownExitCode = -1

// Exit describes how a container stopped.
type Exit struct {
	// Code is its exit code (128+n when killed by signal n);
	// UnknownExitCode when unknown.
	Code int `json:"code"`
	// At is when the node saw it stop.
	At time.Time `json:"at"`
	// Reason is "exited", or why the node stopped it ("unhealthy: …").
	Reason string `json:"reason"`
}

// String reads "exited 3 at …" or "unhealthy: … (137)".
func (e *Exit) String() string {
	code := strconv.Itoa(e.Code)
	if e.Code == UnknownExitCode {
		code = "unknown"
	}
	return fmt.Sprintf("%s (code %s) at %s", e.Reason, code, e.At.UTC().Format(time.RFC3339))
}

// lifecycle is a container's lifecycle.json.
type lifecycle struct {
	// Policy and Health are the container's, as last provisioned; IP its
	// address ("" without a network).
	Policy provision.RestartPolicy `json:"policy,omitempty"`
	Health *provision.HealthCheck  `json:"health,omitempty"`
	IP     string                  `json:"ip,omitempty"`
	// State is StatusRunning, StatusRestarting or StatusExited.
	State string `json:"state"`
	// HealthState is one of the Health* values ("" without a check).
	HealthState string `json:"health_state,omitempty"`
	// StartedAt is when it last started.
	StartedAt time.Time `json:"started_at"`
	// Ready is set once it was ready (its check passed, or it ran,
	// without a check): its "ok" was signed.
	Ready bool `json:"ready"`
	// Restarts counts its restarts since it was provisioned.
	Restarts int `json:"restarts"`
	// Exits are the times of its exits within the exit window.
	Exits []time.Time `json:"exits,omitempty"`
	// LastExit is its last exit.
	LastExit *Exit `json:"last_exit,omitempty"`
	// NextStart is when it may start again (StatusRestarting).
	NextStart time.Time `json:"next_start,omitzero"`
	// Kill says why the node is killing it, until its exit is recorded.
	Kill string `json:"kill,omitempty"`
	// BootID is the node's boot id when it last started: a container that
	// stopped in another boot stopped with the node.
	BootID string `json:"boot_id,omitempty"`
}

// rebooted reports whether the node rebooted since the container last
// started: its shim died with it, and wrote no exit code.
func (m *Manager) rebooted(lc *lifecycle) bool {
	return lc.BootID != "" && m.bootID != "" && lc.BootID != m.bootID
}

// readBootID returns the kernel's boot id ("" when unknown).
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

const (
	lifecycleFile = "lifecycle.json"
	exitFile      = "exit"
	pidFile       = "pid"
)

// readLifecycle reads the lifecycle of a bundle; ok is false when it has
// none (a container of an earlier release, or none at all).
func readLifecycle(bundle string) (lc lifecycle, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(bundle, lifecycleFile))
	if errors.Is(err, fs.ErrNotExist) {
		return lifecycle{}, false, nil
	}
	if err != nil {
		return lifecycle{}, false, err
	}
	if err := json.Unmarshal(b, &lc); err != nil {
		return lifecycle{}, false, fmt.Errorf("bad %s in %s: %w", lifecycleFile, bundle, err)
	}
	return lc, true, nil
}

// writeLifecycle writes the lifecycle of a bundle atomically.
func writeLifecycle(bundle string, lc *lifecycle) error {
	b, err := json.Marshal(lc)
	if err != nil {
		return err
	}
	p := filepath.Join(bundle, lifecycleFile)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// updateLifecycle changes the lifecycle of container id under m.lifeMu:
// fn gets the stored one (zero when none) and whether it existed; it is
// written unless fn fails. It returns what was written.
func (m *Manager) updateLifecycle(id string, fn func(lc *lifecycle, existed bool) error) (lifecycle, error) {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	bundle := m.Bundle(id)
	lc, ok, err := readLifecycle(bundle)
	if err != nil {
		return lifecycle{}, err
	}
	if err := fn(&lc, ok); err != nil {
		return lifecycle{}, err
	}
	if err := writeLifecycle(bundle, &lc); err != nil {
		return lifecycle{}, fmt.Errorf("writing lifecycle of container %s: %w", id, err)
	}
	return lc, nil
}

// loadLifecycle reads the lifecycle of container id.
func (m *Manager) loadLifecycle(id string) (lifecycle, bool, error) {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	return readLifecycle(m.Bundle(id))
}

// readExitCode reads the exit code the shim wrote into bundle; ok is
// false when there is none (yet).
func readExitCode(bundle string) (code int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(bundle, exitFile))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, false, fmt.Errorf("bad %s in %s: %w", exitFile, bundle, err)
	}
	return n, true, nil
}

// exists reports whether file name exists in bundle.
func exists(bundle, name string) bool {
	_, err := os.Stat(filepath.Join(bundle, name))
	return err == nil
}

// restartDelay returns the wait before a restart that follows the n-th exit
// within the window (n ≥ 1): base, doubled for each earlier exit, capped,
// without jitter.
func (m *Manager) restartDelay(n int) time.Duration {
	return backoff.Policy{Base: m.restartBase, Max: m.restartMax}.Ceiling(n)
}

// recordExit records that container id, which the lifecycle says runs,
// stopped, with the code the shim wrote (UnknownExitCode when none) and
// the reason the node killed it, if it did, and decides by its policy
// whether it restarts (after the backoff) or stays exited. It does
// nothing when the exit is recorded already; it returns the lifecycle.
func (m *Manager) recordExit(id string) (lifecycle, error) {
	bundle := m.Bundle(id)
	return m.updateLifecycle(id, func(lc *lifecycle, _ bool) error {
		if lc.State != StatusRunning {
			return nil
		}
		code, ok, err := readExitCode(bundle)
		if err != nil {
			return err
		}
		if !ok {
			code = UnknownExitCode
		}
		now := m.now()
		reason := "exited"
		if lc.Kill != "" {
			reason = lc.Kill
		}
		rebooted := !ok && m.rebooted(lc)
		if rebooted {
			reason = "the node rebooted"
		}
		lc.LastExit = &Exit{Code: code, At: now, Reason: reason}
		lc.Kill = ""
		lc.Exits = m.inWindow(lc.Exits, now)
		if !rebooted {
			// A reboot is no crash: it neither counts towards a crash
			// loop nor delays the restart.
			lc.Exits = append(lc.Exits, now)
		}
		// A container killed for failing its check failed, whatever its
		// code says.
		failed := code
		if reason != "exited" && failed == 0 {
			failed = UnknownExitCode
		}
		switch {
		case lc.Policy.Restarts(failed) && rebooted:
			lc.State, lc.NextStart = StatusRestarting, now
		case lc.Policy.Restarts(failed):
			lc.State = StatusRestarting
			lc.NextStart = now.Add(m.restartDelay(len(lc.Exits)))
		default:
			lc.State = StatusExited
			lc.NextStart = time.Time{}
		}
		m.log.Info().Str("container", id).Int("code", code).Str("reason", reason).Str("state", lc.State).
			Time("next_start", lc.NextStart).Int("exits", len(lc.Exits)).Msg("container stopped")
		return nil
	})
}

// inWindow returns the exits of ts within the exit window ending at now.
func (m *Manager) inWindow(ts []time.Time, now time.Time) []time.Time {
	var kept []time.Time
	for _, t := range ts {
		if now.Sub(t) < m.window {
			kept = append(kept, t)
		}
	}
	return kept
}

// crashLoop gives up on container id when more than MaxExits of its exits
// fall in the window: OnGiveUp is told, and the error is permanent.
func (m *Manager) crashLoop(ctx context.Context, id string, lc *lifecycle) error {
	n := len(m.inWindow(lc.Exits, m.now()))
	if n <= m.maxExits {
		return nil
	}
	reason := fmt.Sprintf("crash-looping: %d exits in %s", n, m.window)
	if lc.LastExit != nil {
		reason += ", the last: " + lc.LastExit.String()
	}
	m.log.Warn().Str("container", id).Str("reason", reason).Msg("giving up on container")
	var gerr error
	if m.onGiveUp != nil {
		if gerr = m.onGiveUp(ctx, id, reason); gerr != nil {
			gerr = fmt.Errorf("reporting crash loop of %s: %w", id, gerr)
		}
	}
	return provision.Permanent(errors.Join(fmt.Errorf("%w: container %s: %s", ErrCrashLoop, id, reason), gerr))
}
