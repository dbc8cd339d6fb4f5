// Package provctl is the user's command line for an explorer: it creates a
// user key, builds, signs and submits reservations (volume, network,
// container), lists them, shows and watches the nodes' signed results
// (verified against the node's key) and signs deletes. cmd/provctl calls
// Run; tests run it in-process the same way:
//
//	err := provctl.Run(ctx, []string{"provctl", "--explorer", url, "--key", path, "ls", "--json"}, &stdout, &stderr)
//
// Run accepts flags after a command's ID (`provctl watch ID --until ok`);
// App alone, like any urfave/cli v2 app, wants them before it.
package provctl

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/explorer"
	"github.com/edgeprov/provisiond/identity"
	"github.com/edgeprov/provisiond/internal/certs"
	"github.com/edgeprov/provisiond/internal/version"
	"github.com/edgeprov/provisiond/provision"
)

// Errors of provctl.
var (
	ErrUsage      = errors.New("provctl: usage")
	ErrUnverified = errors.New("provctl: does not verify")
	ErrWatch      = errors.New("provctl: watch ended")
	ErrNoNode     = errors.New("provctl: no node fits")
)

// DefaultKeyPath returns ~/.config/provctl/key (or a relative path when the
// home directory is unknown).
func DefaultKeyPath() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(".config", "provctl", "key")
	}
	return filepath.Join(home, ".config", "provctl", "key")
}

// Run runs the provctl command line with args (args[0] is the program
// name), writing to stdout and stderr. Flags may follow a command's
// arguments.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// urfave/cli completes only when its flag is the last argument.
	if n := len(args); n > 1 && args[n-1] == completionFlag {
		return App(stdout, stderr).RunContext(ctx, append(flagsFirst(args[:n-1]), completionFlag))
	}
	return App(stdout, stderr).RunContext(ctx, flagsFirst(args))
}

// completionFlag is the hidden flag with which the shell scripts of
// `provctl completion` ask for the words that may come next.
const completionFlag = "--generate-bash-completion"

// boolFlags are the flags that take no value.
var boolFlags = map[string]bool{"json": true, "help": true, "h": true, "version": true, "v": true, "generate-bash-completion": true}

// flagsFirst moves the positional arguments of a command after its flags,
// so that urfave/cli parses `watch ID --until ok` like `watch --until ok ID`.
func flagsFirst(args []string) []string {
	if len(args) == 0 {
		return args
	}
	out := []string{args[0]}
	i := 1
	// Global flags, then the command path (`reserve volume`, `key new`,
	// `update volume`).
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "--" {
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(a, "=") && !boolFlags[name] && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
			i++
			continue
		}
		break
	}
	if i < len(args) && (args[i] == "reserve" || args[i] == "key" || args[i] == "network" || args[i] == "update") {
		out = append(out, args[i])
		i++
	}
	if i >= len(args) {
		return out
	}
	out = append(out, args[i]) // the command
	var positional []string
	for i++; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(a, "=") && !boolFlags[name] && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(out, positional...)
}

