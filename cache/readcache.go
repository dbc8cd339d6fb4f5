package cache

import (
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edgeprov/provisiond/provision"
)

// readSlots is the number of records the read cache holds at most, and
// readMaxValue the size of the largest stored record it keeps: it holds at
// most 2,048 × 8 KiB of stored records and their decoded copies (typical
// records weigh about 1 KiB; an idle Engine drops them all, see Trim).
//
// Under a burst, about a thousand records wait between their ingest and a
// worker, which reads each again: in BenchmarkEngineThroughput 10,200 of
// 20,000 of those reads missed with 512 slots, 3,500 with 2,048 and 1,800
// with 4,096; 2,048 slots raised the rate by about a tenth.
const (
	readSlots    = 2048
	readMaxValue = 8 << 10
)

// readCache remembers the decoded form of records recently written or
// read, so that reading a record again costs a copy instead of a read
// transaction and a JSON decode: the Engine reads a record right after
// writing it, and again before its next write (to dispatch, under its
// lock). It is direct-mapped: each ID has one slot, which the last write
// or read of a colliding ID takes over.
//
// It is exact, so Get trusts it without reading the database: records are
// written only by Add and Save, and each of their writes, once committed,
// fills its slot from the group's goroutine (commit.Group.QueueThen), in
// commit order. A read fills a slot only with a value read at a snapshot
// no older than the last write that filled that slot (floor), so a read
// that raced a write cannot put back what the write replaced.
type readCache struct {
	seed  maphash.Seed
	held  atomic.Bool // an entry was put since the last clear
	slots [readSlots]readSlot
}

type readSlot struct {
	mu    sync.Mutex
	id    string
	v     []byte            // the stored bytes rec was decoded from
	rec   *provision.Record // never handed out: callers get copies
	txid  uint64            // the transaction v was written in or read at
	floor uint64            // the last transaction that wrote into the slot
}

func newReadCache() *readCache {
	return &readCache{seed: maphash.MakeSeed()}
}

func (c *readCache) slot(id string) *readSlot {
	return &c.slots[maphash.String(c.seed, id)%readSlots]
}

// get returns a copy of the stored record id, or nil when the cache does
// not hold it.
func (c *readCache) get(id string) *provision.Record {
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.id != id {
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

// written records that transaction txid, now committed, stored rec (which
// the cache keeps: the caller gives up its copy) as v. Called in commit
// order. A value larger than readMaxValue is not kept, and drops what the
// slot held of id.
func (c *readCache) written(id string, v []byte, rec *provision.Record, txid uint64) {
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.floor = txid
	if len(v) > readMaxValue {
		if sl.id == id {
			sl.id, sl.v, sl.rec, sl.txid = "", nil, nil, 0
		}
		return
	}
	sl.id, sl.v, sl.rec, sl.txid = id, v, rec, txid
	c.held.Store(true)
}

// read offers rec, decoded from v as read at snapshot txid. It is kept
// unless v is larger than readMaxValue or a write committed after txid
// filled the slot. It keeps v (which must not change any more) and a copy
// of rec.
func (c *readCache) read(id string, v []byte, rec *provision.Record, txid uint64) {
	if len(v) > readMaxValue {
		return
	}
	cp := cloneRecord(rec)
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if txid < sl.floor || (sl.id == id && txid < sl.txid) {
		return
	}
	sl.id, sl.v, sl.rec, sl.txid = id, v, cp, txid
	c.held.Store(true)
}

// cloneRecord returns a deep copy of rec: it shares no memory that a
// caller could change (TestCloneRecordSharesNothing keeps it complete).
func cloneRecord(rec *provision.Record) *provision.Record {
	c := *rec
	c.Reservation = cloneReservation(rec.Reservation)
	if rec.Prior != nil {
		p := *rec.Prior
		p.Reservation = cloneReservation(p.Reservation)
		p.Result = cloneResult(p.Result)
		c.Prior = &p
	}
	c.Result = cloneResult(rec.Result)
	c.FailedUpdate = cloneResult(rec.FailedUpdate)
	if rec.DeleteOf != nil {
		d := *rec.DeleteOf
		c.DeleteOf = &d
	}
	c.History = slices.Clone(rec.History)
	if rec.Refused != nil {
		r := *rec.Refused
		c.Refused = &r
	}
	return &c
}

func cloneReservation(res *provision.Reservation) *provision.Reservation {
	if res == nil {
		return nil
	}
	r := *res
	r.Data = slices.Clone(r.Data)
	r.Result = cloneResult(r.Result)
	if r.Delivered != nil {
		d := *r.Delivered
		r.Delivered = &d
	}
	return &r
}

func cloneResult(res *provision.Result) *provision.Result {
	if res == nil {
		return nil
	}
	c := *res
	c.Data = slices.Clone(res.Data)
	return &c
}

// clear drops every entry (each slot keeps its floor). It is cheap when
// nothing was put since the last clear: the Engine calls it each time it
// goes idle.
func (c *readCache) clear() {
	if !c.held.Swap(false) {
		return
	}
	for i := range c.slots {
		sl := &c.slots[i]
		sl.mu.Lock()
		sl.id, sl.v, sl.rec, sl.txid = "", nil, nil, 0
		sl.mu.Unlock()
	}
}

// removed records that transaction txid, now committed, removed record
// id. Called in commit order, like written.
func (c *readCache) removed(id string, txid uint64) {
	sl := c.slot(id)
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.floor = txid
	if sl.id == id {
		sl.id, sl.v, sl.rec, sl.txid = "", nil, nil, 0
	}
}
