package provctl

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/provision"
	"github.com/edgeprov/provisiond/stats"
)

// maxNodePages bounds how many pages `provctl nodes` and `--node auto`
// read (of explorer.NodesPageMax nodes each): 100,000 nodes.
const maxNodePages = 200

// autoNode is the --node value that lets provctl pick the node.
const autoNode = "auto"

// nodeFilter reads the filter flags of `provctl nodes`: free units and
// status.
func nodeFilter(s *session) (explorer.NodeFilter, error) {
	f := explorer.NodeFilter{
		MinFree: provision.Units{CRU: s.c.Uint64("cru"), MRU: s.c.Float64("mru"), SRU: s.c.Float64("sru"), HRU: s.c.Float64("hru")},
		Status:  s.c.String("status"),
		Limit:   explorer.NodesPageMax,
	}
	switch f.Status {
	case "", explorer.NodeUp, explorer.NodeDown, explorer.NodeUnreported:
	default:
		return f, fmt.Errorf("%w: --status %q: want %s, %s or %s", ErrUsage, f.Status, explorer.NodeUp, explorer.NodeDown, explorer.NodeUnreported)
	}
	if f.MinFree.MRU < 0 || f.MinFree.SRU < 0 || f.MinFree.HRU < 0 {
		return f, fmt.Errorf("%w: free units are at least 0", ErrUsage)
	}
	return f, nil
}

// allNodes reads every page of the nodes that pass f.
func (s *session) allNodes(ctx context.Context, f explorer.NodeFilter) (*explorer.NodesReply, error) {
	var all *explorer.NodesReply
	for range maxNodePages {
		page, err := s.client.ListNodes(ctx, f)
		if err != nil {
			return nil, err
		}
		if all == nil {
			all = page
		} else {
			all.Nodes = append(all.Nodes, page.Nodes...)
		}
		if page.Next == "" {
			all.Next = ""
			return all, nil
		}
		if page.Next <= f.After {
			return nil, fmt.Errorf("listing nodes: the explorer's next page %q does not follow %q", page.Next, f.After)
		}
		f.After = page.Next
	}
	return nil, fmt.Errorf("listing nodes: more than %d pages", maxNodePages)
}

func listNodes(ctx context.Context, s *session) error {
	f, err := nodeFilter(s)
	if err != nil {
		return err
	}
	format, err := outputFormat(s.c)
	if err != nil {
		return err
	}
	all, err := s.allNodes(ctx, f)
	if err != nil {
		return err
	}
	if format == "json" {
		return printJSON(s.c.App.Writer, all)
	}
	return printNodes(s.c.App.Writer, all, format == "wide")
}

// printNodes prints a table of nodes: free / total per unit, or in wide
// format total, system reserve, reserved and free.
func printNodes(w io.Writer, all *explorer.NodesReply, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ago := func(t time.Time) string {
		d := all.AsOf.Sub(t).Round(time.Second)
		if d < 0 {
			d = 0
		}
		return d.String() + " ago"
	}
	version := func(v string) string {
		if v == "" {
			return "-"
		}
		return v
	}
	if wide {
		fmt.Fprintln(tw, "NODE\tSTATUS\tVERSION\tLAST SEEN\tREGISTERED\tCRU T/S/R/F\tMRU GiB T/S/R/F\tSRU GiB T/S/R/F\tHRU GiB T/S/R/F\tWORKLOADS\tAVAILABILITY 30D")
	} else {
		fmt.Fprintln(tw, "NODE\tSTATUS\tVERSION\tLAST SEEN\tFREE CRU\tFREE MRU GiB\tFREE SRU GiB\tFREE HRU GiB\tAVAILABILITY 30D")
	}
	for _, n := range all.Nodes {
		u := n.Units
		if wide {
			four := func(f explorer.UnitFigures) string {
				return fmt.Sprintf("%s/%s/%s/%s", num(f.Total), num(f.System), num(f.Reserved), num(f.Free))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.NodeID, n.Status, version(n.Version), ago(n.LastSeen),
				n.Registered.UTC().Format(time.RFC3339), four(u.CRU), four(u.MRU), four(u.SRU), four(u.HRU), workloads(n.Workloads), availability(n.Availability))
			continue
		}
		two := func(f explorer.UnitFigures) string { return num(f.Free) + " / " + num(f.Total) }
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.NodeID, n.Status, version(n.Version), ago(n.LastSeen),
			two(u.CRU), two(u.MRU), two(u.SRU), two(u.HRU), availability(n.Availability))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d nodes as of %s; down: not heard from for more than %s\n",
		len(all.Nodes), all.AsOf.UTC().Format(time.RFC3339), time.Duration(all.DownAfterSeconds*float64(time.Second)))
	return err
}

