package cache

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/provision/provisiontest"
)

func FuzzRecordDecode(f *testing.F) {
	good, err := json.Marshal(provisiontest.NewRecord("a", provision.Deployed, time.Hour, "k"))
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{good, []byte(`{}`), []byte(`{"reservation":null}`), []byte(`{"reservation":{"id":""}}`), []byte(`[`), nil} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rec, err := decodeRecord(data)
		if err != nil {
			return
		}
		if rec.Reservation == nil || rec.Reservation.ID == "" {
			t.Fatal("decodeRecord accepted a record without an id")
		}
		again, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("re-encoding a decoded record: %v", err)
		}
		rec2, err := decodeRecord(again)
		if err != nil {
			t.Fatalf("decoding a re-encoded record: %v", err)
		}
		if rec2.ID() != rec.ID() || rec2.State != rec.State || rec2.Digest != rec.Digest || rec2.Key != rec.Key {
			t.Fatalf("round trip changed the record: %+v → %+v", rec, rec2)
		}
	})
}

func FuzzEntryDecode(f *testing.F) {
	good, err := json.Marshal(&provision.OutboxEntry{Seq: 3, Kind: provision.OutboxStats, Stats: &provision.Stats{}})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{good, []byte(`{"seq":-1}`), []byte(`null`), nil} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEntry(data)
		if err != nil {
			return
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("re-encoding a decoded entry: %v", err)
		}
		e2, err := decodeEntry(again)
		if err != nil || e2.Seq != e.Seq || e2.Kind != e.Kind {
			t.Fatalf("round trip changed the entry: %+v → %+v, %v", e, e2, err)
		}
	})
}

func FuzzUnitsDecode(f *testing.F) {
	for _, seed := range []struct {
		typ  provision.ReservationType
		user string
		u    provision.Units
	}{
		{provision.ContainerReservation, strings.Repeat("ab", 32), provision.Units{CRU: 2, MRU: 0.5, SRU: 1}},
		{"", "", provision.Units{MRU: math.NaN()}},
	} {
		v, err := encodeUnits(seed.typ, seed.user, seed.u)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, user, u, err := decodeUnits(data)
		if err != nil {
			if len(data) > unitsSize && len(data) >= unitsSize+1+int(data[unitsSize]) {
				t.Fatalf("decodeUnits refused %d bytes: %v", len(data), err)
			}
			return
		}
		again, err := encodeUnits(typ, user, u)
		if err != nil {
			t.Fatalf("encoding a decoded entry: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("round trip changed the entry: %x → %x", data, again)
		}
	})
}

func FuzzExpiryKey(f *testing.F) {
	f.Add(int64(0), "a")
	f.Add(int64(math.MinInt64), "id")
	f.Add(int64(math.MaxInt64), "x/y")
	f.Fuzz(func(t *testing.T, ns int64, id string) {
		if id == "" {
			return
		}
		at := time.Unix(0, ns)
		bits, got, err := splitExpiryKey(expiryKey(at, id))
		if err != nil || got != id || !bitsTime(bits).Equal(at) {
			t.Fatalf("expiry key of %v, %q decodes to %v, %q, %v", at, id, bitsTime(bits), got, err)
		}
		later := at.Add(time.Nanosecond)
		if ns < math.MaxInt64 && timeBits(later) <= bits {
			t.Fatalf("timeBits(%v) = %d is not above timeBits(%v) = %d", later, timeBits(later), at, bits)
		}
	})
}
