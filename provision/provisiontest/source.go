package provisiontest

import (
	"context"

	"github.com/edgeprov/provisiond/provision"
)

// ScriptedSource is a provision.ReservationSource a test feeds by hand. It
// can serve several Engines one after another (a restart calls
// Reservations again); each channel closes when its ctx ends.
type ScriptedSource struct {
	in chan provision.ReservationJob
}

var _ provision.ReservationSource = (*ScriptedSource)(nil)

// NewScriptedSource returns an idle ScriptedSource.
func NewScriptedSource() *ScriptedSource {
	return &ScriptedSource{in: make(chan provision.ReservationJob)}
}

// Reservations returns the channel the jobs of Send arrive on.
func (s *ScriptedSource) Reservations(ctx context.Context) <-chan provision.ReservationJob {
	out := make(chan provision.ReservationJob)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case job := <-s.in:
				select {
				case out <- job:
				case <-ctx.Done():
					if job.Ack != nil {
						job.Ack(ctx.Err())
					}
					return
				}
			}
		}
	}()
	return out
}

// Send hands job to the consumer; it returns ctx's error when ctx ends
// first.
func (s *ScriptedSource) Send(ctx context.Context, job provision.ReservationJob) error {
	select {
	case s.in <- job:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliver sends r as a job and waits for the Engine's acknowledgement,
// whose error it returns.
func (s *ScriptedSource) Deliver(ctx context.Context, r *provision.Reservation) error {
	return s.deliver(ctx, provision.ReservationJob{Reservation: r})
}

// Expire sends an Expired job for id and waits for its acknowledgement.
func (s *ScriptedSource) Expire(ctx context.Context, id string) error {
	return s.deliver(ctx, provision.ReservationJob{Reservation: &provision.Reservation{ID: id}, Expired: true})
}

// CaughtUp sends the Last marker and waits for its acknowledgement.
func (s *ScriptedSource) CaughtUp(ctx context.Context) error {
	return s.deliver(ctx, provision.ReservationJob{Last: true})
}

func (s *ScriptedSource) deliver(ctx context.Context, job provision.ReservationJob) error {
	ack := make(chan error, 1)
	job.Ack = func(err error) {
		select {
		case ack <- err:
		default:
		}
	}
	if err := s.Send(ctx, job); err != nil {
		return err
	}
	select {
	case err := <-ack:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
