package source_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/edgeprov/provisiond/internal/source"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// testNode is the node the test reservations are for.
const testNode = "node-1"

// The poll source counts one answer per job, in any order: a job answered
// twice does not stand in for one not answered yet, and the cursor moves
// only once every job of the batch answered.
func TestPollSourceAcksOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		poller := provisiontest.NewPoller()
		store := provisiontest.NewStore()
		u := provisiontest.NewUser(1)
		for _, id := range []string{"a", "b", "c"} {
			poller.Append(u.Volume(id, testNode, 1, time.Now(), time.Hour))
		}
		ctx := t.Context()
		jobs := source.NewPoll(poller, store, "explorer", source.PollOptions{}).Reservations(ctx)
		var batch []provision.ReservationJob
		for range 3 {
			batch = append(batch, <-jobs)
		}
		cursor := func() uint64 {
			synctest.Wait()
			c, err := store.Cursor("explorer")
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		batch[2].Ack(nil)
		batch[2].Ack(nil) // twice
		batch[0].Ack(nil)
		if c := cursor(); c != 0 {
			t.Fatalf("cursor moved to %d with a job unanswered", c)
		}
		batch[1].Ack(nil)
		if c := cursor(); c != 3 {
			t.Fatalf("cursor %d after every job answered, want 3", c)
		}
	})
}
