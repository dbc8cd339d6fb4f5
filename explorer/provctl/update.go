package provctl

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/provision"
)

// updateKey marks, in the context of a reserve action that provctl update
// runs, the reservation whose next version it submits.
type updateKey struct{}

// addUpdateCommand adds `provctl update TYPE ID` to app: one subcommand per
// subcommand of reserve, with the same flags (copies, none required, no
// --node) and the same action, run for the next version of the
// reservation ID. The flags the user does not give keep the values of the
// current version (see prefill), so the reserve definitions stay the one
// place that says what a flag sets.
func addUpdateCommand(app *cli.App) {
	i := slices.IndexFunc(app.Commands, func(c *cli.Command) bool { return c.Name == "reserve" })
	if i < 0 {
		return
	}
	up := &cli.Command{
		Name:  "update",
		Usage: "sign and submit the next version of a reservation you own (the flags of reserve; those not given keep their values); prints its ID",
	}
	for _, sub := range app.Commands[i].Subcommands {
		typ := provision.ReservationType(sub.Name)
		action := sub.Action
		var flags []cli.Flag
		for _, f := range sub.Flags {
			if slices.Contains(f.Names(), "node") {
				continue // the node is the reservation's
			}
			flags = append(flags, optional(f))
		}
		up.Subcommands = append(up.Subcommands, &cli.Command{
			Name:      sub.Name,
			Usage:     "the next version of " + sub.Usage,
			ArgsUsage: "ID",
			Flags:     flags,
			Action: withClient(func(ctx context.Context, s *session) error {
				id, err := argID(s.c)
				if err != nil {
					return err
				}
				cur, err := s.client.GetReservation(ctx, id)
				if err != nil {
					return err
				}
				if err := verify(cur); err != nil {
					return err
				}
				if _, mine := s.owner(cur); !mine {
					return fmt.Errorf("%w: reservation %s is owned by %s, not by your key", ErrUsage, id, cur.UserID)
				}
				if cur.Type != typ {
					return fmt.Errorf("%w: reservation %s is a %s, not a %s", ErrUsage, id, cur.Type, typ)
				}
				if cur.ToDelete {
					return fmt.Errorf("%w: reservation %s is being deleted", ErrUsage, id)
				}
				if err := prefill(s.c, cur, func(netID string) (string, error) { return s.networkName(ctx, cur.UserID, netID) }); err != nil {
					return err
				}
				cur.Result, cur.Delivered = nil, nil
				s.c.Context = context.WithValue(ctx, updateKey{}, cur)
				return action(s.c)
			}),
		})
	}
	app.Commands = slices.Insert(app.Commands, i+1, up)
}

// optional returns a copy of the flag f that is not required.
func optional(f cli.Flag) cli.Flag {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return f
	}
	c := reflect.New(v.Elem().Type())
	c.Elem().Set(v.Elem())
	if r := c.Elem().FieldByName("Required"); r.IsValid() && r.CanSet() && r.Kind() == reflect.Bool {
		r.SetBool(false)
	}
	return c.Interface().(cli.Flag)
}

