package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// FuzzAvailability adds arbitrary sequences of heartbeats (each 6 bytes:
// boot, created offset, interval, booted offset) to a record, and decodes
// arbitrary stored records: never a panic; the spans stay ordered,
// disjoint and bounded, the percentage within 0…100, and adding the same
// heartbeat again changes nothing.
func FuzzAvailability(f *testing.F) {
	f.Add([]byte{0, 1, 10, 0, 0, 0, 0, 2, 10, 0, 0, 0, 1, 9, 10, 0, 3, 0}, []byte(`{}`))
	f.Add([]byte{}, []byte(`{"spans":[{"start":"2026-01-01T00:00:00Z","end":"2025-01-01T00:00:00Z"}],"interval":-5}`))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ops []byte, stored []byte) {
		var a Availability
		if json.Unmarshal(stored, &a) == nil {
			a.Summary(base)
			a.Down(base)
		}
		a = Availability{}
		now := base
		for len(ops) >= 6 {
			op := ops[:6]
			ops = ops[6:]
			created := base.Add(time.Duration(int(op[1])<<8|int(op[2])) * time.Minute)
			if created.After(now) {
				now = created
			}
			hb := &provision.Heartbeat{NodeID: "n", BootID: string('a' + op[0]%4),
				Created: created, Booted: created.Add(-time.Duration(op[5]) * time.Hour),
				Interval: time.Duration(int(op[3])%3600+1) * time.Second}
			a.Add(hb, now)
			before, _ := json.Marshal(&a)
			a.Add(hb, now)
			after, _ := json.Marshal(&a)
			if string(before) != string(after) {
				t.Fatalf("adding a heartbeat twice changed the record:\n%s\n%s", before, after)
			}
			if len(a.Spans) > maxSpans || len(a.Reboots) > maxReboots {
				t.Fatalf("%d spans, %d reboots", len(a.Spans), len(a.Reboots))
			}
			for i, s := range a.Spans {
				if s.End.Before(s.Start) || i > 0 && !s.Start.After(a.Spans[i-1].End) {
					t.Fatalf("spans out of order or overlapping: %+v", a.Spans)
				}
			}
			sum := a.Summary(now.Add(time.Duration(op[4]) * time.Minute))
			if sum.Percent30d < 0 || sum.Percent30d > 100 {
				t.Fatalf("availability %.2f %%", sum.Percent30d)
			}
			if now.Sub(a.First) > 2*explorer.AvailabilityWindow && len(a.Spans) > 0 && a.Spans[0].End.Before(now.Add(-explorer.AvailabilityWindow)) {
				t.Fatalf("a span older than the window is kept: %+v", a.Spans[0])
			}
		}
	})
}
