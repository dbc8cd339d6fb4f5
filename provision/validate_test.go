package provision_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/provision"
)

// validationErrors are the sentinels Validate may return; each failure must
// match exactly one of them.
var validationErrors = []error{
	provision.ErrWrongNode,
	provision.ErrBadSignature,
	provision.ErrBadDeleteSignature,
	provision.ErrDataTooLarge,
	provision.ErrBadName,
	provision.ErrUnknownType,
	provision.ErrBadSize,
	provision.ErrExpired,
	provision.ErrBadField,
	provision.ErrBadData,
}

// editData decodes r.Data into a generic map, applies edit and re-encodes it.
func editData(tb testing.TB, r *provision.Reservation, edit func(m map[string]any)) {
	tb.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Data, &m); err != nil {
		tb.Fatalf("decoding data: %v", err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		tb.Fatalf("encoding data: %v", err)
	}
	r.Data = b
}

func TestValidate(t *testing.T) {
	f := newFixture(t)
	expired := fixedCreated.Add(30*24*time.Hour + time.Nanosecond)
	tests := []struct {
		name string
		typ  provision.ReservationType
		// before edits the reservation before the user signs it.
		before func(t testing.TB, r *provision.Reservation)
		// after edits it once signed (tampering, deletes).
		after func(t testing.TB, r *provision.Reservation)
		// now is when the node validates; the fixture's now when zero.
		now  time.Time
		node string
		err  error
	}{
		{name: "valid-network", typ: provision.NetworkReservation},
		{name: "valid-volume", typ: provision.VolumeReservation},
		{name: "valid-container", typ: provision.ContainerReservation},
		{name: "valid-container-minimal", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"image":"/images/a.tar","image_digest":"` + strings.Repeat("0", 64) + `","entrypoint":["/init"],"capacity":{"cpu":1,"memory":16}}`)
		}},
		{name: "valid-volume-hdd", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":64,"type":"hdd"}`)
		}},
		{name: "valid-at-expiry", typ: provision.VolumeReservation, now: fixedCreated.Add(30 * 24 * time.Hour)},
		{name: "valid-created-within-skew", typ: provision.VolumeReservation, now: fixedCreated.Add(-provision.MaxClockSkew)},
		{name: "valid-delete", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.SignDelete(f.user) }},
		{name: "valid-delete-after-expiry", typ: provision.ContainerReservation, now: expired.Add(24 * time.Hour),
			after: func(t testing.TB, r *provision.Reservation) { r.SignDelete(f.user) }},
		{name: "valid-id-changed-after-signing", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.ID = "explorer-42" }},
		{name: "valid-data-reindented-after-signing", typ: provision.NetworkReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(strings.ReplaceAll(networkData, ", ", ",\n\t") + "\n")
		}},

		{name: "nil", err: provision.ErrBadData},
		{name: "bad-signature", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			o := *r
			o.Sign(f.other)
			r.Signature = o.Signature
		}, err: provision.ErrBadSignature},
		{name: "signature-not-hex", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.Signature = "xyz" }, err: provision.ErrBadSignature},
		{name: "unsigned", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.Signature = "" }, err: provision.ErrBadSignature},
		{name: "wrong-node", typ: provision.VolumeReservation, node: "another-node", err: provision.ErrWrongNode},
		{name: "tampered-data", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size": 11, "type": "ssd"}`)
		}, err: provision.ErrBadSignature},
		{name: "tampered-duration", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.Duration *= 2 }, err: provision.ErrBadSignature},
		{name: "tampered-type", typ: provision.NetworkReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.Type = provision.VolumeReservation
			r.Data = json.RawMessage(volumeData)
		}, err: provision.ErrBadSignature},
		{name: "oversized-data", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["env"] = map[string]any{"BIG": strings.Repeat("x", provision.MaxDataSize)} })
		}, err: provision.ErrDataTooLarge},
		{name: "network-name-traversal", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["name"] = "../x" })
		}, err: provision.ErrBadName},
		{name: "network-name-dotdot", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["name"] = "a..b" })
		}, err: provision.ErrBadName},
		{name: "network-name-empty", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["name"] = "" })
		}, err: provision.ErrBadName},
		{name: "id-with-slash", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.ID = "a/b" }, err: provision.ErrBadName},
		{name: "id-dotdot", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.ID = ".." }, err: provision.ErrBadName},
		{name: "id-empty", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) { r.ID = "" }, err: provision.ErrBadName},
		{name: "id-too-long", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.ID = strings.Repeat("a", provision.MaxNameLength+1)
		}, err: provision.ErrBadName},
		{name: "mountpoint-traversal", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) {
				m["mounts"] = []any{map[string]any{"volume_id": "r-volume", "mountpoint": "/data/../../etc"}}
			})
		}, err: provision.ErrBadName},
		{name: "mountpoint-relative", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) {
				m["mounts"] = []any{map[string]any{"volume_id": "r-volume", "mountpoint": "data"}}
			})
		}, err: provision.ErrBadName},
		{name: "mount-volume-id-traversal", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) {
				m["mounts"] = []any{map[string]any{"volume_id": "../r", "mountpoint": "/data"}}
			})
		}, err: provision.ErrBadName},
		{name: "image-path-traversal", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["image"] = "/images/../etc/shadow" })
		}, err: provision.ErrBadName},
		{name: "unknown-type", typ: "vm", before: func(t testing.TB, r *provision.Reservation) { r.Data = json.RawMessage(`{}`) }, err: provision.ErrUnknownType},
		{name: "empty-type", typ: "", before: func(t testing.TB, r *provision.Reservation) { r.Data = json.RawMessage(`{}`) }, err: provision.ErrUnknownType},
		{name: "negative-size", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":-1,"type":"ssd"}`)
		}, err: provision.ErrBadSize},
		{name: "zero-size", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":0,"type":"ssd"}`)
		}, err: provision.ErrBadSize},
		{name: "bad-disk-type", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"nvme"}`)
		}, err: provision.ErrBadField},
		{name: "zero-cpu", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["capacity"].(map[string]any)["cpu"] = 0 })
		}, err: provision.ErrBadField},
		{name: "memory-below-minimum", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["capacity"].(map[string]any)["memory"] = provision.MinContainerMemory - 1 })
		}, err: provision.ErrBadSize},
		{name: "negative-disk", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["capacity"].(map[string]any)["disk_size"] = -1 })
		}, err: provision.ErrBadSize},
		{name: "expired", typ: provision.VolumeReservation, now: expired, err: provision.ErrExpired},
		{name: "bad-delete-signature", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.ToDelete = true
			r.DeleteSignature = r.Signature
		}, err: provision.ErrBadDeleteSignature},
		{name: "delete-by-another-user", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.SignDelete(f.other)
		}, err: provision.ErrBadDeleteSignature},
		{name: "delete-without-signature", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.ToDelete = true
		}, err: provision.ErrBadDeleteSignature},
		{name: "delete-signed-for-another-id", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.SignDelete(f.user)
			r.ID = "r-other"
		}, err: provision.ErrBadDeleteSignature},
		{name: "created-in-the-future", typ: provision.VolumeReservation, now: fixedCreated.Add(-provision.MaxClockSkew - time.Second), err: provision.ErrBadField},
		{name: "created-unset", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) { r.Created = time.Time{} }, err: provision.ErrBadField},
		{name: "zero-duration", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) { r.Duration = 0 }, err: provision.ErrBadField},
		{name: "duration-too-long", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Duration = provision.MaxDuration + 1
		}, err: provision.ErrBadField},
		{name: "reference-too-long", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Reference = strings.Repeat("r", provision.MaxReferenceLength+1)
		}, err: provision.ErrBadField},
		{name: "bad-user-id-uppercase", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.UserID = strings.ToUpper(r.UserID)
		}, err: provision.ErrBadField},
		{name: "bad-user-id-short", typ: provision.VolumeReservation, after: func(t testing.TB, r *provision.Reservation) {
			r.UserID = r.UserID[:60]
		}, err: provision.ErrBadField},
		{name: "bad-ip-range", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["ip_range"] = "10.20.0.0/33" })
		}, err: provision.ErrBadField},
		{name: "ipv6-ip-range", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["ip_range"] = "fd00::/64" })
		}, err: provision.ErrBadField},
		{name: "subnet-outside-range", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["subnet"] = "10.21.3.0/24" })
		}, err: provision.ErrBadField},
		{name: "subnet-host-bits", typ: provision.NetworkReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["subnet"] = "10.20.3.1/24" })
		}, err: provision.ErrBadField},
		{name: "bad-container-ip", typ: provision.ContainerReservation, before: func(t testing.TB, r *provision.Reservation) {
			editData(t, r, func(m map[string]any) { m["network"].(map[string]any)["ip"] = "10.20.3.300" })
		}, err: provision.ErrBadField},
		{name: "unknown-json-field", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd","encrypted":true}`)
		}, err: provision.ErrBadData},
		{name: "trailing-data", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd"} {"size":2}`)
		}, err: provision.ErrBadData},
		{name: "trailing-brace", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd"}}`)
		}, err: provision.ErrBadData},
		{name: "trailing-bracket", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"ssd"}]`)
		}, err: provision.ErrBadData},
		{name: "data-not-an-object", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`[1,2]`)
		}, err: provision.ErrBadData},
		{name: "data-missing", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) { r.Data = nil }, err: provision.ErrBadData},
		{name: "data-wrong-type", typ: provision.VolumeReservation, before: func(t testing.TB, r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":"10","type":"ssd"}`)
		}, err: provision.ErrBadData},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r *provision.Reservation
			if tt.name != "nil" {
				r = f.unsigned(provision.VolumeReservation)
				r.Type = tt.typ
				if tt.typ.Known() {
					r.Data = f.unsigned(tt.typ).Data
				}
				if tt.before != nil {
					tt.before(t, r)
				}
				r.Sign(f.user)
				if tt.after != nil {
					tt.after(t, r)
				}
			}
			now := tt.now
			if now.IsZero() {
				now = f.now
			}
			node := tt.node
			if node == "" {
				node = f.nodeID
			}
			err := provision.Validate(r, node, now)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.err) {
				t.Fatalf("Validate() = %v, want %v", err, tt.err)
			}
			for _, other := range validationErrors {
				if other != tt.err && errors.Is(err, other) {
					t.Errorf("Validate() = %v also matches %v; each failure has its own sentinel", err, other)
				}
			}
			if provision.IsTemporary(err) {
				t.Errorf("IsTemporary(%v) = true, validation errors are permanent", err)
			}
			var pe *provision.Error
			if !errors.As(err, &pe) || pe.Temporary {
				t.Errorf("Validate() = %#v, want a permanent *provision.Error", err)
			}
		})
	}
}