// App returns the provctl command line writing to stdout and stderr.
func App(stdout, stderr io.Writer) *cli.App {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	outputFlag := &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "`FORMAT`: table, wide (more columns) or json (--json is the same)", Value: "table"}
	nodeFlag := &cli.StringFlag{Name: "node", Usage: "`NODE` ID the workload runs on, or auto: a node that is up with the units free (and, for a container, holds its network and volumes); provctl prints which", Required: true}
	durationFlag := &cli.DurationFlag{Name: "duration", Usage: "how long the workload lives", Value: 24 * time.Hour}
	refFlag := &cli.StringFlag{Name: "reference", Usage: "free `TEXT` kept with the reservation (signed)"}
	progressFlag := &cli.StringFlag{Name: "progress", Usage: "`MODE` of the steps shown on stderr: auto (tty on a terminal, else plain), tty, plain or none", Value: progressAuto}
	waitFlags := []cli.Flag{
		&cli.StringFlag{Name: "wait", Usage: "after submitting, wait until the node's verified result is `STATE` (ok, error or deleted), showing the steps"},
		&cli.DurationFlag{Name: "timeout", Usage: "with --wait: give up after this long", Value: 5 * time.Minute},
		progressFlag,
	}
	app := &cli.App{
		Name:                 "provctl",
		Usage:                "create, watch and delete signed reservations on an explorer",
		Version:              version.String(),
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints the error once
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "explorer", Usage: "explorer base `URL`", Value: "http://127.0.0.1:8090", EnvVars: []string{"PROVCTL_EXPLORER"}},
			&cli.StringFlag{Name: "key", Usage: "user key seed `FILE`", Value: DefaultKeyPath(), EnvVars: []string{"PROVCTL_KEY"}},
			&cli.DurationFlag{Name: "request-timeout", Usage: "time limit of one request to the explorer", Value: 30 * time.Second, EnvVars: []string{"PROVCTL_REQUEST_TIMEOUT"}},
			&cli.StringFlag{Name: "ca", Usage: "PEM `FILE` of the CA(s) to trust for an https explorer instead of the system's roots", EnvVars: []string{"PROVCTL_CA"}},
		},
		Commands: []*cli.Command{
			{
				Name:  "key",
				Usage: "the user's key",
				Subcommands: []*cli.Command{
					{Name: "new", Usage: "create a key (never overwrites one) and print the user ID", Flags: []cli.Flag{jsonFlag}, Action: keyNew},
					{Name: "show", Usage: "print the user ID", Flags: []cli.Flag{jsonFlag}, Action: keyShow},
				},
			},
			{
				Name:  "reserve",
				Usage: "sign and submit a reservation; prints its ID",
				Subcommands: []*cli.Command{
					{
						Name:  "volume",
						Usage: "a storage volume",
						Flags: append([]cli.Flag{nodeFlag, durationFlag, refFlag,
							&cli.Int64Flag{Name: "size", Usage: "size in `GiB`", Required: true},
							&cli.StringFlag{Name: "type", Usage: "disk `TYPE`: ssd or hdd", Value: "ssd"},
						}, waitFlags...),
						Action: withClient(reserveVolume),
					},
					{
						Name:  "network",
						Usage: "a network namespace with a bridge",
						Flags: append([]cli.Flag{nodeFlag, durationFlag, refFlag,
							&cli.StringFlag{Name: "name", Usage: "network `NAME` (containers join it by this name)", Required: true},
							&cli.StringFlag{Name: "ip-range", Usage: "whole range of the network (IPv4 `CIDR`)", Required: true},
							&cli.StringFlag{Name: "subnet", Usage: "this node's part of the range (IPv4 `CIDR`)", Required: true},
						}, waitFlags...),
						Action: withClient(reserveNetwork),
					},
					{
						Name:  "container",
						Usage: "an OCI container from a rootfs tarball",
						Flags: append([]cli.Flag{nodeFlag, durationFlag, refFlag,
							&cli.StringFlag{Name: "image", Usage: "registry image `REGISTRY/REPO@sha256:DIGEST` (or REGISTRY/REPO:TAG, resolved here to the digest that is signed), or a rootfs tarball: http(s) URL, or PATH on the node below the directory it serves (provisiond run --local-images)", Required: true},
							&cli.StringFlag{Name: "image-digest", Usage: "sha256 of the tarball (`HEX`); for a registry image, the reference's digest or nothing"},
							&cli.StringSliceFlag{Name: "entrypoint", Usage: "command and arguments, one `ARG` per flag"},
							&cli.StringSliceFlag{Name: "env", Usage: "environment variable `K=V` (repeatable)"},
							&cli.StringSliceFlag{Name: "mount", Usage: "volume mount `VOLID:/path` (repeatable)"},
							&cli.StringFlag{Name: "network", Usage: "`NAME` of the user's network to join", Required: true},
							&cli.StringFlag{Name: "ip", Usage: "container `IP` inside the network's subnet", Required: true},
							&cli.Int64Flag{Name: "cpu", Usage: "`CORES`", Value: 1},
							&cli.Int64Flag{Name: "memory", Usage: "memory limit in `MiB`", Value: 256},
							&cli.Int64Flag{Name: "disk", Usage: "root disk size in `MiB`", Value: 1024},
							&cli.StringSliceFlag{Name: "publish", Usage: "forward a port of the node's public address: `NODE:CONTAINER[/tcp|/udp]` (repeatable; tcp by default)"},
						}, append(healthFlags(), waitFlags...)...),
						Action: withClient(reserveContainer),
					},
				},
			},
			networkCommand(),
			{Name: "ls", Usage: "list your reservations", Flags: []cli.Flag{jsonFlag, outputFlag}, Action: withClient(list)},
			{
				Name:  "nodes",
				Usage: "list the explorer's nodes: status (computed by the explorer), version, last seen, free and total units",
				Flags: []cli.Flag{jsonFlag, outputFlag,
					&cli.Uint64Flag{Name: "cru", Usage: "only nodes with at least `CORES` free"},
					&cli.Float64Flag{Name: "mru", Usage: "only nodes with at least `GIB` of memory free"},
					&cli.Float64Flag{Name: "sru", Usage: "only nodes with at least `GIB` of SSD free"},
					&cli.Float64Flag{Name: "hru", Usage: "only nodes with at least `GIB` of HDD free"},
					&cli.StringFlag{Name: "status", Usage: "only nodes of `STATUS`: up, down or unreported"},
				},
				Action: withClient(listNodes),
			},
			{Name: "get", Usage: "show a reservation and its node's signed result, verified", ArgsUsage: "ID", Flags: []cli.Flag{jsonFlag}, Action: withClient(get)},
			{
				Name:      "watch",
				Usage:     "wait until the reservation's verified result reaches a state (a long-poll: it answers as soon as the explorer has it)",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "until", Usage: "`STATE` to wait for: ok, error or deleted", Value: "ok"},
					&cli.DurationFlag{Name: "timeout", Usage: "give up after this long", Value: 5 * time.Minute},
					&cli.DurationFlag{Name: "interval", Usage: "ignored: the watch long-polls (kept for old scripts)", Hidden: true},
					progressFlag,
				},
				Action: withClient(watch),
			},
			{Name: "delete", Usage: "sign and submit the early deletion of a reservation you own", ArgsUsage: "ID", Action: withClient(deleteReservation)},
			logsCommand(),
			{
				Name:      "completion",
				Usage:     "print the shell completion script for bash or zsh",
				ArgsUsage: "bash|zsh",
				Description: "bash: source <(provctl completion bash)  (or save it in /etc/bash_completion.d/provctl)\n" +
					"zsh:  source <(provctl completion zsh)   (or save it as _provctl in a directory of $fpath)",
				Action: completion,
			},
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := fmt.Fprintln(c.App.Writer, "provctl", version.String())
					return err
				},
			},
		},
	}
	addUpdateCommand(app)
	return app
}

