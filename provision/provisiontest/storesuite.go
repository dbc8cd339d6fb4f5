package provisiontest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// SuiteEpoch is the Created time of the records the store suite builds.
var SuiteEpoch = time.Date(2030, time.January, 1, 0, 0, 0, 0, time.UTC)

// Enqueuer is the optional part of a store that enqueues outbox entries
// without a record change (the Engine's stats at start).
type Enqueuer interface {
	Enqueue(out ...*provision.OutboxEntry) error
}

// NewRecord returns a valid-looking record for the store suite and for
// benchmarks: a volume reservation id created at SuiteEpoch that lives
// life, in state st, with the given Key. Its content (and so its Digest)
// differs for every id.
func NewRecord(id string, st provision.State, life time.Duration, key string) *provision.Record {
	r := &provision.Reservation{
		ID:        id,
		NodeID:    "node-suite",
		UserID:    "5b1f0c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3",
		Type:      provision.VolumeReservation,
		Data:      json.RawMessage(`{"size": 1, "type": "ssd", "note": "<&>"}`),
		Created:   SuiteEpoch,
		Duration:  life,
		Signature: "00",
		Reference: "ref-" + id,
	}
	return &provision.Record{
		Reservation: r,
		Digest:      r.Digest(),
		State:       st,
		Key:         key,
		Units:       provision.Units{SRU: 1},
		History:     []provision.Transition{{State: st, At: SuiteEpoch}},
		Updated:     SuiteEpoch,
	}
}

// RunStoreSuite runs the conformance suite of provision.Store against the
// stores open returns; open must return a new, empty store on each call
// and close it through t.Cleanup.
func RunStoreSuite(t *testing.T, open func(t testing.TB) provision.Store) {
	t.Run("add", func(t *testing.T) { testAdd(t, open) })
	t.Run("get", func(t *testing.T) { testGet(t, open) })
	t.Run("save", func(t *testing.T) { testSave(t, open) })
	t.Run("expired", func(t *testing.T) { testExpired(t, open) })
	t.Run("next-expiry", func(t *testing.T) { testNextExpiry(t, open) })
	t.Run("owner", func(t *testing.T) { testOwner(t, open) })
	t.Run("scan", func(t *testing.T) { testScan(t, open) })
	t.Run("outbox", func(t *testing.T) { testOutbox(t, open) })
	t.Run("enqueue", func(t *testing.T) { testEnqueue(t, open) })
	t.Run("cursors", func(t *testing.T) { testCursors(t, open) })
	t.Run("concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("queue-save", func(t *testing.T) { testQueueSave(t, open) })
}

const hour = time.Hour

func result(id string) *provision.OutboxEntry {
	return &provision.OutboxEntry{
		Kind:    provision.OutboxResult,
		Result:  &provision.Result{ID: id, State: provision.StateOk, Created: SuiteEpoch},
		Created: SuiteEpoch,
	}
}

func stats(cru uint64) *provision.OutboxEntry {
	return &provision.OutboxEntry{
		Kind:    provision.OutboxStats,
		Stats:   &provision.Stats{Used: provision.Units{CRU: cru}, Updated: SuiteEpoch},
		Created: SuiteEpoch,
	}
}

func mustAdd(t testing.TB, s provision.Store, recs ...*provision.Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Add(r); err != nil {
			t.Fatalf("Add(%s): %v", r.ID(), err)
		}
	}
}

