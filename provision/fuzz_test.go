package provision_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgeprov/provisiond/provision"
)

// vectorReservationJSON returns the golden reservations as JSON, plus a
// signed delete of each, as fuzz seeds.
func vectorReservationJSON(tb testing.TB, v *Vectors) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, rv := range v.Reservations {
		del := *rv.Reservation
		del.ToDelete, del.DeleteSignature = true, rv.DeleteSignature
		for _, r := range []*provision.Reservation{rv.Reservation, &del} {
			b, err := json.Marshal(r)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

// FuzzReservationDecode decodes arbitrary bytes as a reservation and
// validates it: it never panics, a failure is permanent, and a reservation
// that passes verifies, also after a relay re-encoded it.
func FuzzReservationDecode(f *testing.F) {
	v := loadVectors(f)
	for _, b := range vectorReservationJSON(f, v) {
		f.Add(b)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"type":"volume","data":{"size":-1}}`))
	f.Add([]byte(`{"id":"../x","data":null,"created":"0001-01-01T00:00:00Z"}`))
	now := fixedCreated.Add(time.Minute)
	f.Fuzz(func(t *testing.T, data []byte) {
		var r provision.Reservation
		if json.Unmarshal(data, &r) != nil {
			return
		}
		_ = r.Digest()
		err := provision.Validate(&r, v.NodeID, now)
		if err != nil {
			if provision.IsTemporary(err) {
				t.Fatalf("Validate() = %v is temporary", err)
			}
			return
		}
		if err := r.Verify(); err != nil {
			t.Fatalf("Validate passed but Verify() = %v", err)
		}
		if r.ToDelete {
			if err := r.VerifyDelete(); err != nil {
				t.Fatalf("Validate passed a delete but VerifyDelete() = %v", err)
			}
		}
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("re-encoding a valid reservation: %v", err)
		}
		var relayed provision.Reservation
		if err := json.Unmarshal(b, &relayed); err != nil {
			t.Fatalf("decoding a re-encoded reservation: %v", err)
		}
		if err := provision.Validate(&relayed, v.NodeID, now); err != nil {
			t.Fatalf("Validate() after re-encoding = %v", err)
		}
		if relayed.Digest() != r.Digest() {
			t.Fatalf("Digest changed in re-encoding")
		}
	})
}

// FuzzVerify replaces the signed fields of a golden reservation with
// arbitrary values: Verify never panics, and it passes only when the
// challenge and the signature are the golden ones.
func FuzzVerify(f *testing.F) {
	v := loadVectors(f)
	for _, rv := range v.Reservations {
		r := rv.Reservation
		f.Add(r.Signature, r.UserID, []byte(r.Data), r.Reference, uint32(0))
		f.Add(r.Signature, r.UserID, []byte(r.Data), r.Reference+"x", uint32(1))
		f.Add(r.Signature[:len(r.Signature)-2]+"00", r.UserID, []byte(r.Data), r.Reference, uint32(2))
	}
	f.Add("", "", []byte(nil), "", uint32(0))
	f.Add("zz", "zz", []byte("{"), "", uint32(1))
	f.Fuzz(func(t *testing.T, sig, userID string, data []byte, ref string, pick uint32) {
		orig := v.Reservations[int(pick%uint32(len(v.Reservations)))].Reservation
		r := *orig
		r.Signature, r.UserID, r.Data, r.Reference = sig, userID, data, ref
		err := r.Verify()
		if err != nil {
			if !errors.Is(err, provision.ErrBadSignature) {
				t.Fatalf("Verify() = %v, want ErrBadSignature", err)
			}
			return
		}
		if !bytes.Equal(r.Challenge(), orig.Challenge()) {
			t.Fatalf("a changed reservation verified: user_id %q reference %q data %q", userID, ref, data)
		}
		got, _ := hex.DecodeString(sig)
		want, _ := hex.DecodeString(orig.Signature)
		if !bytes.Equal(got, want) {
			t.Fatalf("another signature verified: %s", sig)
		}
	})
}

// FuzzResultVerify signs arbitrary results: they verify, also after an
// encoding/json round trip, and an arbitrary signature or key never
// verifies unless it is the real one.
func FuzzResultVerify(f *testing.F) {
	v := loadVectors(f)
	for _, rv := range v.Results {
		r := rv.Result
		f.Add(r.ID, r.Message, []byte(r.Data), uint32(r.Version), r.Created.UnixNano(), r.Signature, []byte(nil))
	}
	f.Add("r-\xff", "caf\xe9", []byte(`{"a":"<"}`), uint32(7), int64(-1), "00", []byte{1, 2})
	node := ed25519.NewKeyFromSeed(mustHex(f, v.NodeSeed))
	nodePub := node.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, id, message string, data []byte, version uint32, created int64, sig string, key []byte) {
		res := &provision.Result{
			Type:    provision.VolumeReservation,
			ID:      id,
			NodeID:  v.NodeID,
			Digest:  v.Reservations[0].Digest,
			Version: version,
			Created: time.Unix(0, created).UTC(),
			State:   provision.StateError,
			Message: message,
		}
		if len(data) > 0 {
			res.Data = data
		}
		if err := res.Sign(provision.KeySigner(node)); err != nil {
			t.Fatal(err)
		}
		if err := res.Verify(nodePub); err != nil {
			t.Fatalf("Verify() of a fresh result = %v", err)
		}
		if b, err := json.Marshal(res); err == nil {
			var relayed provision.Result
			if err := json.Unmarshal(b, &relayed); err != nil {
				t.Fatalf("decoding an encoded result: %v", err)
			}
			if err := relayed.Verify(nodePub); err != nil {
				t.Fatalf("Verify() after a JSON round trip = %v\n%s", err, b)
			}
		}
		if err := res.Verify(key); err == nil && !bytes.Equal(key, nodePub) {
			t.Fatalf("verified with another key %x", key)
		} else if err != nil && !errors.Is(err, provision.ErrBadResultSignature) {
			t.Fatalf("Verify() = %v, want ErrBadResultSignature", err)
		}
		real := res.Signature
		res.Signature = sig
		if err := res.Verify(nodePub); err == nil {
			got, _ := hex.DecodeString(sig)
			want, _ := hex.DecodeString(real)
			if !bytes.Equal(got, want) {
				t.Fatalf("another signature verified: %s", sig)
			}
		}
	})
}

// FuzzCanonicalData checks that CanonicalData is idempotent, equals what
// encoding/json makes of the same raw message, keeps invalid JSON as is,
// and that a reservation's challenge survives a JSON round trip.
func FuzzCanonicalData(f *testing.F) {
	v := loadVectors(f)
	for _, rv := range v.Reservations {
		f.Add([]byte(rv.Reservation.Data))
		f.Add([]byte(rv.CanonicalData))
	}
	f.Add([]byte(" {\"a\" : \"<\u2028>\" } "))
	f.Add([]byte(`"\u003c"`))
	f.Add([]byte("{\"a\":\"\xff\"}"))
	f.Add([]byte(`{"a":`))
	f.Add([]byte(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := provision.CanonicalData(data)
		if !json.Valid(data) {
			if !bytes.Equal(c, data) {
				t.Fatalf("CanonicalData changed invalid JSON %q into %q", data, c)
			}
			return
		}
		if !json.Valid(c) {
			t.Fatalf("CanonicalData(%q) = %q is not valid JSON", data, c)
		}
		if again := provision.CanonicalData(c); !bytes.Equal(again, c) {
			t.Fatalf("not idempotent: %q then %q", c, again)
		}
		m, err := json.Marshal(json.RawMessage(data))
		if err != nil {
			t.Fatalf("json.Marshal(RawMessage(%q)) = %v", data, err)
		}
		if !bytes.Equal(m, c) {
			t.Fatalf("json.Marshal gives %q, CanonicalData %q", m, c)
		}
		r := provision.Reservation{NodeID: v.NodeID, UserID: v.UserID, Type: provision.VolumeReservation, Data: data, Created: fixedCreated, Duration: time.Hour}
		b, err := json.Marshal(&r)
		if err != nil {
			t.Fatalf("encoding a reservation with data %q: %v", data, err)
		}
		var relayed provision.Reservation
		if err := json.Unmarshal(b, &relayed); err != nil {
			t.Fatalf("decoding %s: %v", b, err)
		}
		if !bytes.Equal(relayed.Challenge(), r.Challenge()) {
			t.Fatalf("challenge changed in a JSON round trip of data %q", data)
		}
	})
}

// FuzzWorkload decodes arbitrary data as each workload type: it never
// panics, and a workload that passes decodes the same after re-encoding.
func FuzzWorkload(f *testing.F) {
	v := loadVectors(f)
	for i, rv := range v.Reservations {
		f.Add(uint8(i), []byte(rv.Reservation.Data))
	}
	f.Add(uint8(0), []byte(`{"name":"n","ip_range":"10.0.0.0/8","subnet":"10.255.255.252/30"}`))
	f.Add(uint8(1), []byte(`{"size":1,"type":"hdd"}]`))
	f.Add(uint8(2), []byte(`{"image":"/a","image_digest":"","entrypoint":[""]}`))
	digest := strings.Repeat("0f", 32)
	f.Add(uint8(2), []byte(`{"image":"/a","image_digest":"`+digest+`","entrypoint":["x"],"network":{"network_id":"","ip":""},`+
		`"capacity":{"cpu":1,"memory":64,"disk_size":0},"health":{"http_port":80,"http_path":"/h?x=%20","interval":2,"timeout":2,"failures":1,"start_period":5},"restart":"on-failure"}`))
	f.Add(uint8(2), []byte(`{"image":"/a","image_digest":"`+digest+`","entrypoint":["x"],"network":{"network_id":"","ip":""},`+
		`"capacity":{"cpu":1,"memory":64,"disk_size":0},"health":{"exec":["pg_isready","-q"]},"restart":"never"}`))
	f.Fuzz(func(t *testing.T, pick uint8, data []byte) {
		r := &provision.Reservation{Type: provision.Types[int(pick)%len(provision.Types)], Data: data}
		w, err := r.Workload()
		if err != nil {
			if !errors.Is(err, provision.ErrBadData) && !errors.Is(err, provision.ErrBadField) &&
				!errors.Is(err, provision.ErrBadName) && !errors.Is(err, provision.ErrBadSize) {
				t.Fatalf("Workload() = %v wraps no validation sentinel", err)
			}
			return
		}
		if n, ok := w.(*provision.Network); ok {
			gw := n.Gateway()
			_, sub, _ := net.ParseCIDR(n.Subnet)
			if !sub.Contains(gw.IP) || gw.IP.Equal(sub.IP) {
				t.Fatalf("gateway %s is not a host of subnet %s", gw, sub)
			}
		}
		b, err := json.Marshal(w)
		if err != nil {
			t.Fatalf("encoding %#v: %v", w, err)
		}
		again := &provision.Reservation{Type: r.Type, Data: b}
		w2, err := again.Workload()
		if err != nil {
			t.Fatalf("re-encoded workload %s fails: %v", b, err)
		}
		b2, _ := json.Marshal(w2)
		if !bytes.Equal(b, b2) {
			t.Fatalf("workload changed in re-encoding: %s then %s", b, b2)
		}
	})
}

// FuzzDecodeData checks DecodeData against a reference reader of exact
// keys: DecodeData accepts a document exactly when it is UTF-8, encoding/json decodes it
// strictly (unknown fields, trailing data) and the reference finds no
// duplicate key and reads every key the decoded workload has (field names
// compared case-sensitively, as a first-wins reader in another language
// would compare them).
func FuzzDecodeData(f *testing.F) {
	v := loadVectors(f)
	for i, rv := range v.Reservations {
		f.Add(uint8(i), []byte(rv.Reservation.Data))
	}
	f.Add(uint8(1), []byte(`{"size":1,"type":"ssd","size":100000}`))
	f.Add(uint8(1), []byte(`{"SIZE":1,"type":"ssd"}`))
	f.Add(uint8(1), []byte(`{"si\u007ae":1,"\u0074ype":"ssd"}`))
	f.Add(uint8(1), []byte(`{"ſize":1,"type":null}`))
	f.Add(uint8(2), []byte(`{"env":{"PATH":"a","path":"b","P\u0041TH":"c"},"mounts":[{},{"Mountpoint":"/a"}],"capacity":{"cpu":-0}}`))
	f.Add(uint8(2), []byte("{\"image\":\"\xbf\"}"))
	f.Add(uint8(2), []byte(`{"health":{"tcp_port":80,"Tcp_port":81},"restart":"never"}`))
	f.Add(uint8(2), []byte(`{"health":{"exec":["sh","-c","x"],"interval":1e0,"timeout":-0},"restart":"on-failure","restart":"always"}`))
	f.Add(uint8(2), []byte(`{"health":{"tcp_port":80,"Tcp_port":81},"restart":"never"}`))
	f.Add(uint8(2), []byte(`{"health":{"exec":["sh","-c","x"],"interval":1e0,"timeout":-0},"restart":"on-failure","restart":"always"}`))
	f.Add(uint8(2), []byte("{\"env\":{\"a\xff\":\"\",\"a\xfe\":\"\\\"}\"}}"))
	f.Fuzz(func(t *testing.T, pick uint8, data []byte) {
		newW := []func() any{
			func() any { return new(provision.Network) },
			func() any { return new(provision.Volume) },
			func() any { return new(provision.Container) },
		}[int(pick)%3]
		got := newW()
		err := provision.DecodeData(data, got)
		if err != nil && !errors.Is(err, provision.ErrBadData) {
			t.Fatalf("DecodeData() = %v, want ErrBadData", err)
		}
		lenient := newW()
		ref, dup, refErr := firstWins(data)
		// Bytes that are not UTF-8 are read otherwise by other readers
		// (encoding/json turns them into U+FFFD), so DecodeData refuses them.
		agree := utf8.Valid(data) && lenientDecode(data, lenient) == nil && refErr == nil && !dup && readsAll(t, ref, lenient)
		switch {
		case err == nil && !agree:
			t.Fatalf("DecodeData accepted %q, which a reader of exact keys reads as %#v (duplicate keys: %v)", data, ref, dup)
		case err != nil && agree:
			t.Fatalf("DecodeData refused %q, which a reader of exact keys reads the same: %v", data, err)
		case err == nil && !reflect.DeepEqual(got, lenient):
			t.Fatalf("DecodeData decoded %q into %#v, encoding/json into %#v", data, got, lenient)
		}
	})
}

// lenientDecode is DecodeData without the key checks: what encoding/json
// does alone.
func lenientDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// firstWins reads one JSON value as a reader that keeps the first of
// duplicate keys would, reporting whether there were duplicates.
func firstWins(data []byte) (v any, dup bool, err error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var read func() (any, error)
	read = func() (any, error) {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch tok {
		case json.Delim('{'):
			m := map[string]any{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				val, err := read()
				if err != nil {
					return nil, err
				}
				if _, ok := m[k.(string)]; ok {
					dup = true
					continue
				}
				m[k.(string)] = val
			}
			_, err = dec.Token()
			return m, err
		case json.Delim('['):
			a := []any{}
			for dec.More() {
				val, err := read()
				if err != nil {
					return nil, err
				}
				a = append(a, val)
			}
			_, err = dec.Token()
			return a, err
		}
		return tok, nil
	}
	v, err = read()
	return v, dup, err
}

// omitEmpty are the workloads' fields that encoding/json leaves out when
// they are empty (only Container has them).
var omitEmpty = map[string]bool{"env": true, "mounts": true}

// readsAll reports whether the workload w, as encoding/json writes it,
// holds every key of the document ref with the same value. Null matches
// any value (encoding/json leaves the field as it is); a key w leaves out
// matches only if it is in omitEmpty.
func readsAll(tb testing.TB, ref any, w any) bool {
	tb.Helper()
	b, err := json.Marshal(w)
	if err != nil {
		tb.Fatalf("encoding %#v: %v", w, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var enc any
	if err := dec.Decode(&enc); err != nil {
		tb.Fatal(err)
	}
	var same func(r, e any) bool
	same = func(r, e any) bool {
		switch r := r.(type) {
		case nil:
			return true
		case map[string]any:
			e, ok := e.(map[string]any)
			if !ok {
				return false
			}
			for k, rv := range r {
				ev, ok := e[k]
				if !ok {
					if omitEmpty[k] {
						continue
					}
					return false
				}
				if !same(rv, ev) {
					return false
				}
			}
			return true
		case []any:
			e, ok := e.([]any)
			if !ok || len(e) != len(r) {
				return false
			}
			for i := range r {
				if !same(r[i], e[i]) {
					return false
				}
			}
			return true
		case json.Number:
			e, ok := e.(json.Number)
			if !ok {
				return false
			}
			ri, rerr := r.Int64()
			ei, eerr := e.Int64()
			return rerr == nil && eerr == nil && ri == ei
		}
		return r == e
	}
	return same(ref, enc)
}