// session is what a command that talks to the explorer needs.
type session struct {
	c      *cli.Context
	key    ed25519.PrivateKey
	client *explorer.Client
}

func withClient(fn func(ctx context.Context, s *session) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		key, err := identity.Load(c.String("key"))
		if err != nil {
			if errors.Is(err, identity.ErrNoKey) {
				return fmt.Errorf("%w (create one with `provctl key new`)", err)
			}
			return err
		}
		tr, err := certs.Transport(c.String("ca"))
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		client := explorer.NewUserClient(c.String("explorer"), key, explorer.ClientOptions{Timeout: c.Duration("request-timeout"), MaxAttempts: 2, Transport: tr})
		return fn(c.Context, &session{c: c, key: key, client: client})
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func keyNew(c *cli.Context) error {
	path := c.String("key")
	key, err := identity.Create(path)
	if err != nil {
		return err
	}
	return printKey(c, path, key)
}

func keyShow(c *cli.Context) error {
	path := c.String("key")
	key, err := identity.Load(path)
	if err != nil {
		return err
	}
	return printKey(c, path, key)
}

func printKey(c *cli.Context, path string, key ed25519.PrivateKey) error {
	user := identity.UserID(key.Public().(ed25519.PublicKey))
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]string{"user_id": user, "key": path})
	}
	_, err := fmt.Fprintln(c.App.Writer, user)
	return err
}

