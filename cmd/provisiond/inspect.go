package main

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/selfcheck"
	"github.com/edgeprov/provisiond/provision"
)

// withReader opens the node's Reader (the daemon's socket, else the
// database) for a read command and closes it afterwards.
func withReader(fn func(*cli.Context, admin.Reader) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		r, closeFn, err := openReader(c.Context, configFrom(c))
		if err != nil {
			return err
		}
		defer closeFn()
		return fn(c, r)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func unitsString(u provision.Units) string {
	var parts []string
	if u.CRU != 0 {
		parts = append(parts, "cru="+strconv.FormatUint(u.CRU, 10))
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"mru", u.MRU}, {"sru", u.SRU}, {"hru", u.HRU}} {
		if p.v != 0 {
			parts = append(parts, p.name+"="+num(p.v))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// summary is one line of `cache ls --json`.
type summary struct {
	ID      string                    `json:"id"`
	Type    provision.ReservationType `json:"type"`
	User    string                    `json:"user_id"`
	State   provision.State           `json:"state"`
	Created time.Time                 `json:"created"`
	Expires time.Time                 `json:"expires"`
	Units   provision.Units           `json:"units"`
}

func cacheLs(c *cli.Context, r admin.Reader) error {
	f := admin.Filter{State: provision.State(c.String("state")), Type: provision.ReservationType(c.String("type")), User: c.String("user")}
	if f.State != "" && !validState(f.State) {
		return fmt.Errorf("--state %q: want one of %s", f.State, joinStates())
	}
	if f.Type != "" && !f.Type.Known() {
		return fmt.Errorf("--type %q: want network, volume or container", f.Type)
	}
	var rows []summary
	err := r.Records(c.Context, f, func(rec *provision.Record) error {
		res := rec.Reservation
		rows = append(rows, summary{ID: res.ID, Type: res.Type, User: res.UserID, State: rec.State,
			Created: res.Created, Expires: res.Expires(), Units: rec.Units})
		return nil
	})
	if err != nil {
		return err
	}
	sort.Slice(rows, func(i, j int) bool {
		if !rows[i].Created.Equal(rows[j].Created) {
			return rows[i].Created.Before(rows[j].Created)
		}
		return rows[i].ID < rows[j].ID
	})
	w := c.App.Writer
	if c.Bool("json") {
		if rows == nil {
			rows = []summary{}
		}
		return printJSON(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tUSER\tSTATE\tCREATED\tEXPIRES\tUNITS")
	for _, s := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Type, short(s.User, 12), s.State, ts(s.Created), ts(s.Expires), unitsString(s.Units))
	}
	return tw.Flush()
}

func validState(s provision.State) bool {
	for _, k := range provision.States {
		if s == k {
			return true
		}
	}
	return false
}

func joinStates() string {
	var s []string
	for _, k := range provision.States {
		s = append(s, string(k))
	}
	return strings.Join(s, ", ")
}

// verifyResult checks a stored result's signature with the key of the node
// that signed it and that it is this node's own.
func verifyResult(res *provision.Result, nodeID string) error {
	if res == nil {
		return errors.New("no result yet")
	}
	if nodeID != "" && res.NodeID != nodeID {
		return fmt.Errorf("signed by %s, not by this node %s", res.NodeID, nodeID)
	}
	pub, err := identity.PublicKey(res.NodeID)
	if err != nil {
		return err
	}
	return res.Verify(pub)
}

// shown is `cache show --json`: the record and the outcome of the check.
type shown struct {
	*provision.Record
	SignatureVerified bool   `json:"signature_verified"`
	SignatureError    string `json:"signature_error,omitempty"`
}

func cacheShow(c *cli.Context, r admin.Reader) error {
	id := c.Args().First()
	if id == "" || c.NArg() > 1 {
		return errors.New("cache show: want exactly one reservation ID")
	}
	rec, err := r.Record(c.Context, id)
	if errors.Is(err, provision.ErrNotFound) || errors.Is(err, admin.ErrNotFound) {
		return fmt.Errorf("no reservation %q on this node", id)
	}
	if err != nil {
		return err
	}
	st, err := r.Status(c.Context)
	if err != nil {
		return err
	}
	verr := verifyResult(rec.Result, st.NodeID)
	out := shown{Record: rec, SignatureVerified: verr == nil}
	if verr != nil {
		out.SignatureError = verr.Error()
	}
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, out)
	}
	res := rec.Reservation
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", res.ID)
	fmt.Fprintf(tw, "type:\t%s\n", res.Type)
	fmt.Fprintf(tw, "user:\t%s\n", res.UserID)
	fmt.Fprintf(tw, "state:\t%s\n", rec.State)
	fmt.Fprintf(tw, "version:\t%d\n", res.Version)
	fmt.Fprintf(tw, "digest:\t%s\n", rec.Digest)
	if p := rec.Prior; p != nil && p.Reservation != nil {
		fmt.Fprintf(tw, "updating from:\tversion %d (%s)\n", p.Reservation.Version, p.Digest)
	}
	if f := rec.FailedUpdate; f != nil {
		fmt.Fprintf(tw, "failed update:\tversion %d: %s\n", f.Version, f.Message)
	}
	fmt.Fprintf(tw, "created:\t%s\n", ts(res.Created))
	fmt.Fprintf(tw, "expires:\t%s\n", ts(res.Expires()))
	fmt.Fprintf(tw, "units:\t%s\n", unitsString(rec.Units))
	fmt.Fprintf(tw, "attempts:\t%d\n", rec.Attempts)
	fmt.Fprintf(tw, "data:\t%s\n", provision.CanonicalData(res.Data))
	if rec.Result != nil {
		fmt.Fprintf(tw, "result:\t%s %s\n", rec.Result.State, ts(rec.Result.Created))
		if rec.Result.Message != "" {
			fmt.Fprintf(tw, "message:\t%s\n", rec.Result.Message)
		}
		if len(rec.Result.Data) > 0 {
			fmt.Fprintf(tw, "result data:\t%s\n", provision.CanonicalData(rec.Result.Data))
		}
	}
	if verr == nil {
		fmt.Fprintf(tw, "signature:\tverified (node %s)\n", rec.Result.NodeID)
	} else {
		fmt.Fprintf(tw, "signature:\tNOT VERIFIED: %v\n", verr)
	}
	if rf := rec.Refused; rf != nil {
		fmt.Fprintf(tw, "delivery:\tresult refused by the explorer: %s, at %s (the %s result of %s; %s)\n",
			rf.Reason, ts(rf.At), rf.State, ts(rf.Created), rf.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nhistory:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tSTATE\tMESSAGE")
	for _, h := range rec.History {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", h.At.UTC().Format(time.RFC3339Nano), h.State, h.Message)
	}
	return tw.Flush()
}

func cacheExport(c *cli.Context, r admin.Reader) error {
	enc := json.NewEncoder(c.App.Writer)
	return r.Records(c.Context, admin.Filter{}, func(rec *provision.Record) error { return enc.Encode(rec) })
}

func showStats(c *cli.Context, r admin.Reader) error {
	s, err := r.Stats(c.Context)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, s)
	}
	usable := s.Capacity.Usable()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "UNIT\tUSED\tUSABLE\tRESERVED\tTOTAL\t")
	fmt.Fprintf(tw, "cru\t%d\t%d\t%d\t%d\t\n", s.Used.CRU, usable.CRU, s.Capacity.Reserved.CRU, s.Capacity.Total.CRU)
	for _, row := range []struct {
		name                          string
		used, usable, reserved, total float64
	}{
		{"mru", s.Used.MRU, usable.MRU, s.Capacity.Reserved.MRU, s.Capacity.Total.MRU},
		{"sru", s.Used.SRU, usable.SRU, s.Capacity.Reserved.SRU, s.Capacity.Total.SRU},
		{"hru", s.Used.HRU, usable.HRU, s.Capacity.Reserved.HRU, s.Capacity.Total.HRU},
	} {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", row.name, row.used, row.usable, row.reserved, row.total)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nworkloads:")
	for _, t := range provision.Types {
		fmt.Fprintf(w, "  %-10s %d\n", t, s.Workloads[t])
	}
	fmt.Fprintf(w, "\nquota per user: %s", quotaString(s.Quotas.Default))
	if n := len(s.Quotas.Users); n > 0 {
		fmt.Fprintf(w, " (%d users with their own)", n)
	}
	fmt.Fprintln(w)
	if len(s.Users) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nusers:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tWORKLOADS\tCRU\tMRU\tSRU\tHRU\tQUOTA")
	for _, u := range s.Users {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%s\n", u.User, u.Used.Workloads,
			u.Used.Units.CRU, u.Used.Units.MRU, u.Used.Units.SRU, u.Used.Units.HRU, quotaString(u.Quota))
	}
	return tw.Flush()
}