func TestValidateEveryVector(t *testing.T) {
	v := loadVectors(t)
	for _, rv := range v.Reservations {
		t.Run(rv.Name, func(t *testing.T) {
			r := rv.Reservation
			if err := provision.Validate(r, v.NodeID, r.Created); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if err := provision.Validate(r, v.NodeID, r.Expires().Add(time.Nanosecond)); !errors.Is(err, provision.ErrExpired) {
				t.Fatalf("Validate() after expiry = %v, want ErrExpired", err)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	r := &provision.Reservation{Created: fixedCreated, Duration: time.Hour}
	tests := []struct {
		name string
		now  time.Time
		want bool
	}{
		{"before-created", fixedCreated.Add(-time.Hour), false},
		{"at-created", fixedCreated, false},
		{"at-expiry", fixedCreated.Add(time.Hour), false},
		{"just-after-expiry", fixedCreated.Add(time.Hour + time.Nanosecond), true},
		{"long-after", fixedCreated.Add(48 * time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Expired(tt.now); got != tt.want {
				t.Errorf("Expired(%s) = %v, want %v", tt.now, got, tt.want)
			}
		})
	}
	if !r.Expires().Equal(fixedCreated.Add(time.Hour)) {
		t.Errorf("Expires() = %s", r.Expires())
	}
}

// TestCheckSubmitted checks that the explorer's check of a submitted
// reservation is the node's validation but for the node, the ID and the
// workload: what it refuses, every node refuses with the same sentinel.
func TestCheckSubmitted(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name   string
		before func(r *provision.Reservation)
		after  func(r *provision.Reservation)
		now    time.Time
		err    error
	}{
		{name: "valid-without-id-for-another-node", before: func(r *provision.Reservation) { r.NodeID = "another-node" }, after: func(r *provision.Reservation) { r.ID = "" }},
		{name: "unknown-type-is-the-nodes-to-answer", before: func(r *provision.Reservation) { r.Type, r.Data = "vm", json.RawMessage(`{}`) }},
		{name: "bad-workload-is-the-nodes-to-answer", before: func(r *provision.Reservation) { r.Data = json.RawMessage(`{"size":0,"type":"ssd"}`) }},
		{name: "bad-user-id-uppercase", after: func(r *provision.Reservation) { r.UserID = strings.ToUpper(r.UserID) }, err: provision.ErrBadField},
		{name: "bad-signature", after: func(r *provision.Reservation) { r.Duration *= 2 }, err: provision.ErrBadSignature},
		{name: "oversized-data", before: func(r *provision.Reservation) {
			r.Data = json.RawMessage(`{"size":1,"type":"` + strings.Repeat("x", provision.MaxDataSize) + `"}`)
		}, err: provision.ErrDataTooLarge},
		{name: "reference-too-long", before: func(r *provision.Reservation) { r.Reference = strings.Repeat("r", provision.MaxReferenceLength+1) }, err: provision.ErrBadField},
		{name: "created-in-the-future", now: fixedCreated.Add(-provision.MaxClockSkew - time.Second), err: provision.ErrBadField},
		{name: "expired", now: fixedCreated.Add(31 * 24 * time.Hour), err: provision.ErrExpired},
		{name: "delete-without-signature", after: func(r *provision.Reservation) { r.ToDelete = true }, err: provision.ErrBadDeleteSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.unsigned(provision.VolumeReservation)
			if tt.before != nil {
				tt.before(r)
			}
			r.Sign(f.user)
			now := tt.now
			if now.IsZero() {
				now = f.now
			}
			node := provision.Validate(r, f.nodeID, now)
			if tt.after != nil {
				tt.after(r)
			}
			err := provision.CheckSubmitted(r, now)
			if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Fatalf("CheckSubmitted() = %v, want %v", err, tt.err)
			}
			if tt.err != nil && tt.after == nil && !errors.Is(node, tt.err) {
				t.Errorf("Validate() = %v, but CheckSubmitted refused with %v", node, tt.err)
			}
		})
	}
	if err := provision.CheckSubmitted(nil, f.now); !errors.Is(err, provision.ErrBadData) {
		t.Errorf("CheckSubmitted(nil) = %v, want ErrBadData", err)
	}
}