// submit fills the common fields, checks the workload, signs and submits.
func (s *session) submit(ctx context.Context, typ provision.ReservationType, w any) error {
	start := time.Now()
	until, err := waitState(s.c, "wait", true)
	if err != nil {
		return err
	}
	node := s.c.String("node")
	if _, updating := ctx.Value(updateKey{}).(*provision.Reservation); updating {
		node = autoNode // replaced by the reservation's node below
	}
	if _, err := identity.PublicKey(node); err != nil && node != autoNode {
		return fmt.Errorf("--node: %w (or auto)", err)
	}
	data, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", typ, err)
	}
	r := &provision.Reservation{
		NodeID: node,
		Type:   typ,
		Data:   data,
		// Full precision (RFC 3339 nanoseconds in the signed bytes): two
		// reservations of the same content made one right after the other
		// have different digests, so the explorer's replay refusal does
		// not take the second for a replay of the first.
		Created:   time.Now().UTC(),
		Duration:  s.c.Duration("duration"),
		Reference: s.c.String("reference"),
	}
	if _, err := r.Workload(); err != nil {
		return err
	}
	prev, updating := ctx.Value(updateKey{}).(*provision.Reservation)
	if updating {
		// provctl update: the next version of prev (see nextVersion).
		nextVersion(prev, r)
		node = r.NodeID
	} else if node == autoNode {
		if r.NodeID, err = s.placeOn(ctx, r); err != nil {
			return err
		}
	}
	r.Sign(s.key)
	var id string
	if updating {
		id, err = r.ID, s.client.UpdateReservation(ctx, r)
	} else {
		id, err = s.client.CreateReservation(ctx, r)
	}
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(s.c.App.Writer, id); err != nil || until == "" {
		return err
	}
	p, err := newProgress(s.c.App.ErrWriter, s.c.String("progress"), start)
	if err != nil {
		return err
	}
	defer p.Close()
	p.step("✓", fmt.Sprintf("submitted %s %s to the explorer", typ, id), "waiting for node "+node+" to take it")
	ctx, cancel := context.WithTimeout(ctx, s.c.Duration("timeout"))
	defer cancel()
	_, err = s.follow(ctx, id, until, p)
	return err
}

// waitState reads the result state flag name: ok, error or deleted (or
// empty when optional).
func waitState(c *cli.Context, name string, optional bool) (provision.ResultState, error) {
	st := provision.ResultState(c.String(name))
	switch st {
	case provision.StateOk, provision.StateError, provision.StateDeleted:
		return st, nil
	case "":
		if optional {
			return "", nil
		}
	}
	return "", fmt.Errorf("%w: --%s %q: want ok, error or deleted", ErrUsage, name, st)
}

func reserveVolume(ctx context.Context, s *session) error {
	return s.submit(ctx, provision.VolumeReservation, provision.Volume{
		Size: s.c.Int64("size"),
		Type: provision.DiskType(s.c.String("type")),
	})
}

func reserveNetwork(ctx context.Context, s *session) error {
	return s.submit(ctx, provision.NetworkReservation, provision.Network{
		Name:    s.c.String("name"),
		IPRange: s.c.String("ip-range"),
		Subnet:  s.c.String("subnet"),
	})
}