// prefill sets each flag of c that the user did not give to its value in
// cur, the current version, for the flags provctl reserve reads into the
// workload. A flag added to reserve later and not known here keeps its
// reserve default.
func prefill(c *cli.Context, cur *provision.Reservation, netName func(id string) (string, error)) error {
	w, err := cur.Workload()
	if err != nil {
		return fmt.Errorf("reservation %s: %w", cur.ID, err)
	}
	vals := map[string][]string{
		"duration":  {cur.Duration.String()},
		"reference": {cur.Reference},
	}
	switch w := w.(type) {
	case *provision.Volume:
		vals["size"] = []string{strconv.FormatInt(w.Size, 10)}
		vals["type"] = []string{string(w.Type)}
	case *provision.Network:
		if w.WireGuard != nil {
			// reserve network has no flags for WireGuard: its next version
			// would drop the key and the peers (the node refuses that).
			return fmt.Errorf("%w: reservation %s is a member of WireGuard network %q: change its members with `provctl network add --name %s`",
				ErrUsage, cur.ID, w.Name, w.Name)
		}
		vals["name"], vals["ip-range"], vals["subnet"] = []string{w.Name}, []string{w.IPRange}, []string{w.Subnet}
	case *provision.Container:
		vals["image"], vals["image-digest"] = []string{w.Image}, []string{w.ImageDigest}
		vals["entrypoint"] = w.Entrypoint
		for _, k := range sortedKeys(w.Env) {
			vals["env"] = append(vals["env"], k+"="+w.Env[k])
		}
		for _, m := range w.Mounts {
			vals["mount"] = append(vals["mount"], m.VolumeID+":"+m.Mountpoint)
		}
		if !c.IsSet("network") && w.Network.NetworkID != "" {
			name, err := netName(w.Network.NetworkID)
			if err != nil {
				return err
			}
			vals["network"] = []string{name}
		}
		vals["ip"] = []string{w.Network.IP}
		vals["cpu"] = []string{strconv.FormatInt(w.Capacity.CPU, 10)}
		vals["memory"] = []string{strconv.FormatInt(w.Capacity.Memory, 10)}
		vals["disk"] = []string{strconv.FormatInt(w.Capacity.DiskSize, 10)}
		for _, p := range w.Publish {
			vals["publish"] = append(vals["publish"], p.String())
		}
		if w.Restart != provision.RestartDefault {
			vals["restart"] = []string{string(w.Restart)}
		}
		if h := w.Health; h != nil && !c.IsSet("health-tcp") && !c.IsSet("health-http") && !c.IsSet("health-cmd") {
			switch {
			case h.TCPPort != 0:
				vals["health-tcp"] = []string{strconv.Itoa(h.TCPPort)}
			case h.HTTPPort != 0:
				vals["health-http"] = []string{strconv.Itoa(h.HTTPPort) + h.HTTPPath}
			default:
				vals["health-cmd"] = []string{quoteWords(h.Exec)}
			}
			vals["health-interval"] = []string{h.IntervalOrDefault().String()}
			vals["health-timeout"] = []string{h.TimeoutOrDefault().String()}
			vals["health-failures"] = []string{strconv.Itoa(h.FailuresOrDefault())}
			vals["health-start-period"] = []string{h.StartPeriodOrDefault().String()}
		}
	}
	for name, vs := range vals {
		if c.IsSet(name) || !slices.ContainsFunc(c.Command.Flags, func(f cli.Flag) bool { return slices.Contains(f.Names(), name) }) {
			continue
		}
		for _, v := range vs {
			if err := c.Set(name, v); err != nil {
				return fmt.Errorf("keeping --%s %q: %w", name, v, err)
			}
		}
	}
	return nil
}

// networkName finds the name of the user's network whose NetworkID is id
// (a container names its network by ID, the flag by name) among the
// user's network reservations.
func (s *session) networkName(ctx context.Context, user, id string) (string, error) {
	rs, err := s.client.ListReservations(ctx, user)
	if err != nil {
		return "", fmt.Errorf("finding the name of network %s: %w", id, err)
	}
	for _, r := range rs {
		if r.Type != provision.NetworkReservation {
			continue
		}
		if w, err := r.Workload(); err == nil && provision.NetworkID(user, w.(*provision.Network).Name) == id {
			return w.(*provision.Network).Name, nil
		}
	}
	return "", fmt.Errorf("%w: no network of yours has the ID %s; give --network NAME", ErrUsage, id)
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// nextVersion makes r, built by a reserve action from the flags, the next
// version of prev: the same ID, node and created, version plus one, prev's
// digest as previous.
func nextVersion(prev, r *provision.Reservation) {
	r.ID, r.NodeID, r.Created = prev.ID, prev.NodeID, prev.Created
	r.Version, r.Previous = prev.Version+1, prev.Digest()
}

// quoteWords writes words as --health-cmd reads them back (splitWords):
// each in single quotes; a single quote inside closes them, is escaped
// with a backslash and opens them again.
func quoteWords(words []string) string {
	q := make([]string, len(words))
	for i, w := range words {
		q[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}