// quotaString formats q as --user-quota reads it; "unlimited" for the
// zero Quota.
func quotaString(q provision.Quota) string {
	if q.Unlimited() {
		return "unlimited"
	}
	var parts []string
	if q.Units.CRU > 0 {
		parts = append(parts, fmt.Sprintf("cru=%d", q.Units.CRU))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"mru", q.Units.MRU}, {"sru", q.Units.SRU}, {"hru", q.Units.HRU}} {
		if f.v > 0 {
			parts = append(parts, fmt.Sprintf("%s=%s", f.name, strconv.FormatFloat(f.v, 'f', -1, 64)))
		}
	}
	if q.Workloads > 0 {
		parts = append(parts, fmt.Sprintf("workloads=%d", q.Workloads))
	}
	return strings.Join(parts, ",")
}

func showStatus(c *cli.Context, r admin.Reader) error {
	s, err := r.Status(c.Context)
	if err != nil {
		return err
	}
	if !s.Running && s.Checks == nil && c.Bool("checks") {
		// No daemon to ask: the command checks the machine itself.
		s.Checks = selfcheck.Run(c.Context, checkOptions(configFrom(c), "cli"))
	}
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, s)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	daemon := "not running (read from the database)"
	if s.Running {
		daemon = "running since " + ts(s.Started)
	}
	fmt.Fprintf(tw, "node:\t%s\n", s.NodeID)
	fmt.Fprintf(tw, "daemon:\t%s\n", daemon)
	if s.Running {
		fmt.Fprintf(tw, "version:\t%s\n", s.Version)
		fmt.Fprintf(tw, "explorer:\t%s\n", s.Explorer)
		fmt.Fprintf(tw, "caught up:\t%t\n", s.CaughtUp)
		fmt.Fprintf(tw, "queued:\t%d\n", s.Queued)
		fmt.Fprintf(tw, "busy workers:\t%d\n", s.Busy)
		lastErr := "none"
		if s.LastPollError != "" {
			lastErr = ts(s.LastPollErrorAt) + " " + s.LastPollError
		}
		fmt.Fprintf(tw, "last poll error:\t%s\n", lastErr)
		if sk := s.ClockSkew; sk != nil {
			fmt.Fprintf(tw, "clock skew:\t%+.0fs (explorer minus node, at %s): %s\n", sk.Seconds, ts(sk.MeasuredAt), sk.Hint)
		}
	}
	fmt.Fprintf(tw, "cursor:\t%d\n", s.Cursor)
	fmt.Fprintf(tw, "outbox depth:\t%d\n", s.OutboxDepth)
	fmt.Fprintf(tw, "database:\t%s\n", s.Database)
	var counts []string
	for _, st := range provision.States {
		counts = append(counts, fmt.Sprintf("%s=%d", st, s.Records[st]))
	}
	fmt.Fprintf(tw, "records:\t%s\n", strings.Join(counts, " "))
	if d := s.Disk; d != nil {
		fmt.Fprintf(tw, "disk:\timages %s, containers %s, volumes %s, logs %s, database %s (at %s)\n",
			size(d.Images), size(d.Containers), size(d.Volumes), size(d.Logs), size(d.Database), ts(d.MeasuredAt))
		if r := d.Removed; r != nil {
			fmt.Fprintf(tw, "last gc:\t%s: removed %d images (%s), %d leftover directories, %d expired records\n",
				ts(d.LastSweep), r.Images, size(r.Bytes), r.Temporary, r.Records)
		}
	}
	if err := tw.Flush(); err != nil || s.Checks == nil {
		return err
	}
	return printChecks(w, s.Checks)
}

func keyShow(c *cli.Context) error {
	cfg := configFrom(c)
	key, err := identity.Load(cfg.identityPath())
	if errors.Is(err, identity.ErrNoKey) {
		return fmt.Errorf("no node identity at %s yet: `provisiond run` creates it", cfg.identityPath())
	}
	if err != nil {
		return err
	}
	pk := key.Public().(ed25519.PublicKey)
	out := struct {
		NodeID    string `json:"node_id"`
		PublicKey string `json:"public_key"`
	}{identity.NodeID(pk), hex.EncodeToString(pk)}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	_, err = fmt.Fprintf(c.App.Writer, "node id:    %s\npublic key: %s\n", out.NodeID, out.PublicKey)
	return err
}

// size formats a byte count in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