func mustGet(t testing.TB, s provision.Store, id string) *provision.Record {
	t.Helper()
	r, err := s.Get(id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return r
}

func depth(t testing.TB, s provision.Store) int {
	t.Helper()
	n, err := s.Depth()
	if err != nil {
		t.Fatalf("Depth: %v", err)
	}
	return n
}

func pendingSeqs(t testing.TB, s provision.Store, n int) []uint64 {
	t.Helper()
	entries, err := s.Pending(n)
	if err != nil {
		t.Fatalf("Pending(%d): %v", n, err)
	}
	seqs := make([]uint64, 0, len(entries))
	for _, e := range entries {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

func expired(t testing.TB, s provision.Store, now time.Time) []string {
	t.Helper()
	ids, err := s.Expired(now)
	if err != nil {
		t.Fatalf("Expired(%s): %v", now, err)
	}
	return ids
}

func owner(t testing.TB, s provision.Store, key string) string {
	t.Helper()
	id, err := s.Owner(key)
	if errors.Is(err, provision.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("Owner(%s): %v", key, err)
	}
	return id
}

func scanIDs(t testing.TB, s provision.Store, states ...provision.State) []string {
	t.Helper()
	var ids []string
	err := s.Scan(func(r *provision.Record) error {
		ids = append(ids, r.ID())
		return nil
	}, states...)
	if err != nil {
		t.Fatalf("Scan(%v): %v", states, err)
	}
	slices.Sort(ids)
	return ids
}

func testAdd(t *testing.T, open func(t testing.TB) provision.Store) {
	replay := NewRecord("b", provision.Accepted, hour, "")
	replay.Digest = NewRecord("a", provision.Accepted, hour, "").Digest
	tests := []struct {
		name    string
		setup   []*provision.Record
		add     *provision.Record
		wantErr error
	}{
		{name: "new", add: NewRecord("a", provision.Accepted, hour, "")},
		{name: "new-with-key", add: NewRecord("a", provision.Accepted, hour, "k")},
		{name: "new-final", add: NewRecord("a", provision.Deleted, hour, "k")},
		{
			name:    "same-id",
			setup:   []*provision.Record{NewRecord("a", provision.Deployed, hour, "")},
			add:     NewRecord("a", provision.Accepted, 2*hour, ""),
			wantErr: provision.ErrExists,
		},
		{
			name:    "same-digest-other-id",
			setup:   []*provision.Record{NewRecord("a", provision.Deployed, hour, "")},
			add:     replay,
			wantErr: provision.ErrReplay,
		},
		{
			name:    "same-digest-of-final-record",
			setup:   []*provision.Record{NewRecord("a", provision.Deleted, hour, "")},
			add:     replay,
			wantErr: provision.ErrReplay,
		},
		{
			name:    "same-key-live",
			setup:   []*provision.Record{NewRecord("a", provision.Deployed, hour, "k")},
			add:     NewRecord("b", provision.Accepted, hour, "k"),
			wantErr: provision.ErrConflict,
		},
		{
			name:  "same-key-final",
			setup: []*provision.Record{NewRecord("a", provision.Failed, hour, "k")},
			add:   NewRecord("b", provision.Accepted, hour, "k"),
		},
		{
			name:  "final-record-does-not-take-key",
			setup: []*provision.Record{NewRecord("a", provision.Accepted, hour, "k")},
			add:   NewRecord("b", provision.Deleted, hour, "k"),
		},
		{
			name:  "empty-key-never-conflicts",
			setup: []*provision.Record{NewRecord("a", provision.Deployed, hour, "")},
			add:   NewRecord("b", provision.Accepted, hour, ""),
		},
		{name: "nil-record", add: nil, wantErr: provision.ErrBadField},
		{name: "no-reservation", add: &provision.Record{State: provision.Accepted}, wantErr: provision.ErrBadField},
		{name: "empty-id", add: NewRecord("", provision.Accepted, hour, ""), wantErr: provision.ErrBadField},
		{name: "unknown-state", add: NewRecord("a", provision.State("paused"), hour, ""), wantErr: provision.ErrBadField},
		{name: "empty-state", add: NewRecord("a", "", hour, ""), wantErr: provision.ErrBadField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, tt.setup...)
			before := make(map[string]*provision.Record)
			for _, r := range tt.setup {
				before[r.ID()] = mustGet(t, s, r.ID())
			}
			e := result("x")
			err := s.Add(tt.add, e)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Add: got error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if n := depth(t, s); n != 0 {
					t.Errorf("failed Add left %d outbox entries, want 0", n)
				}
				for id, want := range before {
					if got := mustGet(t, s, id); got.State != want.State || got.Digest != want.Digest || got.Key != want.Key {
						t.Errorf("failed Add changed record %s: %+v, want %+v", id, got, want)
					}
				}
				if tt.add != nil && tt.add.Reservation != nil && tt.add.ID() != "" && before[tt.add.ID()] == nil {
					if _, err := s.Get(tt.add.ID()); !errors.Is(err, provision.ErrNotFound) {
						t.Errorf("failed Add stored the record: Get error %v", err)
					}
				}
				return
			}
			got := mustGet(t, s, tt.add.ID())
			if got.State != tt.add.State || got.Digest != tt.add.Digest || got.Key != tt.add.Key {
				t.Errorf("Get after Add: %+v, want %+v", got, tt.add)
			}
			if e.Seq == 0 {
				t.Error("Add did not assign a Seq to its outbox entry")
			}
			if n := depth(t, s); n != 1 {
				t.Errorf("Depth after Add with one entry: %d, want 1", n)
			}
			if tt.add.Key != "" {
				got := owner(t, s, tt.add.Key)
				if live := !tt.add.State.Final(); live != (got == tt.add.ID()) {
					t.Errorf("Owner(%s) = %q for a record in state %s", tt.add.Key, got, tt.add.State)
				}
			}
		})
	}
}

