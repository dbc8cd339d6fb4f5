package cache

import (
	"bytes"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Purge removes the records ids that are, when its transaction runs, in a
// Final state and whose reservation expired before cutoff: the record, its
// state entry and its digest (a final record holds no key and is in no
// expiry index). It returns the IDs it removed; an absent record, a live
// one or one expired at or after cutoff is left alone, so a record that
// left its Final state meanwhile (error → deleting) is never lost. Every
// removal is one transaction.
//
// A purged digest no longer refuses a replay: the caller's cutoff must be
// early enough that Validate refuses a replay as expired (the garbage
// collector uses now minus provision.MaxClockSkew).
func (s *Store) Purge(cutoff time.Time, ids ...string) ([]string, error) {
	var purged []string
	for _, id := range ids {
		removed := false
		var txid uint64
		err := s.queueThen("purging record "+id, func(tx *bolt.Tx) error {
			removed = false
			recs, err := bucket(tx, bucketRecords)
			if err != nil {
				return err
			}
			v := recs.Get([]byte(id))
			if v == nil {
				return nil
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			if !rec.State.Final() || rec.Reservation == nil || !rec.Reservation.Expires().Before(cutoff) {
				return nil
			}
			x := indexOf(rec)
			if err := recs.Delete([]byte(id)); err != nil {
				return err
			}
			sb, err := stateBucket(tx, x.state)
			if err != nil {
				return err
			}
			if err := sb.Delete([]byte(id)); err != nil {
				return err
			}
			if x.digest != "" {
				digests, err := bucket(tx, bucketDigests)
				if err != nil {
					return err
				}
				if bytes.Equal(digests.Get([]byte(x.digest)), []byte(id)) {
					if err := digests.Delete([]byte(x.digest)); err != nil {
						return err
					}
				}
			}
			if x.holdsKey() { // not for a Final record; kept exact anyway
				keys, err := bucket(tx, bucketKeys)
				if err != nil {
					return err
				}
				if bytes.Equal(keys.Get([]byte(x.key)), []byte(id)) {
					if err := keys.Delete([]byte(x.key)); err != nil {
						return err
					}
				}
			}
			removed, txid = true, uint64(tx.ID())
			return nil
		}, func() {
			if removed {
				s.reads.removed(id, txid)
			}
		})()
		if err != nil {
			return purged, err
		}
		if removed {
			purged = append(purged, id)
		}
	}
	return purged, nil
}
