package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

// fill sets every field reachable from v (a settable value) to a non-zero
// value: pointers to new values, slices of one element.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(1, 0)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i))
			}
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k)
		fill(e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1)
	}
}

// shared reports a path at which a and b (equal values) share memory.
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		if a.Type() == reflect.TypeOf(time.Time{}) {
			return ""
		}
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			if p := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); p != "" {
				return p
			}
		}
	case reflect.Slice:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		for i := range a.Len() {
			if p := shared(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
	}
	return ""
}

// The read cache hands out copies: cloneRecord must copy every pointer,
// slice and map reachable from a Record, including fields added later.
func TestCloneRecordSharesNothing(t *testing.T) {
	var rec provision.Record
	fill(reflect.ValueOf(&rec).Elem())
	c := cloneRecord(&rec)
	if !reflect.DeepEqual(&rec, c) {
		t.Fatalf("clone differs:\n%+v\n%+v", rec, *c)
	}
	if p := shared(reflect.ValueOf(&rec), reflect.ValueOf(c), "Record"); p != "" {
		t.Errorf("the clone shares %s with the original", p)
	}
}

// Reading a record again returns an equal, independent copy; what a
// caller changes in it never reaches the store or the next reader, and a
// record changed by a write (or displaced by a colliding ID) is read
// afresh.
func TestGetReadCache(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	mustAddRecord(t, s, provisiontest.NewRecord("a", provision.Accepted, time.Hour, ""))
	first, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, second) || first == second || first.Reservation == second.Reservation {
		t.Fatalf("second read %+v is not an equal copy of the first %+v", second, first)
	}
	second.Reservation.Data[0] = '!'
	second.History[0].Message = "changed"
	second.State = provision.Deleted
	if third, _ := s.Get("a"); !reflect.DeepEqual(third, first) {
		t.Fatalf("a change of a copy reached the next read: %+v", third)
	}

	saved := provisiontest.NewRecord("a", provision.Deployed, time.Hour, "")
	if err := s.Save(saved); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get("a"); got.State != provision.Deployed {
		t.Fatalf("read after a save: state %s, want deployed", got.State)
	}

	big := provisiontest.NewRecord("big", provision.Accepted, time.Hour, "")
	big.Reservation.Data = []byte(`"` + strings.Repeat("x", readMaxValue) + `"`)
	mustAddRecord(t, s, big)
	for range 2 {
		if got, err := s.Get("big"); err != nil || !reflect.DeepEqual(got.Reservation.Data, big.Reservation.Data) {
			t.Fatalf("Get(big) = %v, %v", got, err)
		}
	}

	for i := range 300 { // many share a slot
		id := fmt.Sprint("c", i)
		mustAddRecord(t, s, provisiontest.NewRecord(id, provision.Accepted, time.Hour, ""))
		if got, err := s.Get(id); err != nil || got.ID() != id {
			t.Fatalf("Get(%s) = %v, %v", id, got, err)
		}
	}
	for i := range 300 { // many share a slot
		id := fmt.Sprint("c", i)
		if got, err := s.Get(id); err != nil || got.ID() != id {
			t.Fatalf("Get(%s) again = %v, %v", id, got, err)
		}
	}
}

// A write leaves the record it wrote in the read cache, and Trim empties
// it; reads after Trim decode afresh and return the same record.
func TestTrimDropsReadCache(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	rec := provisiontest.NewRecord("a", provision.Accepted, time.Hour, "")
	mustAddRecord(t, s, rec)
	if v, _ := s.reads.index("a"); v == nil {
		t.Fatal("the added record is not in the read cache")
	}
	s.Trim()
	for i := range s.reads.slots {
		if sl := &s.reads.slots[i]; sl.id != "" || sl.v != nil || sl.rec != nil {
			t.Fatalf("slot %d holds %q after Trim", i, sl.id)
		}
	}
	got, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := testutil.MustJSON(t, got), testutil.MustJSON(t, rec); !bytes.Equal(g, w) {
		t.Errorf("read after Trim %s, want %s", g, w)
	}
}