func testGet(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name  string
		check func(t *testing.T, s provision.Store)
	}{
		{"not-found", func(t *testing.T, s provision.Store) {
			if _, err := s.Get("nope"); !errors.Is(err, provision.ErrNotFound) {
				t.Errorf("Get(nope): %v, want ErrNotFound", err)
			}
		}},
		{"round-trip", func(t *testing.T, s provision.Store) {
			in := NewRecord("a", provision.Deployed, hour, "k")
			in.Units = provision.Units{CRU: 2, MRU: 0.5, SRU: 1.25, HRU: 3}
			in.Attempts, in.Failures = 2, 1
			in.Result = &provision.Result{ID: "a", State: provision.StateOk, Data: json.RawMessage(`{"path":"/x"}`), Created: SuiteEpoch}
			mustAdd(t, s, in)
			got := mustGet(t, s, "a")
			if got.Units != in.Units || got.Attempts != 2 || got.Failures != 1 || got.Result == nil || got.Result.ID != "a" {
				t.Errorf("Get: %+v, want %+v", got, in)
			}
			if !got.Reservation.Created.Equal(in.Reservation.Created) || got.Reservation.Duration != in.Reservation.Duration {
				t.Errorf("Get: reservation times %v/%v, want %v/%v", got.Reservation.Created, got.Reservation.Duration, in.Reservation.Created, in.Reservation.Duration)
			}
			if d := got.Reservation.Digest(); d != in.Digest {
				t.Errorf("digest after round trip %s, want %s", d, in.Digest)
			}
		}},
		{"input-copied", func(t *testing.T, s provision.Store) {
			in := NewRecord("a", provision.Accepted, hour, "")
			mustAdd(t, s, in)
			in.State = provision.Deleted
			in.Reservation.Reference = "changed"
			in.History[0].Message = "changed"
			got := mustGet(t, s, "a")
			if got.State != provision.Accepted || got.Reservation.Reference != "ref-a" || got.History[0].Message != "" {
				t.Errorf("store shares memory with the added record: %+v", got)
			}
		}},
		{"output-copied", func(t *testing.T, s provision.Store) {
			mustAdd(t, s, NewRecord("a", provision.Accepted, hour, ""))
			got := mustGet(t, s, "a")
			got.State = provision.Deleted
			got.Reservation.Reference = "changed"
			got.History[0].Message = "changed"
			again := mustGet(t, s, "a")
			if again.State != provision.Accepted || again.Reservation.Reference != "ref-a" || again.History[0].Message != "" {
				t.Errorf("store shares memory with a returned record: %+v", again)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.check(t, open(t)) })
	}
}

func testSave(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name    string
		setup   []*provision.Record
		save    func() *provision.Record
		wantErr error
		// owners maps keys to the ID that must own them after the Save ("" for none).
		owners map[string]string
		// expired lists what Expired(far future) returns after the Save.
		expired []string
	}{
		{
			name:    "absent",
			save:    func() *provision.Record { return NewRecord("a", provision.Accepted, hour, "") },
			wantErr: provision.ErrNotFound,
		},
		{
			name:    "update-state",
			setup:   []*provision.Record{NewRecord("a", provision.Accepted, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Deployed, hour, "k") },
			owners:  map[string]string{"k": "a"},
			expired: []string{"a"},
		},
		{
			name:    "final-releases-key-and-expiry",
			setup:   []*provision.Record{NewRecord("a", provision.Deployed, hour, "k"), NewRecord("b", provision.Deployed, 2*hour, "")},
			save:    func() *provision.Record { return NewRecord("a", provision.Deleted, hour, "k") },
			owners:  map[string]string{"k": ""},
			expired: []string{"b"},
		},
		{
			name:    "failed-releases-key-and-expiry",
			setup:   []*provision.Record{NewRecord("a", provision.Provisioning, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Failed, hour, "k") },
			owners:  map[string]string{"k": ""},
			expired: nil,
		},
		{
			name:    "leaving-final-takes-key-and-expiry",
			setup:   []*provision.Record{NewRecord("a", provision.Failed, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Deleting, hour, "k") },
			owners:  map[string]string{"k": "a"},
			expired: []string{"a"},
		},
		{
			name:    "leaving-final-key-taken",
			setup:   []*provision.Record{NewRecord("a", provision.Failed, hour, "k"), NewRecord("b", provision.Deployed, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Deleting, hour, "k") },
			wantErr: provision.ErrConflict,
		},
		{
			name:    "key-changed",
			setup:   []*provision.Record{NewRecord("a", provision.Accepted, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Accepted, hour, "j") },
			owners:  map[string]string{"k": "", "j": "a"},
			expired: []string{"a"},
		},
		{
			name:    "key-taken",
			setup:   []*provision.Record{NewRecord("a", provision.Accepted, hour, ""), NewRecord("b", provision.Deployed, hour, "k")},
			save:    func() *provision.Record { return NewRecord("a", provision.Accepted, hour, "k") },
			wantErr: provision.ErrConflict,
		},
		{
			name:  "digest-taken",
			setup: []*provision.Record{NewRecord("a", provision.Accepted, hour, ""), NewRecord("b", provision.Deployed, hour, "")},
			save: func() *provision.Record {
				r := NewRecord("a", provision.Accepted, hour, "")
				r.Digest = NewRecord("b", provision.Deployed, hour, "").Digest
				return r
			},
			wantErr: provision.ErrReplay,
		},
		{
			name:    "unknown-state",
			setup:   []*provision.Record{NewRecord("a", provision.Accepted, hour, "")},
			save:    func() *provision.Record { return NewRecord("a", provision.State("paused"), hour, "") },
			wantErr: provision.ErrBadField,
		},
		{
			name:    "expiry-moved",
			setup:   []*provision.Record{NewRecord("a", provision.Deployed, hour, ""), NewRecord("b", provision.Deployed, 2*hour, "")},
			save:    func() *provision.Record { return NewRecord("a", provision.Deployed, 3*hour, "") },
			expired: []string{"b", "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, tt.setup...)
			rec := tt.save()
			e := result(rec.ID())
			err := s.Save(rec, e)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Save: got error %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if n := depth(t, s); n != 0 {
					t.Errorf("failed Save left %d outbox entries, want 0", n)
				}
				for _, r := range tt.setup {
					if got := mustGet(t, s, r.ID()); got.State != r.State || got.Key != r.Key || got.Digest != r.Digest {
						t.Errorf("failed Save changed %s: %+v, want %+v", r.ID(), got, r)
					}
				}
				return
			}
			if got := mustGet(t, s, rec.ID()); got.State != rec.State || got.Key != rec.Key || !got.Reservation.Expires().Equal(rec.Reservation.Expires()) {
				t.Errorf("Get after Save: %+v, want %+v", got, rec)
			}
			if e.Seq == 0 || depth(t, s) != 1 {
				t.Errorf("Save did not enqueue its entry: seq %d, depth %d", e.Seq, depth(t, s))
			}
			for key, want := range tt.owners {
				if got := owner(t, s, key); got != want {
					t.Errorf("Owner(%s) = %q, want %q", key, got, want)
				}
			}
			if got := expired(t, s, SuiteEpoch.Add(1000*hour)); !slices.Equal(got, tt.expired) {
				t.Errorf("Expired after Save = %v, want %v", got, tt.expired)
			}
		})
	}
}