func reserveContainer(ctx context.Context, s *session) error {
	image := s.c.String("image")
	if provision.IsImageRef(image) && !strings.Contains(image, "@") {
		resolved, err := resolveTag(ctx, image)
		if err != nil {
			return err
		}
		fmt.Fprintf(s.c.App.ErrWriter, "resolved %s to %s\n", image, resolved)
		image = resolved
	}
	ct := provision.Container{
		Image:       image,
		ImageDigest: s.c.String("image-digest"),
		Entrypoint:  s.c.StringSlice("entrypoint"),
		Network: provision.ContainerNetwork{
			NetworkID: provision.NetworkID(identity.UserID(s.key.Public().(ed25519.PublicKey)), s.c.String("network")),
			IP:        s.c.String("ip"),
		},
		Capacity: provision.ContainerCapacity{CPU: s.c.Int64("cpu"), Memory: s.c.Int64("memory"), DiskSize: s.c.Int64("disk")},
	}
	for _, kv := range s.c.StringSlice("env") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%w: --env %q: want K=V", ErrUsage, kv)
		}
		if ct.Env == nil {
			ct.Env = map[string]string{}
		}
		ct.Env[k] = v
	}
	for _, m := range s.c.StringSlice("mount") {
		vol, mp, ok := strings.Cut(m, ":")
		if !ok {
			return fmt.Errorf("%w: --mount %q: want VOLID:/path", ErrUsage, m)
		}
		ct.Mounts = append(ct.Mounts, provision.Mount{VolumeID: vol, Mountpoint: mp})
	}
	for _, p := range s.c.StringSlice("publish") {
		port, err := provision.ParsePort(p)
		if err != nil {
			return fmt.Errorf("%w: --publish: %w", ErrUsage, err)
		}
		ct.Publish = append(ct.Publish, port)
	}
	health, err := healthFromFlags(s.c)
	if err != nil {
		return err
	}
	ct.Health = health
	switch p := provision.RestartPolicy(s.c.String("restart")); p {
	case provision.RestartAlways, provision.RestartOnFailure, provision.RestartNever:
		ct.Restart = p
	default:
		return fmt.Errorf("%w: --restart %q: want always, on-failure or never", ErrUsage, p)
	}
	return s.submit(ctx, provision.ContainerReservation, ct)
}

// state is what ls shows for a reservation: the result's state, "pending"
// before any, "deleting" once a delete is asked and not yet answered.
func state(r *provision.Reservation) string {
	switch {
	case r.Result != nil && (r.Result.State == provision.StateDeleted || !r.ToDelete):
		return string(r.Result.State)
	case r.ToDelete:
		return "deleting"
	}
	return "pending"
}

func list(ctx context.Context, s *session) error {
	rs, err := s.client.ListReservations(ctx, "")
	if errors.Is(err, explorer.ErrTruncated) {
		fmt.Fprintf(s.c.App.ErrWriter, "warning: %v; showing the oldest %d\n", err, len(rs))
	} else if err != nil {
		return err
	}
	// Every listed reservation must be the caller's own and verify: a
	// mismatch is an error after the listing, and its row says so.
	var bad []string
	problems := make([]error, len(rs))
	for i, r := range rs {
		if problems[i] = verify(r); problems[i] == nil && r.UserID != s.client.KeyID() {
			problems[i] = fmt.Errorf("%w: owned by %s, not by your key", ErrUnverified, r.UserID)
		}
		if problems[i] != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", r.ID, problems[i]))
		}
	}
	format, err := outputFormat(s.c)
	if err != nil {
		return err
	}
	if format == "json" {
		err = printJSON(s.c.App.Writer, rs)
	} else {
		tw := tabwriter.NewWriter(s.c.App.Writer, 0, 4, 2, ' ', 0)
		if format == "wide" {
			fmt.Fprintln(tw, "ID\tTYPE\tNODE\tSTATE\tCREATED\tEXPIRES\tVERSION\tRESULT AT\tVERIFIED\tDIGEST\tREFERENCE")
		} else {
			fmt.Fprintln(tw, "ID\tTYPE\tNODE\tSTATE\tCREATED\tEXPIRES")
		}
		for i, r := range rs {
			st := state(r)
			if problems[i] != nil {
				st += " (NOT VERIFIED)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s", r.ID, r.Type, r.NodeID, st,
				r.Created.UTC().Format(time.RFC3339), r.Expires().UTC().Format(time.RFC3339))
			if format == "wide" {
				at, verified := "-", "yes"
				if r.Result != nil {
					at = r.Result.Created.UTC().Format(time.RFC3339)
				}
				if problems[i] != nil {
					verified = "NO"
				}
				fmt.Fprintf(tw, "\t%d\t%s\t%s\t%s\t%s", r.Version, at, verified, r.Digest(), r.Reference)
			}
			fmt.Fprintln(tw)
		}
		err = tw.Flush()
	}
	if err != nil {
		return err
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %d of %d reservations: %s", ErrUnverified, len(bad), len(rs), strings.Join(bad, "; "))
	}
	return nil
}

