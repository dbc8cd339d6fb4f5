//go:build faulthook

package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/edgeprov/provisiond/primitives"
	"github.com/edgeprov/provisiond/provision"
)

// faultEnv names the fault a test build (go build -tags faulthook) injects
// into every primitive call; `make systemd-test` uses it to prove the
// watchdog. Release builds do not compile this file:
//
//	stuck           every call blocks for ever, deaf to its context, like a
//	                worker stuck in the kernel
//	slow:DURATION   every call first waits DURATION (or until its context
//	                ends), like a busy node
const faultEnv = "PROVISIOND_FAULT"

// faulty wraps the primitives with the fault of faultEnv.
type faulty struct {
	*primitives.Table
	stuck bool
	delay time.Duration
}

var (
	_ provision.Primitives      = (*faulty)(nil)
	_ provision.Inspector       = (*faulty)(nil)
	_ provision.Lister          = (*faulty)(nil)
	_ provision.StatusInspector = (*faulty)(nil)
)

// withFaults returns p wrapped with the fault PROVISIOND_FAULT names, or p
// when it names none. An unknown value is a programmer's error in a test.
func withFaults(p *primitives.Table, log zerolog.Logger) primitiveSet {
	v := os.Getenv(faultEnv)
	switch {
	case v == "":
		return p
	case v == "stuck":
		log.Warn().Str("fault", v).Msg("test build: every primitive call blocks for ever")
		return &faulty{Table: p, stuck: true}
	case strings.HasPrefix(v, "slow:"):
		d, err := time.ParseDuration(strings.TrimPrefix(v, "slow:"))
		if err != nil {
			panic("faulthook: " + faultEnv + "=" + v + ": " + err.Error())
		}
		log.Warn().Str("fault", v).Msg("test build: every primitive call is slow")
		return &faulty{Table: p, delay: d}
	}
	panic("faulthook: unknown " + faultEnv + "=" + v)
}

func (f *faulty) wait(ctx context.Context) error {
	if f.stuck {
		select {} // deaf to ctx: only the watchdog gets this worker back
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(f.delay):
		return nil
	}
}

func (f *faulty) Provision(ctx context.Context, r *provision.Reservation) (any, error) {
	if err := f.wait(ctx); err != nil {
		return nil, provision.Temporary(err)
	}
	return f.Table.Provision(ctx, r)
}

func (f *faulty) Decommission(ctx context.Context, r *provision.Reservation) error {
	if err := f.wait(ctx); err != nil {
		return provision.Temporary(err)
	}
	return f.Table.Decommission(ctx, r)
}

func (f *faulty) Inspect(ctx context.Context, r *provision.Reservation) error {
	if err := f.wait(ctx); err != nil {
		return err
	}
	return f.Table.Inspect(ctx, r)
}

// InspectStatus carries the fault too: the engine prefers it to Inspect
// (provision.StatusInspector), and the embedded Table's would bypass it.
func (f *faulty) InspectStatus(ctx context.Context, r *provision.Reservation) (any, error) {
	if err := f.wait(ctx); err != nil {
		return nil, err
	}
	return f.Table.InspectStatus(ctx, r)
}