func testExpired(t *testing.T, open func(t testing.TB) provision.Store) {
	mixed := []*provision.Record{
		NewRecord("a-deployed-1h", provision.Deployed, hour, ""),
		NewRecord("b-accepted-2h", provision.Accepted, 2*hour, ""),
		NewRecord("c-deleted-1h", provision.Deleted, hour, ""),
		NewRecord("d-error-30m", provision.Failed, 30*time.Minute, ""),
		NewRecord("e-deleting-30m", provision.Deleting, 30*time.Minute, ""),
		NewRecord("f-provisioning-3h", provision.Provisioning, 3*hour, ""),
		NewRecord("0-deployed-2h", provision.Deployed, 2*hour, ""),
	}
	tests := []struct {
		name  string
		setup []*provision.Record
		now   time.Time
		want  []string
	}{
		{name: "empty-store", now: SuiteEpoch.Add(1000 * hour)},
		{name: "nothing-expired", setup: mixed, now: SuiteEpoch.Add(10 * time.Minute)},
		{name: "before-first", setup: mixed, now: SuiteEpoch.Add(30*time.Minute - 1)},
		{name: "boundary-included", setup: mixed, now: SuiteEpoch.Add(30 * time.Minute), want: []string{"e-deleting-30m"}},
		{name: "mix-of-states", setup: mixed, now: SuiteEpoch.Add(90 * time.Minute), want: []string{"e-deleting-30m", "a-deployed-1h"}},
		{name: "ties-in-id-order", setup: mixed, now: SuiteEpoch.Add(2 * hour), want: []string{"e-deleting-30m", "a-deployed-1h", "0-deployed-2h", "b-accepted-2h"}},
		{name: "all-live", setup: mixed, now: SuiteEpoch.Add(1000 * hour), want: []string{"e-deleting-30m", "a-deployed-1h", "0-deployed-2h", "b-accepted-2h", "f-provisioning-3h"}},
		{name: "other-time-zone", setup: mixed, now: SuiteEpoch.Add(hour).In(time.FixedZone("x", 5*3600)), want: []string{"e-deleting-30m", "a-deployed-1h"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, tt.setup...)
			if got := expired(t, s, tt.now); !slices.Equal(got, tt.want) {
				t.Errorf("Expired(%s) = %v, want %v", tt.now, got, tt.want)
			}
		})
	}
}

func testNextExpiry(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name   string
		setup  []*provision.Record
		want   time.Time
		wantOK bool
	}{
		{name: "empty-store"},
		{name: "only-final", setup: []*provision.Record{NewRecord("a", provision.Deleted, hour, ""), NewRecord("b", provision.Failed, hour, "")}},
		{
			name: "earliest-live",
			setup: []*provision.Record{
				NewRecord("a", provision.Deleted, 10*time.Minute, ""),
				NewRecord("b", provision.Deployed, 2*hour, ""),
				NewRecord("c", provision.Accepted, hour, ""),
			},
			want: SuiteEpoch.Add(hour), wantOK: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, tt.setup...)
			got, ok, err := s.NextExpiry()
			if err != nil {
				t.Fatalf("NextExpiry: %v", err)
			}
			if ok != tt.wantOK || !got.Equal(tt.want) {
				t.Errorf("NextExpiry = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func testOwner(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name  string
		setup []*provision.Record
		key   string
		want  string
	}{
		{name: "unknown-key", key: "k"},
		{name: "live-owner", setup: []*provision.Record{NewRecord("a", provision.Deployed, hour, "k")}, key: "k", want: "a"},
		{name: "accepted-owner", setup: []*provision.Record{NewRecord("a", provision.Accepted, hour, "k")}, key: "k", want: "a"},
		{name: "final-owner", setup: []*provision.Record{NewRecord("a", provision.Deleted, hour, "k")}, key: "k"},
		{
			name:  "new-owner-after-final",
			setup: []*provision.Record{NewRecord("a", provision.Failed, hour, "k"), NewRecord("b", provision.Accepted, hour, "k")},
			key:   "k", want: "b",
		},
		{name: "empty-key", setup: []*provision.Record{NewRecord("a", provision.Deployed, hour, "")}, key: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, tt.setup...)
			id, err := s.Owner(tt.key)
			if tt.want == "" {
				if !errors.Is(err, provision.ErrNotFound) {
					t.Errorf("Owner(%q) = %q, %v; want ErrNotFound", tt.key, id, err)
				}
				return
			}
			if err != nil || id != tt.want {
				t.Errorf("Owner(%q) = %q, %v; want %q", tt.key, id, err, tt.want)
			}
		})
	}
}

