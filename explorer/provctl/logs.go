package provctl

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// ErrNoLogs is a `provctl logs` that got no tail: the node refused the
// request, or did not answer in time.
var ErrNoLogs = errors.New("provctl: no logs")

// logsPollEvery is how often `provctl logs` asks the explorer whether the
// node answered.
const logsPollEvery = 250 * time.Millisecond

// logsCommand is `provctl logs ID [--tail N] [--timeout D]`.
func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "print the last bytes of your container's output, asked of its node through the explorer (sealed to your key)",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "tail", Usage: fmt.Sprintf("how many `BYTES` of the end of the output (1 to %d)", explorer.MaxLogTail), Value: explorer.DefaultLogTail},
			&cli.DurationFlag{Name: "timeout", Usage: "give up when the node has not answered after this long", Value: time.Minute},
		},
		Action: withClient(logs),
	}
}

// logs asks reservation ID's node for the tail of its output and prints
// it: it checks the reservation (yours, a container), submits the signed
// request, polls the explorer for the sealed answer, opens it with your
// key and checks the node's signature inside.
func logs(ctx context.Context, s *session) error {
	id, err := argID(s.c)
	if err != nil {
		return err
	}
	tail := s.c.Int("tail")
	if tail < 1 || tail > explorer.MaxLogTail {
		return fmt.Errorf("%w: --tail %d is not within 1…%d bytes", ErrUsage, tail, explorer.MaxLogTail)
	}
	r, err := s.client.GetReservation(ctx, id)
	if err != nil {
		return err
	}
	if err := verify(r); err != nil {
		return err
	}
	if r.UserID != s.client.KeyID() {
		return fmt.Errorf("%w: reservation %s is %s's: only its owner may read its logs", ErrNoLogs, id, r.UserID)
	}
	if r.Type != provision.ContainerReservation {
		return fmt.Errorf("%w: reservation %s is a %s, not a container: only containers have logs", ErrNoLogs, id, r.Type)
	}
	q, err := s.client.RequestLogs(ctx, r, tail)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.c.Duration("timeout"))
	t := time.NewTicker(logsPollEvery)
	defer t.Stop()
	for {
		st, err := s.client.LogStatus(ctx, q)
		if err != nil {
			return err
		}
		switch st.State {
		case explorer.LogAnswered:
			out, err := explorer.OpenLogs(q, s.key, st.Sealed)
			if err != nil {
				return fmt.Errorf("%w: opening the answer of node %s: %w", ErrUnverified, r.NodeID, err)
			}
			_, err = s.c.App.Writer.Write(out)
			return err
		case explorer.LogRefused:
			return fmt.Errorf("%w: node %s refused: %s", ErrNoLogs, r.NodeID, st.Error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: node %s did not answer within %s: %s", ErrNoLogs, r.NodeID, s.c.Duration("timeout"), s.nodeState(ctx, r.NodeID))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// nodeState says what the explorer knows of a node that did not answer.
func (s *session) nodeState(ctx context.Context, node string) string {
	info, err := s.client.Node(ctx, node)
	if err != nil {
		return "it may be offline (" + err.Error() + ")"
	}
	ago := time.Since(info.LastSeen).Round(time.Second)
	return fmt.Sprintf("it may be offline: the explorer last heard from it %s ago", ago)
}
