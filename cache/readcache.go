package cache

import (
	"bytes"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgeprov/provisiond/provision"
)

// readSlots is the number of records the read cache holds at most, and
// readMaxValue the size of the largest stored record it keeps: it holds at
// most 512 × 8 KiB of stored records and their decoded copies.
const (
	readSlots    = 512
	readMaxValue = 8 << 10
)

// readCache remembers the decoded form of records recently read, so that
// reading again a record that did not change since costs a comparison of
// its bytes and a copy instead of a JSON decode: the Engine reads a record
// several times between two writes of it (to dispatch, under its lock, and
// before a Save). An entry is used only when the stored bytes are equal to
// those it was decoded from, so it can never be stale. It is direct-mapped:
// each ID has one slot, which the last read of a colliding ID takes over.
type readCache struct {
	seed  maphash.Seed
	held  atomic.Bool // an entry was put since the last clear
	slots [readSlots]readSlot
}

type readSlot struct {
	mu  sync.Mutex
	id  string
	v   []byte            // the stored bytes rec was decoded from
	rec *provision.Record // never handed out: callers get copies
}

func newReadCache() *readCache {
	return &readCache{seed: maphash.MakeSeed()}
}

func (c *readCache) slot(id string) *readSlot {
	return &c.slots[maphash.String(c.seed, id)%readSlots]
}

// get returns a copy of the record id decoded from v, or nil when the
// cache does not hold it. v may be memory of a transaction.
func (c *readCache) get(id string, v []byte) *provision.Record {
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.id != id || !bytes.Equal(sl.v, v) {
		return nil
	}
	return cloneRecord(sl.rec)
}

// index returns the stored bytes of id the cache holds and the index
// entries of the record decoded from them; nil when it holds none.
func (c *readCache) index(id string) ([]byte, indexed) {
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.id != id {
		return nil, indexed{}
	}
	return sl.v, indexOf(sl.rec)
}

// put remembers that rec was decoded from v, unless v is larger than
// readMaxValue. It keeps v (which must not change any more) and a copy of
// rec.
func (c *readCache) put(id string, v []byte, rec *provision.Record) {
	if len(v) > readMaxValue {
		return
	}
	cp := cloneRecord(rec)
	sl := c.slot(id)
	sl.mu.Lock()
	sl.id, sl.v, sl.rec = id, v, cp
	sl.mu.Unlock()
	c.held.Store(true)
}

// cloneRecord returns a deep copy of rec: it shares no memory that a
// caller could change (TestCloneRecordSharesNothing keeps it complete).
func cloneRecord(rec *provision.Record) *provision.Record {
	c := *rec
	if rec.Reservation != nil {
		r := *rec.Reservation
		r.Data = slices.Clone(r.Data)
		r.Result = cloneResult(r.Result)
		c.Reservation = &r
	}
	c.Result = cloneResult(rec.Result)
	c.History = slices.Clone(rec.History)
	return &c
}

func cloneResult(res *provision.Result) *provision.Result {
	if res == nil {
		return nil
	}
	c := *res
	c.Data = slices.Clone(res.Data)
	return &c
}

// clear drops every entry. It is cheap when nothing was put since the
// last clear: the Engine calls it each time it goes idle.
func (c *readCache) clear() {
	if !c.held.Swap(false) {
		return
	}
	for i := range c.slots {
		sl := &c.slots[i]
		sl.mu.Lock()
		sl.id, sl.v, sl.rec = "", nil, nil
		sl.mu.Unlock()
	}
}