func testScan(t *testing.T, open func(t testing.TB) provision.Store) {
	setup := []*provision.Record{
		NewRecord("a", provision.Accepted, hour, ""),
		NewRecord("b", provision.Deployed, hour, ""),
		NewRecord("c", provision.Deployed, hour, ""),
		NewRecord("d", provision.Deleted, hour, ""),
		NewRecord("e", provision.Deleting, hour, ""),
		NewRecord("f", provision.Failed, hour, ""),
	}
	tests := []struct {
		name   string
		states []provision.State
		want   []string
	}{
		{name: "all", want: []string{"a", "b", "c", "d", "e", "f"}},
		{name: "one-state", states: []provision.State{provision.Deployed}, want: []string{"b", "c"}},
		{name: "active", states: []provision.State{provision.Provisioning, provision.Deployed, provision.Deleting}, want: []string{"b", "c", "e"}},
		{name: "final", states: []provision.State{provision.Deleted, provision.Failed}, want: []string{"d", "f"}},
		{name: "repeated-state", states: []provision.State{provision.Deployed, provision.Deployed}, want: []string{"b", "c"}},
		{name: "empty-state", states: []provision.State{provision.Provisioning}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			mustAdd(t, s, setup...)
			if got := scanIDs(t, s, tt.states...); !slices.Equal(got, tt.want) {
				t.Errorf("Scan(%v) = %v, want %v", tt.states, got, tt.want)
			}
		})
	}
	t.Run("after-save", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, setup...)
		if err := s.Save(NewRecord("b", provision.Deleting, hour, "")); err != nil {
			t.Fatal(err)
		}
		if got, want := scanIDs(t, s, provision.Deployed), []string{"c"}; !slices.Equal(got, want) {
			t.Errorf("Scan(deployed) = %v, want %v", got, want)
		}
		if got, want := scanIDs(t, s, provision.Deleting), []string{"b", "e"}; !slices.Equal(got, want) {
			t.Errorf("Scan(deleting) = %v, want %v", got, want)
		}
	})
	t.Run("stops-on-error", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, setup...)
		stop := errors.New("stop")
		calls := 0
		err := s.Scan(func(*provision.Record) error {
			calls++
			if calls == 2 {
				return stop
			}
			return nil
		})
		if !errors.Is(err, stop) || calls != 2 {
			t.Errorf("Scan returned %v after %d calls, want %v after 2", err, calls, stop)
		}
	})
	t.Run("fn-may-write", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, setup...)
		err := s.Scan(func(r *provision.Record) error {
			r.Move(provision.Deleting, SuiteEpoch, "scan")
			return s.Save(r, result(r.ID()))
		}, provision.Deployed)
		if err != nil {
			t.Fatalf("Scan with a writing fn: %v", err)
		}
		if got, want := scanIDs(t, s, provision.Deleting), []string{"b", "c", "e"}; !slices.Equal(got, want) {
			t.Errorf("Scan(deleting) = %v, want %v", got, want)
		}
	})
	t.Run("records-are-copies", func(t *testing.T) {
		s := open(t)
		mustAdd(t, s, setup...)
		err := s.Scan(func(r *provision.Record) error {
			r.State = provision.Deleted
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := mustGet(t, s, "a"); got.State != provision.Accepted {
			t.Errorf("changing a scanned record changed the store: state %s", got.State)
		}
	})
}

func testOutbox(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name string
		run  func(t *testing.T, s provision.Store)
	}{
		{"empty", func(t *testing.T, s provision.Store) {
			if n := depth(t, s); n != 0 {
				t.Errorf("Depth = %d, want 0", n)
			}
			if got := pendingSeqs(t, s, 10); len(got) != 0 {
				t.Errorf("Pending = %v, want none", got)
			}
			if err := s.Ack(42); err != nil {
				t.Errorf("Ack of an absent entry: %v", err)
			}
			if err := s.Ack(); err != nil {
				t.Errorf("Ack of nothing: %v", err)
			}
		}},
		{"increasing-seq", func(t *testing.T, s provision.Store) {
			e1, e2, e3 := result("a"), result("a"), result("b")
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), e1, e2); err != nil {
				t.Fatal(err)
			}
			if err := s.Add(NewRecord("b", provision.Accepted, hour, ""), e3); err != nil {
				t.Fatal(err)
			}
			if e1.Seq == 0 || e2.Seq <= e1.Seq || e3.Seq <= e2.Seq {
				t.Errorf("seqs %d, %d, %d are not increasing", e1.Seq, e2.Seq, e3.Seq)
			}
			if got, want := pendingSeqs(t, s, 0), []uint64{e1.Seq, e2.Seq, e3.Seq}; !slices.Equal(got, want) {
				t.Errorf("Pending(0) = %v, want %v", got, want)
			}
		}},
		{"pending-oldest-first-limited", func(t *testing.T, s provision.Store) {
			var seqs []uint64
			mustAdd(t, s, NewRecord("a", provision.Accepted, hour, ""))
			for i := range 5 {
				e := result(fmt.Sprint(i))
				if err := s.Save(NewRecord("a", provision.Accepted, hour, ""), e); err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, e.Seq)
			}
			if got := pendingSeqs(t, s, 3); !slices.Equal(got, seqs[:3]) {
				t.Errorf("Pending(3) = %v, want %v", got, seqs[:3])
			}
			entries, err := s.Pending(1)
			if err != nil || len(entries) != 1 || entries[0].Result == nil || entries[0].Result.ID != "0" || entries[0].Kind != provision.OutboxResult {
				t.Errorf("Pending(1) = %+v, %v; want the first result", entries, err)
			}
			if n := depth(t, s); n != 5 {
				t.Errorf("Depth = %d, want 5", n)
			}
		}},
		{"ack", func(t *testing.T, s provision.Store) {
			e1, e2, e3 := result("a"), result("a"), result("a")
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), e1, e2, e3); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := s.Ack(e2.Seq); err != nil {
					t.Fatalf("Ack(%d): %v", e2.Seq, err)
				}
			}
			if got, want := pendingSeqs(t, s, 10), []uint64{e1.Seq, e3.Seq}; !slices.Equal(got, want) {
				t.Errorf("Pending after Ack = %v, want %v", got, want)
			}
			if n := depth(t, s); n != 2 {
				t.Errorf("Depth = %d, want 2", n)
			}
			e4 := result("a")
			if err := s.Save(NewRecord("a", provision.Deployed, hour, ""), e4); err != nil {
				t.Fatal(err)
			}
			if e4.Seq <= e3.Seq {
				t.Errorf("seq %d after ack is not above %d", e4.Seq, e3.Seq)
			}
		}},
		{"ack-several", func(t *testing.T, s provision.Store) {
			e1, e2, e3, st := result("a"), result("a"), result("a"), stats(1)
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), e1, e2, st, e3); err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(e3.Seq, 999, st.Seq, e1.Seq, e1.Seq); err != nil {
				t.Fatalf("Ack: %v", err)
			}
			if got, want := pendingSeqs(t, s, 0), []uint64{e2.Seq}; !slices.Equal(got, want) {
				t.Errorf("Pending after Ack = %v, want %v", got, want)
			}
			// The acknowledged stats entry is gone: a new one is pending
			// beside the result, and replaces nothing but its own kind.
			s2 := stats(2)
			if err := s.Enqueue(s2); err != nil {
				t.Fatal(err)
			}
			if got, want := pendingSeqs(t, s, 0), []uint64{e2.Seq, s2.Seq}; !slices.Equal(got, want) {
				t.Errorf("Pending after a new stats entry = %v, want %v", got, want)
			}
		}},
		{"stats-latest-wins", func(t *testing.T, s provision.Store) {
			r1, s1 := result("a"), stats(1)
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), r1, s1); err != nil {
				t.Fatal(err)
			}
			r2, s2 := result("a"), stats(2)
			if err := s.Save(NewRecord("a", provision.Deployed, hour, ""), s2, r2); err != nil {
				t.Fatal(err)
			}
			entries, err := s.Pending(0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				switch e.Kind {
				case provision.OutboxStats:
					got = append(got, fmt.Sprintf("stats-%d", e.Stats.Used.CRU))
				default:
					got = append(got, "result")
				}
			}
			if want := []string{"result", "stats-2", "result"}; !slices.Equal(got, want) {
				t.Errorf("pending kinds %v, want %v", got, want)
			}
		}},
		{"stats-twice-in-one-save", func(t *testing.T, s provision.Store) {
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), stats(1), stats(2)); err != nil {
				t.Fatal(err)
			}
			entries, err := s.Pending(0)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 1 || entries[0].Stats == nil || entries[0].Stats.Used.CRU != 2 {
				t.Errorf("Pending = %+v, want only stats 2", entries)
			}
		}},
		{"stats-after-ack", func(t *testing.T, s provision.Store) {
			s1 := stats(1)
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), s1); err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(s1.Seq); err != nil {
				t.Fatal(err)
			}
			s2, s3 := stats(2), stats(3)
			if err := s.Save(NewRecord("a", provision.Deployed, hour, ""), s2); err != nil {
				t.Fatal(err)
			}
			if got := pendingSeqs(t, s, 0); !slices.Equal(got, []uint64{s2.Seq}) {
				t.Errorf("Pending = %v, want [%d]", got, s2.Seq)
			}
			if err := s.Save(NewRecord("a", provision.Deployed, hour, ""), s3); err != nil {
				t.Fatal(err)
			}
			if got := pendingSeqs(t, s, 0); !slices.Equal(got, []uint64{s3.Seq}) {
				t.Errorf("Pending = %v, want [%d]", got, s3.Seq)
			}
		}},
		{"entries-are-copies", func(t *testing.T, s provision.Store) {
			e := result("a")
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), e); err != nil {
				t.Fatal(err)
			}
			e.Result.Message = "changed"
			got, err := s.Pending(1)
			if err != nil || len(got) != 1 {
				t.Fatalf("Pending(1) = %v, %v", got, err)
			}
			if got[0].Result.Message != "" {
				t.Error("changing an enqueued entry changed the outbox")
			}
			got[0].Result.Message = "changed"
			again, err := s.Pending(1)
			if err != nil || len(again) != 1 || again[0].Result.Message != "" {
				t.Errorf("changing a pending entry changed the outbox: %+v, %v", again, err)
			}
		}},
		{"nil-entries-skipped", func(t *testing.T, s provision.Store) {
			if err := s.Add(NewRecord("a", provision.Accepted, hour, ""), nil, result("a"), nil); err != nil {
				t.Fatal(err)
			}
			if n := depth(t, s); n != 1 {
				t.Errorf("Depth = %d, want 1", n)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open(t)) })
	}
}

