// Package systemd holds the unit files of provisiond and explorerd (both
// Type=notify; provisiond.service shares the host's namespaces, since its
// mounts and containers must outlive the daemon; explorerd.service is
// sandboxed) and the sd_notify glue the daemons use: READY once they can
// serve, STOPPING on shutdown and WATCHDOG keep-alives while their main
// loop makes progress.
// Outside systemd (NOTIFY_SOCKET unset) every call is a no-op.
package systemd

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Ready tells systemd the daemon is ready: for provisiond, after the store
// is open and recovery ran; for explorerd, once it listens.
func Ready() error {
	return notify(daemon.SdNotifyReady)
}

// Stopping tells systemd the daemon is shutting down.
func Stopping() error {
	return notify(daemon.SdNotifyStopping)
}

// Status sets the one-line status systemctl shows.
func Status(line string) error {
	return notify("STATUS=" + line)
}

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("systemd: notifying %q: %w", state, err)
	}
	return nil
}

// Watchdog feeds systemd's watchdog (WatchdogSec) at half its interval for
// as long as healthy returns nil, until ctx ends. When healthy reports an
// error (the engine makes no progress with work queued) it stops feeding,
// so systemd restarts the service. It returns at once when the watchdog is
// not enabled.
func Watchdog(ctx context.Context, healthy func() error) error {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return fmt.Errorf("systemd: reading watchdog settings: %w", err)
	}
	if interval <= 0 {
		return nil
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		if healthy() == nil {
			if err := notify(daemon.SdNotifyWatchdog); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
