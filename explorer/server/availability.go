package server

import (
	"context"
	"sort"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/provision"
)

// Bounds of an availability record.
const (
	// maxSpans is the most covered spans a node's record keeps; past it
	// the oldest are dropped (counted as not covered).
	maxSpans = 1024
	// maxReboots is the most reboots a node's record keeps.
	maxReboots = 256
)

// Span is a time range a node's heartbeats cover.
type Span struct {
	// Start is the span's start.
	Start time.Time `json:"start"`
	// End is the span's end.
	End time.Time `json:"end"`
}

// Availability is what the explorer keeps of a node's heartbeats: the
// spans they cover (merged, within the last AvailabilityWindow), its
// current boot and the reboots seen. Both stores keep it as one JSON
// document per node; Add and Summary are the one rule both use.
type Availability struct {
	// BootID is the boot id of the latest heartbeat.
	BootID string `json:"boot_id"`
	// Booted is the boot time of the latest heartbeat.
	Booted time.Time `json:"booted"`
	// Last is when the latest heartbeat was made.
	Last time.Time `json:"last"`
	// Interval is the interval the latest heartbeat announced.
	Interval time.Duration `json:"interval"`
	// First is the start of the first heartbeat's cover.
	First time.Time `json:"first"`
	// Spans are the covered spans, in time order, not overlapping.
	Spans []Span `json:"spans"`
	// Reboots are the boot times of the boot id changes seen, in order.
	Reboots []time.Time `json:"reboots,omitempty"`
}

// Add records a verified heartbeat at now and reports whether it shows a
// reboot (another boot id than the latest heartbeat's, in a later
// heartbeat). A heartbeat older than the window is ignored (false, false).
// The heartbeat covers the interval before it, from its boot at the
// earliest. Adding a heartbeat twice changes nothing.
func (a *Availability) Add(hb *provision.Heartbeat, now time.Time) (reboot, added bool) {
	if now.Sub(hb.Created) > explorer.AvailabilityWindow {
		return false, false
	}
	start := hb.Created.Add(-hb.Interval)
	if start.Before(hb.Booted) {
		start = hb.Booted
	}
	cover := Span{Start: start.UTC(), End: hb.Created.UTC()}
	if a.First.IsZero() || cover.Start.Before(a.First) {
		a.First = cover.Start
	}
	if hb.Created.After(a.Last) {
		if a.BootID != "" && hb.BootID != a.BootID {
			reboot = true
			a.Reboots = append(a.Reboots, hb.Booted.UTC())
			if len(a.Reboots) > maxReboots {
				a.Reboots = a.Reboots[len(a.Reboots)-maxReboots:]
			}
		}
		a.BootID, a.Booted, a.Last, a.Interval = hb.BootID, hb.Booted.UTC(), hb.Created.UTC(), hb.Interval
	}
	a.insert(cover, tolerance(hb.Interval))
	a.prune(now)
	return reboot, true
}

// tolerance is the gap between two covers that still counts as one span:
// a tenth of the interval and a second (a heartbeat's timer drifts).
func tolerance(interval time.Duration) time.Duration { return interval/10 + time.Second }

// insert adds s to the spans, merging those it overlaps or comes within
// tol of.
func (a *Availability) insert(s Span, tol time.Duration) {
	spans := append(a.Spans, s)
	sort.Slice(spans, func(i, j int) bool { return spans[i].Start.Before(spans[j].Start) })
	out := spans[:1]
	for _, sp := range spans[1:] {
		cur := &out[len(out)-1]
		if !sp.Start.After(cur.End.Add(tol)) {
			if sp.End.After(cur.End) {
				cur.End = sp.End
			}
			continue
		}
		out = append(out, sp)
	}
	a.Spans = out
}

// prune drops what lies before the window at now and keeps the bounds.
func (a *Availability) prune(now time.Time) {
	from := now.Add(-explorer.AvailabilityWindow)
	i := 0
	for i < len(a.Spans) && a.Spans[i].End.Before(from) {
		i++
	}
	a.Spans = a.Spans[i:]
	if len(a.Spans) > maxSpans {
		a.Spans = a.Spans[len(a.Spans)-maxSpans:]
	}
	j := 0
	for j < len(a.Reboots) && a.Reboots[j].Before(from) {
		j++
	}
	a.Reboots = a.Reboots[j:]
}

// Down reports whether the node missed DownAfterIntervals intervals at
// now, and since when.
func (a *Availability) Down(now time.Time) (bool, time.Time) {
	at := a.Last.Add(explorer.DownAfterIntervals * a.Interval)
	return now.After(at), at
}