func testEnqueue(t *testing.T, open func(t testing.TB) provision.Store) {
	s := open(t)
	q, ok := s.(Enqueuer)
	if !ok {
		t.Skipf("%T does not implement Enqueue", s)
	}
	s1, r1, s2 := stats(1), result("a"), stats(2)
	if err := q.Enqueue(s1, r1); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if err := q.Enqueue(s2); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	if got, want := pendingSeqs(t, s, 0), []uint64{r1.Seq, s2.Seq}; !slices.Equal(got, want) || s1.Seq == 0 || s1.Seq >= r1.Seq {
		t.Errorf("Pending = %v, want %v (stats %d replaced)", got, want, s1.Seq)
	}
}

func testCursors(t *testing.T, open func(t testing.TB) provision.Store) {
	tests := []struct {
		name string
		sets []struct {
			name string
			pos  uint64
		}
		want map[string]uint64
	}{
		{name: "unset", want: map[string]uint64{"poll": 0}},
		{
			name: "set",
			sets: []struct {
				name string
				pos  uint64
			}{{"poll", 7}},
			want: map[string]uint64{"poll": 7, "other": 0},
		},
		{
			name: "overwrite-and-independent",
			sets: []struct {
				name string
				pos  uint64
			}{{"poll", 7}, {"other", 1 << 63}, {"poll", 3}},
			want: map[string]uint64{"poll": 3, "other": 1 << 63},
		},
	}
	t.Run("empty-name", func(t *testing.T) {
		s := open(t)
		if err := s.SetCursor("", 1); !errors.Is(err, provision.ErrBadField) {
			t.Errorf("SetCursor with an empty name: %v, want ErrBadField", err)
		}
		if pos, err := s.Cursor(""); err != nil || pos != 0 {
			t.Errorf("Cursor(\"\") = %d, %v; want 0", pos, err)
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			for _, set := range tt.sets {
				if err := s.SetCursor(set.name, set.pos); err != nil {
					t.Fatalf("SetCursor(%s, %d): %v", set.name, set.pos, err)
				}
			}
			for name, want := range tt.want {
				got, err := s.Cursor(name)
				if err != nil || got != want {
					t.Errorf("Cursor(%s) = %d, %v; want %d", name, got, err, want)
				}
			}
		})
	}
}

