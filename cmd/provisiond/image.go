package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/admin"
	"github.com/edgeprov/provisiond/internal/images"
	"github.com/edgeprov/provisiond/internal/layer"
	"github.com/edgeprov/provisiond/primitives/container"
	"github.com/edgeprov/provisiond/provision"
)

// imageCommand is `provisiond image`: the node's container images.
func imageCommand(jsonFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "list, prune and import the node's container images",
		Subcommands: []*cli.Command{
			{Name: "ls", Usage: "list images: digest, kind, size on disk, the live reservations that reference them", Flags: withGlobal(jsonFlag), Action: withReader(imageLs)},
			{
				Name:  "prune",
				Usage: "remove the images no live reservation references (the daemon must be stopped: it collects them itself every --gc-interval)",
				Flags: withGlobal(
					&cli.BoolFlag{Name: "imported", Usage: "also remove imported images nothing references"},
					&cli.DurationFlag{Name: "grace", Usage: "keep what was stored less than this long ago", Value: 0},
					jsonFlag,
				),
				Action: withReader(imagePrune),
			},
			{
				Name:      "import",
				Usage:     "store the images of an OCI image layout (directory or tar) or a `docker save` archive, for nodes without a registry; prints the digests to sign (REGISTRY/REPO@sha256:DIGEST, any REGISTRY/REPO)",
				ArgsUsage: "FILE",
				Flags:     withGlobal(jsonFlag),
				Action:    imageImport,
			},
		},
	}
}

// imageStore opens the image store of the node's data directory.
func imageStore(cfg *config) *images.Store {
	return images.New(images.Options{
		Dir:   cfg.DataDir,
		Limit: layer.Limit{Bytes: container.DefaultMaxImageSize, Entries: container.DefaultMaxImageEntries},
	})
}

// imageRefs returns, per image digest, the live container reservations
// that reference it.
func imageRefs(c *cli.Context, r admin.Reader) (map[string][]string, error) {
	refs := map[string][]string{}
	err := r.Records(c.Context, admin.Filter{Type: provision.ContainerReservation}, func(rec *provision.Record) error {
		if rec.State.Final() {
			return nil
		}
		w, err := rec.Reservation.Workload()
		if err != nil {
			return fmt.Errorf("record %s: %w", rec.Reservation.ID, err)
		}
		if ct, ok := w.(*provision.Container); ok {
			refs[ct.ImageSHA256()] = append(refs[ct.ImageSHA256()], rec.Reservation.ID)
		}
		return nil
	})
	return refs, err
}

type imageRow struct {
	Digest       string    `json:"digest"`
	Kind         string    `json:"kind"` // registry manifest, registry index or rootfs tar
	Bytes        int64     `json:"bytes"`
	Layers       int       `json:"layers"`
	Imported     bool      `json:"imported,omitempty"`
	Stored       time.Time `json:"stored"`
	ReferencedBy []string  `json:"referenced_by"`
}

func imageLs(c *cli.Context, r admin.Reader) error {
	cfg := configFrom(c)
	refs, err := imageRefs(c, r)
	if err != nil {
		return err
	}
	list, err := imageStore(cfg).List()
	if err != nil {
		return err
	}
	rows := []imageRow{}
	for _, i := range list {
		kind := "manifest"
		if i.Index {
			kind = "index"
		}
		rows = append(rows, imageRow{Digest: i.Digest, Kind: kind, Bytes: i.Blobs + i.Unpacked, Layers: i.Layers,
			Imported: i.Imported, Stored: i.Stored, ReferencedBy: nonNil(refs[i.Digest])})
	}
	tars, _ := os.ReadDir(filepath.Join(cfg.DataDir, "images"))
	for _, e := range tars {
		if len(e.Name()) != 64 || !e.IsDir() {
			continue
		}
		fi, _ := e.Info()
		var at time.Time
		if fi != nil {
			at = fi.ModTime().UTC()
		}
		rows = append(rows, imageRow{Digest: e.Name(), Kind: "tar", Bytes: container.Allocated(filepath.Join(cfg.DataDir, "images", e.Name())),
			Layers: 1, Stored: at, ReferencedBy: nonNil(refs[e.Name()])})
	}
	slices.SortFunc(rows, func(a, b imageRow) int { return strings.Compare(a.Digest, b.Digest) })
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tKIND\tSIZE\tLAYERS\tSTORED\tREFERENCED BY")
	for _, row := range rows {
		kind := row.Kind
		if row.Imported {
			kind += " (imported)"
		}
		by := strings.Join(row.ReferencedBy, ",")
		if by == "" {
			by = "-"
		}
		fmt.Fprintf(tw, "sha256:%s\t%s\t%s\t%d\t%s\t%s\n", row.Digest, kind, mib(row.Bytes), row.Layers, ts(row.Stored), by)
	}
	return tw.Flush()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func imagePrune(c *cli.Context, r admin.Reader) error {
	if _, ok := r.(*admin.Local); !ok {
		return fmt.Errorf("provisiond runs (its admin socket answers): it collects unused images itself every --gc-interval; stop it to prune by hand")
	}
	cfg := configFrom(c)
	refs, err := imageRefs(c, r)
	if err != nil {
		return fmt.Errorf("reading the images records reference (nothing removed): %w", err)
	}
	store := imageStore(cfg)
	if c.Bool("imported") {
		list, err := store.List()
		if err != nil {
			return err
		}
		for _, i := range list {
			if i.Imported && len(refs[i.Digest]) == 0 {
				if err := store.Unpin(i.Digest); err != nil {
					return err
				}
			}
		}
	}
	grace := c.Duration("grace")
	if grace <= 0 {
		grace = time.Nanosecond
	}
	m := container.New(container.Options{DataDir: cfg.DataDir, Images: store, ImageGrace: grace})
	res, err := m.SweepImages(c.Context, func() (map[string]bool, error) {
		keep := map[string]bool{}
		for d := range refs {
			keep[d] = true
		}
		return keep, nil
	})
	if c.Bool("json") {
		if perr := printJSON(c.App.Writer, res); perr != nil {
			return perr
		}
	} else {
		fmt.Fprintf(c.App.Writer, "removed %d tar images, %d blobs, %d layers, %d leftovers: %s\n",
			len(res.Images), len(res.Blobs), len(res.Layers), res.Temporary, mib(res.Bytes))
	}
	return err
}

func imageImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("image import: give one FILE (an OCI layout directory or tar, or a docker save archive)")
	}
	cfg := configFrom(c)
	got, err := imageStore(cfg).Import(c.Context, c.Args().First())
	if c.Bool("json") {
		if got == nil {
			got = []images.Imported{}
		}
		if perr := printJSON(c.App.Writer, got); perr != nil {
			return perr
		}
	} else {
		for _, i := range got {
			fmt.Fprintf(c.App.Writer, "imported sha256:%s %s\n", i.Digest, i.Name)
		}
	}
	return err
}
