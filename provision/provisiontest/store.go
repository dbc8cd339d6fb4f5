package provisiontest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// Store is an in-memory provision.Store, safe for concurrent use. Records
// and outbox entries are deep-copied on the way in and out, so a caller can
// never change stored state through a pointer it holds. Its zero value is
// not usable; call NewStore.
type Store struct {
	mu      sync.Mutex
	records map[string]*provision.Record
	digests map[string]string // digest → id, kept for final records too
	keys    map[string]string // key → id, live records only
	outbox  map[uint64]*provision.OutboxEntry
	seq     uint64 // last outbox seq assigned
	stats   uint64 // seq of the pending stats entry, 0 when none
	cursors map[string]uint64
}

var (
	_ provision.Store       = (*Store)(nil)
	_ provision.WriteQueuer = (*Store)(nil)
)

// NewStore returns an empty in-memory store.
func NewStore() *Store {
	return &Store{
		records: make(map[string]*provision.Record),
		digests: make(map[string]string),
		keys:    make(map[string]string),
		outbox:  make(map[uint64]*provision.OutboxEntry),
		cursors: make(map[string]uint64),
	}
}

// Add stores a new record with its indexes and enqueues out, all or
// nothing. It fails with provision.ErrExists when the ID is known,
// provision.ErrReplay when another record holds the same non-empty Digest
// and provision.ErrConflict when another live record holds the same
// non-empty Key, and provision.ErrBadField for a record without an ID or
// with an unknown State. A record added in a Final state holds no Key and
// is not in the expiry index. The Seq of every entry of out is set on
// success; nil entries are skipped.
func (s *Store) Add(rec *provision.Record, out ...*provision.OutboxEntry) error {
	c, err := copyRecord(rec)
	if err != nil {
		return fmt.Errorf("adding record: %w", err)
	}
	id := c.ID()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.records[id]; ok {
		return fmt.Errorf("adding record %s: %w", id, provision.ErrExists)
	}
	if err := s.checkIndexes(c); err != nil {
		return fmt.Errorf("adding record %s: %w", id, err)
	}
	entries, err := copyEntries(out)
	if err != nil {
		return fmt.Errorf("adding record %s: %w", id, err)
	}
	s.records[id] = c
	s.index(c)
	s.enqueue(out, entries)
	return nil
}

// Get returns a copy of the record of id, or provision.ErrNotFound.
func (s *Store) Get(id string) (*provision.Record, error) {
	s.mu.Lock()
	c, ok := s.records[id]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("getting record %s: %w", id, provision.ErrNotFound)
	}
	return mustCopy(c), nil
}

// Save overwrites an existing record, updates its indexes and enqueues out,
// all or nothing. It fails with provision.ErrNotFound when the record is
// absent, provision.ErrReplay when its Digest changed to one another record
// holds and provision.ErrConflict when it is live and another live record
// holds its Key. A record entering a Final state leaves the expiry index and
// releases its Key; one leaving a Final state (error → deleting) takes both
// back.
func (s *Store) Save(rec *provision.Record, out ...*provision.OutboxEntry) error {
	c, err := copyRecord(rec)
	if err != nil {
		return fmt.Errorf("saving record: %w", err)
	}
	id := c.ID()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.records[id]
	if !ok {
		return fmt.Errorf("saving record %s: %w", id, provision.ErrNotFound)
	}
	if err := s.checkIndexes(c); err != nil {
		return fmt.Errorf("saving record %s: %w", id, err)
	}
	entries, err := copyEntries(out)
	if err != nil {
		return fmt.Errorf("saving record %s: %w", id, err)
	}
	s.unindex(old)
	s.records[id] = c
	s.index(c)
	s.enqueue(out, entries)
	return nil
}

// QueueAdd adds at once and returns a wait that reports the outcome: a
// memory store has no commit to share, and writing at once keeps the
// order of provision.WriteQueuer.
func (s *Store) QueueAdd(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	err := s.Add(rec, out...)
	return func() error { return err }
}