func argID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%w: %s needs exactly one reservation ID", ErrUsage, c.Command.Name)
	}
	return c.Args().First(), nil
}

// verify checks everything provctl shows of r: the owner's signature over
// the reservation's canonical bytes (whose hash is the digest a result
// answers), the owner's delete signature when a delete is marked, and the
// node's result when there is one: for r's ID, node and digest, signed by
// r's node. Every failure wraps ErrUnverified.
func verify(r *provision.Reservation) error {
	if pub, err := hex.DecodeString(r.UserID); err != nil || identity.CheckPublicKey(pub) != nil {
		return fmt.Errorf("%w: the reservation's user_id %q is not a usable ed25519 key", ErrUnverified, r.UserID)
	}
	if err := r.Verify(); err != nil {
		return fmt.Errorf("%w: the reservation's owner signature: %w", ErrUnverified, err)
	}
	if r.ToDelete {
		if err := r.VerifyDelete(); err != nil {
			return fmt.Errorf("%w: the delete's owner signature: %w", ErrUnverified, err)
		}
	}
	res := r.Result
	if res == nil {
		return nil
	}
	pub, err := identity.PublicKey(r.NodeID)
	if err != nil {
		return fmt.Errorf("%w: the result's node: %w", ErrUnverified, err)
	}
	switch {
	case res.ID != r.ID:
		return fmt.Errorf("%w: the result answers reservation %q", ErrUnverified, res.ID)
	case res.NodeID != r.NodeID:
		return fmt.Errorf("%w: the result names node %q", ErrUnverified, res.NodeID)
	case res.Digest != r.Digest():
		return fmt.Errorf("%w: the result answers digest %s, the reservation's is %s", ErrUnverified, res.Digest, r.Digest())
	}
	if err := res.Verify(pub); err != nil {
		return fmt.Errorf("%w: the result: %w", ErrUnverified, err)
	}
	return nil
}

// owner says whose r is, as get shows it: the caller's own, or plainly
// someone else's.
func (s *session) owner(r *provision.Reservation) (string, bool) {
	if r.UserID == s.client.KeyID() {
		return r.UserID + " (you)", true
	}
	return r.UserID + " (NOT YOU: someone else's reservation; your key is " + s.client.KeyID() + ")", false
}