func testConcurrent(t *testing.T, open func(t testing.TB) provision.Store) {
	t.Run("distinct-records", func(t *testing.T) {
		s := open(t)
		const workers, each = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					id := fmt.Sprintf("w%d-%03d", w, i)
					if err := s.Add(NewRecord(id, provision.Accepted, hour, ""), result(id)); err != nil {
						errs <- err
						return
					}
					r := NewRecord(id, provision.Deployed, hour, "")
					if err := s.Save(r, result(id), stats(uint64(i))); err != nil {
						errs <- err
						return
					}
					if err := s.SetCursor(fmt.Sprint("w", w), uint64(i+1)); err != nil {
						errs <- err
						return
					}
					if _, err := s.Pending(4); err != nil {
						errs <- err
						return
					}
					if _, err := s.Expired(SuiteEpoch.Add(2 * hour)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if got := len(scanIDs(t, s, provision.Deployed)); got != workers*each {
			t.Errorf("%d deployed records, want %d", got, workers*each)
		}
		if got := len(expired(t, s, SuiteEpoch.Add(hour))); got != workers*each {
			t.Errorf("%d expired records, want %d", got, workers*each)
		}
		// Two results per record and a single stats entry.
		if got, want := depth(t, s), 2*workers*each+1; got != want {
			t.Errorf("Depth = %d, want %d", got, want)
		}
		seqs := pendingSeqs(t, s, 0)
		if !slices.IsSorted(seqs) || len(slices.Compact(slices.Clone(seqs))) != len(seqs) {
			t.Error("outbox seqs are not unique and ordered")
		}
		for w := range workers {
			if pos, err := s.Cursor(fmt.Sprint("w", w)); err != nil || pos != each {
				t.Errorf("Cursor(w%d) = %d, %v; want %d", w, pos, err, each)
			}
		}
	})
	t.Run("racing-for-a-key-and-digest", func(t *testing.T) {
		s := open(t)
		const racers = 8
		var wg sync.WaitGroup
		keyWins := make(chan string, racers)
		digestWins := make(chan string, racers)
		digest := NewRecord("digest", provision.Accepted, hour, "").Digest
		for i := range racers {
			wg.Go(func() {
				id := fmt.Sprint("key-", i)
				err := s.Add(NewRecord(id, provision.Accepted, hour, "k"))
				switch {
				case err == nil:
					keyWins <- id
				case !errors.Is(err, provision.ErrConflict):
					t.Errorf("Add(%s): %v, want nil or ErrConflict", id, err)
				}
				id = fmt.Sprint("digest-", i)
				r := NewRecord(id, provision.Accepted, hour, "")
				r.Digest = digest
				err = s.Add(r)
				switch {
				case err == nil:
					digestWins <- id
				case !errors.Is(err, provision.ErrReplay):
					t.Errorf("Add(%s): %v, want nil or ErrReplay", id, err)
				}
			})
		}
		wg.Wait()
		close(keyWins)
		close(digestWins)
		var keys, digests []string
		for id := range keyWins {
			keys = append(keys, id)
		}
		for id := range digestWins {
			digests = append(digests, id)
		}
		if len(keys) != 1 || len(digests) != 1 {
			t.Fatalf("winners: key %v, digest %v; want one each", keys, digests)
		}
		if got := owner(t, s, "k"); got != keys[0] {
			t.Errorf("Owner(k) = %q, want the winner %q", got, keys[0])
		}
	})
}

// testQueueSave checks provision.WriteQueuer, when the store implements it:
// queued adds and saves take effect in the order they were queued, each
// with its own outcome, and wait sets the Seq of their entries.
func testQueueSave(t *testing.T, open func(t testing.TB) provision.Store) {
	s := open(t)
	q, ok := s.(provision.WriteQueuer)
	if !ok {
		t.Skip("the store does not implement provision.WriteQueuer")
	}
	mustAdd(t, s, NewRecord("a", provision.Accepted, hour, ""))
	mustAdd(t, s, NewRecord("b", provision.Accepted, hour, ""))
	r1, s1, r2, s2 := result("a"), stats(1), result("b"), stats(2)
	waits := []func() error{
		q.QueueSave(NewRecord("a", provision.Provisioning, hour, ""), s1),
		q.QueueSave(NewRecord("missing", provision.Deployed, hour, ""), result("missing")),
		q.QueueSave(NewRecord("a", provision.Deployed, hour, ""), r1),
		q.QueueSave(NewRecord("b", provision.Provisioning, hour, ""), s2, r2),
		q.QueueAdd(NewRecord("a", provision.Accepted, hour, "")),
		q.QueueAdd(NewRecord("c", provision.Provisioning, hour, "")),
		q.QueueSave(NewRecord("c", provision.Deployed, hour, "")),
	}
	want := map[int]error{1: provision.ErrNotFound, 4: provision.ErrExists}
	for i, wait := range waits {
		err := wait()
		if want[i] != nil {
			if !errors.Is(err, want[i]) {
				t.Errorf("queued write %d: %v, want %v", i, err, want[i])
			}
			continue
		}
		if err != nil {
			t.Errorf("queued write %d: %v", i, err)
		}
	}
	if got := mustGet(t, s, "c"); got.State != provision.Deployed {
		t.Errorf("c is %s, want deployed (its save was queued after its add)", got.State)
	}
	if got := mustGet(t, s, "a"); got.State != provision.Deployed {
		t.Errorf("a is %s, want deployed (the later of its queued saves)", got.State)
	}
	if got := mustGet(t, s, "b"); got.State != provision.Provisioning {
		t.Errorf("b is %s, want provisioning", got.State)
	}
	if _, err := s.Get("missing"); !errors.Is(err, provision.ErrNotFound) {
		t.Errorf("the failed queued save left a record: %v", err)
	}
	if r1.Seq == 0 || s2.Seq <= r1.Seq || r2.Seq <= s2.Seq {
		t.Errorf("seqs %d, %d, %d are not set in queue order", r1.Seq, s2.Seq, r2.Seq)
	}
	// Stats: the latest queued wins.
	if got, want := pendingSeqs(t, s, 0), []uint64{r1.Seq, s2.Seq, r2.Seq}; !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
}
