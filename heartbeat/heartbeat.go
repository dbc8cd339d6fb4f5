// Package heartbeat makes the node's signed heartbeats: one at every start
// and one every interval after, each naming the kernel's boot id and boot
// time, handed to the engine's durable outbox (engine.Engine.EnqueueHeartbeat),
// which delivers them to the explorer. The explorer derives the node's
// availability and its reboots from them.
package heartbeat

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/provision"
)

// DefaultInterval is the default time between two heartbeats.
const DefaultInterval = 5 * time.Minute

// Paths the kernel tells the boot from.
const (
	bootIDPath = "/proc/sys/kernel/random/boot_id"
	statPath   = "/proc/stat"
)

// ErrNoBoot is returned when the boot id or boot time cannot be read.
var ErrNoBoot = errors.New("heartbeat: cannot read the boot")

// Options configure Run.
type Options struct {
	// NodeID is the node's ID (required).
	NodeID string
	// Interval is the time between heartbeats (default DefaultInterval;
	// within provision.MinHeartbeatInterval and MaxHeartbeatInterval).
	Interval time.Duration
	// Signer signs with the node's key (required).
	Signer provision.Signer
	// Enqueue stores a signed heartbeat durably for delivery (required:
	// engine.Engine.EnqueueHeartbeat); false means the outbox was full
	// and the heartbeat was dropped.
	Enqueue func(*provision.Heartbeat) (bool, error)
	// Boot returns the boot id and the boot time (default: ReadBoot of
	// BootIDFile).
	Boot func() (id string, booted time.Time, err error)
	// BootIDFile is the file the boot id is read from (default
	// /proc/sys/kernel/random/boot_id; a test stands for a reboot by
	// changing what another file holds).
	BootIDFile string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Log receives the failures.
	Log zerolog.Logger
}

// Run makes a heartbeat at once and then every Interval until ctx ends. A
// heartbeat that cannot be made or stored is logged and the next one
// comes at its time; Run returns an error only for bad Options.
func Run(ctx context.Context, o Options) error {
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Interval < provision.MinHeartbeatInterval || o.Interval > provision.MaxHeartbeatInterval {
		return fmt.Errorf("heartbeat: interval %s not within [%s, %s]", o.Interval, provision.MinHeartbeatInterval, provision.MaxHeartbeatInterval)
	}
	if o.NodeID == "" || o.Signer == nil || o.Enqueue == nil {
		return errors.New("heartbeat: NodeID, Signer and Enqueue are required")
	}
	if o.Boot == nil {
		file := o.BootIDFile
		o.Boot = func() (string, time.Time, error) { return ReadBoot(file) }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Log.With().Str("component", "heartbeat").Logger()
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		hb, err := Make(o)
		if err == nil {
			var stored bool
			stored, err = o.Enqueue(hb)
			if err == nil && !stored {
				log.Warn().Msg("outbox full; heartbeat dropped")
			}
		}
		if err != nil {
			log.Warn().Err(err).Msg("heartbeat failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Make returns a signed heartbeat of now.
func Make(o Options) (*provision.Heartbeat, error) {
	id, booted, err := o.Boot()
	if err != nil {
		return nil, err
	}
	hb := &provision.Heartbeat{NodeID: o.NodeID, BootID: id, Booted: booted.UTC(), Created: o.Now().UTC(), Interval: o.Interval}
	if hb.Booted.After(hb.Created) {
		hb.Booted = hb.Created // the boot time is whole seconds: never after now
	}
	if err := hb.Sign(o.Signer); err != nil {
		return nil, err
	}
	return hb, nil
}

// ReadBoot reads the boot id from file (empty: the kernel's,
// /proc/sys/kernel/random/boot_id) and the boot time (btime of
// /proc/stat, whole seconds).
func ReadBoot(file string) (string, time.Time, error) {
	if file == "" {
		file = bootIDPath
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrNoBoot, err)
	}
	id := strings.TrimSpace(string(raw))
	stat, err := os.ReadFile(statPath)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", ErrNoBoot, err)
	}
	booted, err := parseBtime(stat)
	if err != nil {
		return "", time.Time{}, err
	}
	return id, booted, nil
}

// parseBtime finds the "btime SECONDS" line of /proc/stat.
func parseBtime(stat []byte) (time.Time, error) {
	sc := bufio.NewScanner(bytes.NewReader(stat))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "btime" {
			secs, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || secs <= 0 {
				return time.Time{}, fmt.Errorf("%w: btime %q", ErrNoBoot, f[1])
			}
			return time.Unix(secs, 0).UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: no btime line in %s", ErrNoBoot, statPath)
}