// Summary is what the API says of the record at now: the share of the
// window [max(now − 30 days, First), now] the spans cover, plus the time
// since the latest heartbeat while it is within one interval (nothing
// missed yet); the current boot; the reboots within the window; and, for
// a node that missed three intervals, since when it is down.
func (a *Availability) Summary(now time.Time) *explorer.NodeAvailability {
	from := now.Add(-explorer.AvailabilityWindow)
	if a.First.After(from) {
		from = a.First
	}
	var covered time.Duration
	add := func(s, e time.Time) {
		if s.Before(from) {
			s = from
		}
		if e.After(now) {
			e = now
		}
		if e.After(s) {
			covered += e.Sub(s)
		}
	}
	for _, sp := range a.Spans {
		add(sp.Start, sp.End)
	}
	if now.Sub(a.Last) <= a.Interval {
		add(a.Last, now)
	}
	pct := 100.0
	if elapsed := now.Sub(from); elapsed > 0 {
		pct = min(100, 100*float64(covered)/float64(elapsed))
	}
	out := &explorer.NodeAvailability{
		Percent30d:      float64(int64(pct*100+0.5)) / 100,
		Since:           from.UTC(),
		LastHeartbeat:   a.Last,
		IntervalSeconds: a.Interval.Seconds(),
		BootID:          a.BootID,
		Booted:          a.Booted,
	}
	for _, r := range a.Reboots {
		if !r.Before(now.Add(-explorer.AvailabilityWindow)) {
			out.Reboots30d++
		}
	}
	if n := len(a.Reboots); n > 0 {
		at := a.Reboots[n-1]
		out.LastReboot = &at
	}
	if down, at := a.Down(now); down {
		out.DownSince = &at
	}
	return out
}

// FleetStore is the part of a store that keeps what nodes say of their
// life and what owners ask of their workloads: heartbeats (availability)
// and owner log requests with their sealed answers. BoltStore and
// pgstore.Store implement it; the server finds it by type assertion and
// answers 501 on its endpoints without it.
type FleetStore interface {
	// UpdateAvailability applies fn to node's availability record (an
	// empty one when it has none) and stores it, in one transaction; an
	// error of fn stores nothing.
	UpdateAvailability(ctx context.Context, node string, fn func(*Availability) error) error
	// Availabilities returns the records of the given nodes that have one.
	Availabilities(ctx context.Context, nodes []string) (map[string]*Availability, error)
	// PutLogRequest stores a new log request. It fails with ErrDuplicate
	// when a request of that name exists, and with ErrTooMany, storing
	// nothing, when its user already has maxPerUser requests kept (not
	// expired at now); the count and the insert are one atomic step.
	PutLogRequest(ctx context.Context, rec *LogRecord, maxPerUser int, now time.Time) error
	// PendingLogRequests returns up to limit requests for node that have
	// no answer and are still honoured at now (LogRequestTTL), oldest
	// first.
	PendingLogRequests(ctx context.Context, node string, now time.Time, limit int) ([]*LogRecord, error)
	// AnswerLogRequest stores node's answer to request name. It fails with
	// ErrNotFound for an unknown or expired request, ErrForbidden for
	// another node's; a request already answered keeps its first answer
	// (no error).
	AnswerLogRequest(ctx context.Context, node, name string, reply *explorer.LogReply, now time.Time) error
	// LogRecord returns request name with its answer, or ErrNotFound
	// (also once expired at now).
	LogRecord(ctx context.Context, name string, now time.Time) (*LogRecord, error)
	// ExpireLogs deletes the requests expired at now and returns how many.
	ExpireLogs(ctx context.Context, now time.Time) (int64, error)
}

// LogRecord is a kept log request and its answer.
type LogRecord struct {
	// Name is the request's name (explorer.LogRequest.Name).
	Name string `json:"name"`
	// Request is the owner's signed request.
	Request explorer.LogRequest `json:"request"`
	// Expires is when the explorer forgets it (created + LogTTL).
	Expires time.Time `json:"expires"`
	// Answered is when the node answered (nil: pending).
	Answered *time.Time `json:"answered,omitempty"`
	// Reply is the node's answer.
	Reply *explorer.LogReply `json:"reply,omitempty"`
}

// Pending reports whether the record waits for its node's answer at now.
func (l *LogRecord) Pending(now time.Time) bool {
	return l.Answered == nil && now.Sub(l.Request.Created) <= explorer.LogRequestTTL
}
