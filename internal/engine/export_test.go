package engine

import "github.com/edgeprov/provisiond/provision"

// IngestShard returns the ingest shard of reservation id, for tests that
// need two IDs in different shards (or the same one).
func (e *Engine) IngestShard(id string) int {
	return e.shard(provision.ReservationJob{Reservation: &provision.Reservation{ID: id}})
}

// IngestInFlight is how many jobs the Engine takes from its source before
// it ingested them.
const IngestInFlight = ingestInFlight