// Get trusts the read cache without reading the database, so the cache
// must never hold an older value than the database: a read made at a
// snapshot older than a write that filled the slot is refused, also after
// a colliding ID took the slot over (the slot's floor), and a write too
// large to keep drops what the slot held of its ID.
func TestReadCacheRefusesStaleReads(t *testing.T) {
	c := newReadCache()
	rec := func(state provision.State) *provision.Record {
		return provisiontest.NewRecord("a", state, time.Hour, "")
	}
	other := ""
	for i := 0; other == ""; i++ { // an ID in the slot of "a"
		if id := fmt.Sprint("b", i); c.slot(id) == c.slot("a") {
			other = id
		}
	}

	c.written("a", []byte("v5"), rec(provision.Deployed), 5)
	c.read("a", []byte("v4"), rec(provision.Provisioning), 4) // raced the write
	if got := c.get("a"); got == nil || got.State != provision.Deployed {
		t.Fatalf("after a stale read: %+v, want the record written at 5", got)
	}

	c.read(other, []byte("o"), provisiontest.NewRecord(other, provision.Accepted, time.Hour, ""), 6)
	if c.get("a") != nil || c.get(other) == nil {
		t.Fatal("a read at 6 did not take the slot over")
	}
	c.read("a", []byte("v4"), rec(provision.Provisioning), 4)
	if got := c.get("a"); got != nil {
		t.Fatalf("a read at 4 filled the slot after a write at 5: %+v", got)
	}
	c.read("a", []byte("v5"), rec(provision.Deployed), 5)
	if got := c.get("a"); got == nil || got.State != provision.Deployed {
		t.Fatalf("a read at the write's snapshot was refused: %+v", got)
	}

	c.written("a", bytes.Repeat([]byte("x"), readMaxValue+1), rec(provision.Deleting), 7)
	if got := c.get("a"); got != nil {
		t.Fatalf("a write too large to keep left the older value: %+v", got)
	}
	c.read("a", []byte("v5"), rec(provision.Deployed), 6)
	if got := c.get("a"); got != nil {
		t.Fatalf("a read at 6 filled the slot after the large write at 7: %+v", got)
	}
}

// Writers and readers of the same records at once, through the Store:
// once the writes are done every Get returns the last value written,
// which is what the database holds.
func TestGetAfterConcurrentWrites(t *testing.T) {
	s := openStore(t, tempPath(t), Options{NoSync: true})
	const ids, versions = 8, 40
	for i := range ids {
		mustAddRecord(t, s, provisiontest.NewRecord(fmt.Sprint("r", i), provision.Accepted, time.Hour, ""))
	}
	var wg sync.WaitGroup
	for i := range ids {
		id := fmt.Sprint("r", i)
		wg.Go(func() {
			for v := range versions {
				rec := provisiontest.NewRecord(id, provision.Accepted, time.Hour, "")
				rec.Failures = v + 1
				if err := s.Save(rec); err != nil {
					t.Error(err)
					return
				}
			}
		})
		for range 3 {
			wg.Go(func() {
				for range versions {
					if _, err := s.Get(id); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Add(1)
	go func() { // Trim now and then, as the Engine does when idle
		defer wg.Done()
		for range versions {
			s.Trim()
			time.Sleep(100 * time.Microsecond)
		}
	}()
	wg.Wait()
	for i := range ids {
		id := fmt.Sprint("r", i)
		got, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		var stored provision.Record
		if err := s.db.View(func(tx *bolt.Tx) error {
			return json.Unmarshal(tx.Bucket(bucketRecords).Get([]byte(id)), &stored)
		}); err != nil {
			t.Fatal(err)
		}
		if got.Failures != versions || stored.Failures != versions {
			t.Errorf("%s: Get says version %d, the database %d; want %d", id, got.Failures, stored.Failures, versions)
		}
	}
}