// QueueSave saves at once and returns a wait that reports the outcome, as
// QueueAdd does.
func (s *Store) QueueSave(rec *provision.Record, out ...*provision.OutboxEntry) (wait func() error) {
	err := s.Save(rec, out...)
	return func() error { return err }
}

// Enqueue adds entries to the outbox without touching any record (the
// Engine's stats at start). It is not part of provision.Store.
func (s *Store) Enqueue(out ...*provision.OutboxEntry) error {
	entries, err := copyEntries(out)
	if err != nil {
		return fmt.Errorf("enqueuing: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.enqueue(out, entries)
	return nil
}

// checkIndexes reports whether c may take its digest and key. s.mu is held.
func (s *Store) checkIndexes(c *provision.Record) error {
	id := c.ID()
	if c.Digest != "" {
		if other, ok := s.digests[c.Digest]; ok && other != id {
			return fmt.Errorf("%w: digest %s is held by %s", provision.ErrReplay, c.Digest, other)
		}
	}
	if c.Key != "" && !c.State.Final() {
		if other, ok := s.keys[c.Key]; ok && other != id {
			return fmt.Errorf("%w: key %s is held by %s", provision.ErrConflict, c.Key, other)
		}
	}
	return nil
}

// index records c in the digest and key indexes. s.mu is held.
func (s *Store) index(c *provision.Record) {
	if c.Digest != "" {
		s.digests[c.Digest] = c.ID()
	}
	if c.Key != "" && !c.State.Final() {
		s.keys[c.Key] = c.ID()
	}
}

// unindex removes c from the digest and key indexes. s.mu is held.
func (s *Store) unindex(c *provision.Record) {
	if c.Digest != "" && s.digests[c.Digest] == c.ID() {
		delete(s.digests, c.Digest)
	}
	if c.Key != "" && s.keys[c.Key] == c.ID() {
		delete(s.keys, c.Key)
	}
}

// enqueue appends entries (copies of out) with fresh sequence numbers and
// reports each on the caller's entry. s.mu is held.
func (s *Store) enqueue(out, entries []*provision.OutboxEntry) {
	for i, e := range entries {
		if e == nil {
			continue
		}
		s.seq++
		e.Seq = s.seq
		out[i].Seq = s.seq
		if e.Kind == provision.OutboxStats {
			if s.stats != 0 {
				delete(s.outbox, s.stats)
			}
			s.stats = e.Seq
		}
		s.outbox[e.Seq] = e
	}
}

// Scan calls fn with a copy of every record in one of states (every record
// when none are given), in ID order, and stops at the first error fn
// returns. fn may call the store: it sees the records as they were when
// Scan began.
func (s *Store) Scan(fn func(*provision.Record) error, states ...provision.State) error {
	s.mu.Lock()
	var recs []*provision.Record
	for _, r := range s.records {
		if len(states) == 0 || slices.Contains(states, r.State) {
			recs = append(recs, mustCopy(r))
		}
	}
	s.mu.Unlock()
	sort.Slice(recs, func(i, j int) bool { return recs[i].ID() < recs[j].ID() })
	for _, r := range recs {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

// Expired returns the IDs of records not in a Final state whose
// reservation expired at or before now, in expiry order (ID order among
// equal expiries). Unlike the bbolt store it looks at every record.
func (s *Store) Expired(now time.Time) ([]string, error) {
	live := s.live()
	var ids []string
	for _, l := range live {
		if l.at.After(now) {
			break
		}
		ids = append(ids, l.id)
	}
	return ids, nil
}

// NextExpiry returns the earliest expiry among records not in a Final
// state; false when there is none.
func (s *Store) NextExpiry() (time.Time, bool, error) {
	live := s.live()
	if len(live) == 0 {
		return time.Time{}, false, nil
	}
	return live[0].at, true, nil
}

type expiry struct {
	at time.Time
	id string
}

// live returns the expiries of records not in a Final state, in order.
func (s *Store) live() []expiry {
	s.mu.Lock()
	var live []expiry
	for id, r := range s.records {
		if !r.State.Final() {
			live = append(live, expiry{at: r.Reservation.Expires(), id: id})
		}
	}
	s.mu.Unlock()
	sort.Slice(live, func(i, j int) bool {
		if c := live[i].at.Compare(live[j].at); c != 0 {
			return c < 0
		}
		return live[i].id < live[j].id
	})
	return live
}

// Owner returns the ID of the live record holding key, or
// provision.ErrNotFound.
func (s *Store) Owner(key string) (string, error) {
	s.mu.Lock()
	id, ok := s.keys[key]
	s.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("looking up owner of key %s: %w", key, provision.ErrNotFound)
	}
	return id, nil
}

// Pending returns copies of up to n waiting entries, oldest first; every
// waiting entry when n <= 0.
func (s *Store) Pending(n int) ([]*provision.OutboxEntry, error) {
	s.mu.Lock()
	seqs := make([]uint64, 0, len(s.outbox))
	for seq := range s.outbox {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	if n > 0 && len(seqs) > n {
		seqs = seqs[:n]
	}
	entries := make([]*provision.OutboxEntry, 0, len(seqs))
	for _, seq := range seqs {
		entries = append(entries, s.outbox[seq])
	}
	s.mu.Unlock()
	out, err := copyEntries(entries)
	if err != nil {
		return nil, fmt.Errorf("reading outbox: %w", err)
	}
	return out, nil
}

// Ack removes the entries seqs, all at once. Acknowledging an absent entry
// is no error.
func (s *Store) Ack(seqs ...uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, seq := range seqs {
		delete(s.outbox, seq)
		if s.stats == seq {
			s.stats = 0
		}
	}
	return nil
}

// Depth returns how many outbox entries wait.
func (s *Store) Depth() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.outbox), nil
}

// Cursor returns the stored position of source name (0 when none).
func (s *Store) Cursor(name string) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[name], nil
}

// SetCursor stores the position of source name. It fails with
// provision.ErrBadField for an empty name.
func (s *Store) SetCursor(name string, pos uint64) error {
	if name == "" {
		return fmt.Errorf("setting cursor: %w: empty name", provision.ErrBadField)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursors[name] = pos
	return nil
}

// copyRecord checks rec and returns a deep copy of it.
func copyRecord(rec *provision.Record) (*provision.Record, error) {
	if rec == nil || rec.Reservation == nil || rec.Reservation.ID == "" {
		return nil, fmt.Errorf("%w: record without a reservation id", provision.ErrBadField)
	}
	if !slices.Contains(provision.States, rec.State) {
		return nil, fmt.Errorf("%w: record %s has unknown state %q", provision.ErrBadField, rec.Reservation.ID, rec.State)
	}
	var c provision.Record
	if err := deepCopy(&c, rec); err != nil {
		return nil, fmt.Errorf("copying record %s: %w", rec.Reservation.ID, err)
	}
	return &c, nil
}

// mustCopy copies a record the store already copied once; it cannot fail.
func mustCopy(rec *provision.Record) *provision.Record {
	c, err := copyRecord(rec)
	if err != nil {
		panic(fmt.Sprintf("provisiontest: stored record does not copy: %v", err))
	}
	return c
}

// copyEntries deep-copies entries; nil entries stay nil.
func copyEntries(entries []*provision.OutboxEntry) ([]*provision.OutboxEntry, error) {
	out := make([]*provision.OutboxEntry, len(entries))
	for i, e := range entries {
		if e == nil {
			continue
		}
		var c provision.OutboxEntry
		if err := deepCopy(&c, e); err != nil {
			return nil, fmt.Errorf("copying outbox entry: %w", err)
		}
		out[i] = &c
	}
	return out, nil
}

func deepCopy(dst, src any) error {
	b, err := json.Marshal(src)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, dst)
}
