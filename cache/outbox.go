package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/provision"
)

// queuedEntry is an outbox entry encoded before its write is queued, so
// that the commit, which runs every queued write in one goroutine, only
// splices its sequence number in. A nil v is a nil entry, skipped.
type queuedEntry struct {
	stats bool
	v     []byte // the entry's JSON with Seq 0: it starts with zeroSeq
}

// zeroSeq starts the JSON of every entry with Seq 0: Seq is its first
// field and an integer never has a leading zero.
var zeroSeq = []byte(`{"seq":0`)

// encodeEntries encodes the entries of out for enqueue.
func encodeEntries(out []*provision.OutboxEntry) ([]queuedEntry, error) {
	enc := make([]queuedEntry, len(out))
	for i, e := range out {
		if e == nil {
			continue
		}
		c := *e
		c.Seq = 0
		v, err := json.Marshal(&c)
		if err != nil {
			return nil, fmt.Errorf("encoding outbox entry: %w", err)
		}
		if !bytes.HasPrefix(v, zeroSeq) {
			return nil, fmt.Errorf("encoding outbox entry: %.20q does not start with its seq", v)
		}
		enc[i] = queuedEntry{stats: c.Kind == provision.OutboxStats, v: v}
	}
	return enc, nil
}

// withSeq returns the stored form of an entry encoded by encodeEntries,
// numbered seq.
func withSeq(v []byte, seq uint64) []byte {
	b := make([]byte, 0, len(v)+20)
	b = append(b, zeroSeq[:len(zeroSeq)-1]...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, v[len(zeroSeq):]...)
}

// enqueue appends the entries enc (see encodeEntries) to the outbox of tx
// with the next sequence numbers and returns them (0 for a nil entry). A
// stats entry replaces the pending one: the latest wins.
func enqueue(tx *bolt.Tx, enc []queuedEntry) ([]uint64, error) {
	if len(enc) == 0 {
		return nil, nil
	}
	meta, err := bucket(tx, bucketMeta)
	if err != nil {
		return nil, err
	}
	ob, err := bucket(tx, bucketOutbox)
	if err != nil {
		return nil, err
	}
	var seq uint64
	if v := meta.Get(keyOutboxSeq); v != nil {
		if seq, err = decodeUint64("outbox seq", v); err != nil {
			return nil, err
		}
	}
	seqs := make([]uint64, len(enc))
	for i, e := range enc {
		if e.v == nil {
			continue
		}
		seq++
		if e.stats {
			if old := meta.Get(keyStatsSeq); old != nil {
				if err := ob.Delete(old); err != nil {
					return nil, fmt.Errorf("dropping older stats entry: %w", err)
				}
			}
			if err := meta.Put(keyStatsSeq, be64(seq)); err != nil {
				return nil, err
			}
		}
		if err := ob.Put(be64(seq), withSeq(e.v, seq)); err != nil {
			return nil, fmt.Errorf("enqueuing: %w", err)
		}
		seqs[i] = seq
	}
	if err := meta.Put(keyOutboxSeq, be64(seq)); err != nil {
		return nil, err
	}
	return seqs, nil
}

// setSeqs reports the assigned sequence numbers on the caller's entries.
func setSeqs(out []*provision.OutboxEntry, seqs []uint64) {
	for i, e := range out {
		if e != nil && i < len(seqs) {
			e.Seq = seqs[i]
		}
	}
}

// Enqueue adds entries to the outbox without touching any record (the
// Engine's stats at start), in one transaction, and sets their Seq. It is
// not part of provision.Store.
func (s *Store) Enqueue(out ...*provision.OutboxEntry) error {
	enc, err := encodeEntries(out)
	if err != nil {
		return fmt.Errorf("enqueuing: %w", err)
	}
	var seqs []uint64
	err = s.update("enqueuing", func(tx *bolt.Tx) error {
		var err error
		seqs, err = enqueue(tx, enc)
		return err
	})
	if err != nil {
		return err
	}
	setSeqs(out, seqs)
	return nil
}

// Pending returns up to n waiting entries, oldest first; every waiting
// entry when n <= 0.
func (s *Store) Pending(n int) ([]*provision.OutboxEntry, error) {
	var entries []*provision.OutboxEntry
	err := s.view("reading outbox", func(tx *bolt.Tx) error {
		ob, err := bucket(tx, bucketOutbox)
		if err != nil {
			return err
		}
		c := ob.Cursor()
		for k, v := c.First(); k != nil && (n <= 0 || len(entries) < n); k, v = c.Next() {
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			if e.Seq != binary.BigEndian.Uint64(k) {
				return fmt.Errorf("%w: outbox entry under %x says seq %d", ErrCorrupt, k, e.Seq)
			}
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// Ack removes the entries seqs in one transaction: all or none.
// Acknowledging an absent entry is no error.
func (s *Store) Ack(seqs ...uint64) error {
	if len(seqs) == 0 {
		return nil
	}
	return s.update(fmt.Sprintf("acknowledging %d outbox entries from %d", len(seqs), seqs[0]), func(tx *bolt.Tx) error {
		ob, err := bucket(tx, bucketOutbox)
		if err != nil {
			return err
		}
		meta, err := bucket(tx, bucketMeta)
		if err != nil {
			return err
		}
		stats := bytes.Clone(meta.Get(keyStatsSeq))
		for _, seq := range seqs {
			k := be64(seq)
			if ob.Get(k) == nil {
				continue
			}
			if err := ob.Delete(k); err != nil {
				return err
			}
			if stats != nil && bytes.Equal(stats, k) {
				if err := meta.Delete(keyStatsSeq); err != nil {
					return err
				}
				stats = nil
			}
		}
		return nil
	})
}

// Depth returns how many outbox entries wait.
func (s *Store) Depth() (int, error) {
	var n int
	err := s.view("reading outbox depth", func(tx *bolt.Tx) error {
		ob, err := bucket(tx, bucketOutbox)
		if err != nil {
			return err
		}
		n = ob.Stats().KeyN
		return nil
	})
	return n, err
}

// Cursor returns the stored position of source name (0 when none).
func (s *Store) Cursor(name string) (uint64, error) {
	var pos uint64
	err := s.view("reading cursor "+name, func(tx *bolt.Tx) error {
		cb, err := bucket(tx, bucketCursors)
		if err != nil {
			return err
		}
		if name == "" {
			return nil
		}
		if v := cb.Get([]byte(name)); v != nil {
			pos, err = decodeUint64("cursor "+name, v)
		}
		return err
	})
	return pos, err
}

// SetCursor stores the position of source name. It fails with
// provision.ErrBadField for an empty name.
func (s *Store) SetCursor(name string, pos uint64) error {
	if name == "" {
		return fmt.Errorf("setting cursor: %w: empty name", provision.ErrBadField)
	}
	return s.update("setting cursor "+name, func(tx *bolt.Tx) error {
		cb, err := bucket(tx, bucketCursors)
		if err != nil {
			return err
		}
		return cb.Put([]byte(name), be64(pos))
	})
}
