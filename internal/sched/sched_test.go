package sched

import (
	"testing"
	"testing/synctest"
	"time"
)

// Urgent requests are taken first; a request for a running ID runs after
// it, merged; a retry waits its time on a timer and an ID is never handed
// out twice at once.
func TestScheduler(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := New()
		defer s.Stop()
		s.Request("new", Drive, false)
		s.Request("delete", Drive, true)
		id, ops, ok := s.Next(t.Context())
		if !ok || id != "delete" || ops != Drive {
			t.Fatalf("first taken %q %v %v, want the urgent delete", id, ops, ok)
		}
		id, _, _ = s.Next(t.Context())
		if id != "new" {
			t.Fatalf("second taken %q, want new", id)
		}
		s.Request("new", Inspect, false) // while it runs
		if q, _ := s.Counts(); q != 0 {
			t.Fatalf("%d queued while the only request is for a running ID", q)
		}
		s.Done("delete", 0, 0, false, false)
		if idle := s.Done("new", 0, 0, false, false); idle {
			t.Fatal("Done reported idle with a merged request pending")
		}
		id, ops, _ = s.Next(t.Context())
		if id != "new" || ops != Inspect {
			t.Fatalf("after Done taken %q %v, want new with the merged Inspect", id, ops)
		}
		start := time.Now()
		s.Done("new", time.Minute, Drive, false, false)
		if _, w := s.Counts(); w != 1 {
			t.Fatalf("%d waiting after a retry, want 1", w)
		}
		id, ops, _ = s.Next(t.Context())
		if id != "new" || ops != Drive || time.Since(start) != time.Minute {
			t.Fatalf("retry taken %q %v after %v, want new Drive after 1m", id, ops, time.Since(start))
		}
		s.Done("new", 0, 0, false, false)
	})
}