// availability prints a node's 30-day availability and reboots; "-"
// before its first heartbeat.
func availability(a *explorer.NodeAvailability) string {
	if a == nil {
		return "-"
	}
	out := fmt.Sprintf("%.2f%%", a.Percent30d)
	if a.Reboots30d > 0 {
		out += fmt.Sprintf(" (%d reboots)", a.Reboots30d)
	}
	return out
}

// num prints a unit figure with at most one decimal.
func num(v float64) string {
	s := fmt.Sprintf("%.1f", v)
	return strings.TrimSuffix(s, ".0")
}

func workloads(m map[provision.ReservationType]uint64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, t := range provision.Types {
		if n := m[t]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", t, n))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ",")
}

// placeOn picks the node for a reservation submitted with --node auto: a
// node that is up and has the reservation's units free (stats.Units, the
// node's own table) and, for a container, that holds the user's network
// it joins and the volumes it mounts, deployed. Among those it takes the
// one with the most free memory, then cores, then SSD, then the lowest
// ID. It prints the choice on stderr.
func (s *session) placeOn(ctx context.Context, r *provision.Reservation) (string, error) {
	want, err := stats.Units(r)
	if err != nil {
		return "", err
	}
	allowed, err := s.containerNodes(ctx, r)
	if err != nil {
		return "", err
	}
	all, err := s.allNodes(ctx, explorer.NodeFilter{MinFree: want, Status: explorer.NodeUp, Limit: explorer.NodesPageMax})
	if err != nil {
		return "", err
	}
	var fit []explorer.NodeSummary
	for _, n := range all.Nodes {
		// The explorer filtered; check again what provctl relies on.
		if n.Status != explorer.NodeUp || len(want.Short(n.Units.Free())) > 0 {
			continue
		}
		if allowed != nil && !allowed[n.NodeID] {
			continue
		}
		fit = append(fit, n)
	}
	if len(fit) == 0 {
		where := ""
		if allowed != nil {
			where = " among the nodes holding its network and volumes"
		}
		return "", fmt.Errorf("%w: no node is up with %s free%s (see provctl nodes)", ErrNoNode, unitsText(want), where)
	}
	sort.Slice(fit, func(i, j int) bool {
		a, b := fit[i].Units, fit[j].Units
		switch {
		case a.MRU.Free != b.MRU.Free:
			return a.MRU.Free > b.MRU.Free
		case a.CRU.Free != b.CRU.Free:
			return a.CRU.Free > b.CRU.Free
		case a.SRU.Free != b.SRU.Free:
			return a.SRU.Free > b.SRU.Free
		}
		return fit[i].NodeID < fit[j].NodeID
	})
	n := fit[0]
	fmt.Fprintf(s.c.App.ErrWriter, "node auto: %s (up; free before this: %s; %d of %d up nodes fit)\n",
		n.NodeID, unitsText(n.Units.Free()), len(fit), len(all.Nodes))
	return n.NodeID, nil
}

func unitsText(u provision.Units) string {
	return fmt.Sprintf("cru %d, mru %s GiB, sru %s GiB, hru %s GiB", u.CRU, num(u.MRU), num(u.SRU), num(u.HRU))
}

// containerNodes returns, for a container, the nodes where the user's
// network it joins and every volume it mounts are deployed (their result
// verified and ok, no delete asked); nil for other types: any node.
func (s *session) containerNodes(ctx context.Context, r *provision.Reservation) (map[string]bool, error) {
	w, err := r.Workload()
	if err != nil {
		return nil, err
	}
	ct, ok := w.(*provision.Container)
	if !ok {
		return nil, nil
	}
	rs, err := s.client.ListReservations(ctx, "")
	if err != nil {
		return nil, err
	}
	me := identity.UserID(s.key.Public().(ed25519.PublicKey))
	live := func(x *provision.Reservation) bool {
		return x.UserID == me && !x.ToDelete && x.Result != nil && x.Result.State == provision.StateOk && verify(x) == nil
	}
	allowed := map[string]bool{}
	for _, x := range rs {
		if x.Type != provision.NetworkReservation || !live(x) {
			continue
		}
		if nw, err := x.Workload(); err == nil && provision.NetworkID(me, nw.(*provision.Network).Name) == ct.Network.NetworkID {
			allowed[x.NodeID] = true
		}
	}
	for _, m := range ct.Mounts {
		node := ""
		for _, x := range rs {
			if x.ID == m.VolumeID && x.Type == provision.VolumeReservation && live(x) {
				node = x.NodeID
			}
		}
		for id := range allowed {
			if id != node {
				delete(allowed, id)
			}
		}
	}
	return allowed, nil
}