func get(ctx context.Context, s *session) error {
	id, err := argID(s.c)
	if err != nil {
		return err
	}
	r, err := s.client.GetReservation(ctx, id)
	if err != nil {
		return err
	}
	verr := verify(r)
	if s.c.Bool("json") {
		_, mine := s.owner(r)
		out := struct {
			*provision.Reservation
			Verified bool   `json:"verified"`
			Result   bool   `json:"result_verified"`
			Mine     bool   `json:"owner_is_caller"`
			Problem  string `json:"problem,omitempty"`
		}{Reservation: r, Verified: verr == nil, Result: r.Result != nil && verr == nil, Mine: mine}
		if verr != nil {
			out.Problem = verr.Error()
		}
		if err := printJSON(s.c.App.Writer, out); err != nil {
			return err
		}
		return verr
	}
	tw := tabwriter.NewWriter(s.c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", r.ID)
	fmt.Fprintf(tw, "type:\t%s\n", r.Type)
	fmt.Fprintf(tw, "node:\t%s\n", r.NodeID)
	who, _ := s.owner(r)
	fmt.Fprintf(tw, "user:\t%s\n", who)
	fmt.Fprintf(tw, "state:\t%s\n", state(r))
	fmt.Fprintf(tw, "created:\t%s\n", r.Created.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(tw, "expires:\t%s\n", r.Expires().UTC().Format(time.RFC3339))
	if r.Reference != "" {
		fmt.Fprintf(tw, "reference:\t%s\n", r.Reference)
	}
	fmt.Fprintf(tw, "version:\t%d\n", r.Version)
	if r.Previous != "" {
		fmt.Fprintf(tw, "previous:\t%s\n", r.Previous)
	}
	fmt.Fprintf(tw, "digest:\t%s\n", r.Digest())
	fmt.Fprintf(tw, "data:\t%s\n", r.Data)
	if r.ToDelete {
		fmt.Fprintf(tw, "delete:\tsigned by the owner\n")
	}
	if res := r.Result; res == nil {
		fmt.Fprintf(tw, "result:\tnone yet\n")
	} else {
		fmt.Fprintf(tw, "result:\t%s at %s\n", res.State, res.Created.UTC().Format(time.RFC3339))
		if res.Message != "" {
			fmt.Fprintf(tw, "message:\t%s\n", res.Message)
		}
		if len(res.Data) > 0 {
			fmt.Fprintf(tw, "result data:\t%s\n", res.Data)
		}
		if st := containerStatus(r.Type, res); st != "" {
			fmt.Fprintf(tw, "status:\t%s\n", st)
		}
	}
	if verr != nil {
		fmt.Fprintf(tw, "signatures:\tNOT VERIFIED: %v\n", verr)
	} else if r.Result != nil {
		fmt.Fprintf(tw, "signatures:\tverified (owner %s, node %s, digest bound)\n", r.UserID, r.NodeID)
	} else {
		fmt.Fprintf(tw, "signatures:\tverified (owner %s)\n", r.UserID)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return verr
}

func watch(ctx context.Context, s *session) error {
	id, err := argID(s.c)
	if err != nil {
		return err
	}
	until, err := waitState(s.c, "until", false)
	if err != nil {
		return err
	}
	p, err := newProgress(s.c.App.ErrWriter, s.c.String("progress"), time.Now())
	if err != nil {
		return err
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(ctx, s.c.Duration("timeout"))
	defer cancel()
	if _, err := s.follow(ctx, id, until, p); err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.c.App.Writer, "%s: %s (signature verified)\n", id, until)
	return err
}

func deleteReservation(ctx context.Context, s *session) error {
	id, err := argID(s.c)
	if err != nil {
		return err
	}
	if _, err := s.client.DeleteReservation(ctx, id); err != nil {
		return err
	}
	_, err = fmt.Fprintf(s.c.App.Writer, "%s: delete signed and sent\n", id)
	return err
}

// outputFormat returns the format a list prints in: --output, or json when
// --json is set.
func outputFormat(c *cli.Context) (string, error) {
	if c.Bool("json") {
		return "json", nil
	}
	switch f := c.String("output"); f {
	case "table", "wide", "json":
		return f, nil
	default:
		return "", fmt.Errorf("%w: --output %q: want table, wide or json", ErrUsage, f)
	}
}

// completionScripts are the scripts `provctl completion` prints. Both ask
// provctl itself for the words that may follow what is typed so far
// (urfave/cli's --generate-bash-completion), so they follow the commands
// and flags of the provctl that runs them.
var completionScripts = map[string]string{
	"bash": `# bash completion for provctl: source <(provctl completion bash)
_provctl_complete() {
  local cur words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  if [[ "$cur" == -* ]]; then
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
  return 0
}
complete -o bashdefault -o default -F _provctl_complete provctl
`,
	"zsh": `#compdef provctl
# zsh completion for provctl: source <(provctl completion zsh), or save as _provctl in $fpath
_provctl() {
  local -a opts
  local cur=${words[-1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$(${words[@]:0:#words[@]-1} "$cur" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$(${words[@]:0:#words[@]-1} --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ "${opts[1]}" != "" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}
if [[ "$(basename -- ${(%):-%x})" != "_provctl" ]]; then
  compdef _provctl provctl
fi
`,
}

func completion(c *cli.Context) error {
	script, ok := completionScripts[c.Args().First()]
	if c.NArg() != 1 || !ok {
		return fmt.Errorf("%w: completion needs one shell: bash or zsh", ErrUsage)
	}
	_, err := io.WriteString(c.App.Writer, script)
	return err
}
