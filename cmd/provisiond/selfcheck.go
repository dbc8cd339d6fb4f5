package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/rs/zerolog"
	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/internal/selfcheck"
	"github.com/edgeprov/provisiond/primitives/network"
)

// checkOptions points the self-check at what the primitives of cfg use:
// mounts go below the data directory (volumes, container root
// filesystems) and into /run/netns (network namespaces), and volume
// images live on disk below the data directory.
func checkOptions(cfg *config, by string) selfcheck.Options {
	return selfcheck.Options{
		By:        by,
		ProbeDirs: []string{cfg.DataDir, network.NamespaceDir},
		Scratch:   cfg.DataDir,
	}
}

// logChecks logs each check: a failure at error level with its fix, a
// warning at warn level, a pass at info level.
func logChecks(log zerolog.Logger, rep *selfcheck.Report) {
	for _, r := range rep.Results {
		var ev *zerolog.Event
		switch r.Status {
		case selfcheck.OK:
			ev = log.Info()
		case selfcheck.Warn:
			ev = log.Warn()
		default:
			ev = log.Error()
		}
		ev = ev.Str("check", r.Name).Str("status", string(r.Status)).Str("detail", r.Detail)
		if r.Fix != "" {
			ev = ev.Str("fix", r.Fix).Strs("affects", r.Affects)
		}
		ev.Msg("self-check")
	}
}

// printChecks writes the self-check part of `provisiond status`.
func printChecks(w io.Writer, rep *selfcheck.Report) error {
	by := "by the daemon at its start"
	if rep.By != "daemon" {
		by = "by this command, as this user and in its mount namespace: no daemon runs"
	}
	summary := "all passed"
	var failed, warned int
	for _, r := range rep.Results {
		switch r.Status {
		case selfcheck.Failed:
			failed++
		case selfcheck.Warn:
			warned++
		}
	}
	if failed+warned > 0 {
		summary = fmt.Sprintf("%d failed, %d warned", failed, warned)
	}
	if _, err := fmt.Fprintf(w, "\nself-check: %s (run %s, %s)\n", summary, ts(rep.At), by); err != nil {
		return err
	}
	for _, r := range rep.Results {
		status := strings.ToUpper(string(r.Status))
		if r.Status == selfcheck.OK {
			status = "ok"
		}
		fmt.Fprintf(w, "  %-6s  %-17s  %s\n", status, r.Name, r.Detail)
		if r.Fix != "" {
			fmt.Fprintf(w, "  %-6s  %-17s  fix: %s\n", "", "", r.Fix)
			fmt.Fprintf(w, "  %-6s  %-17s  affects: %s\n", "", "", strings.Join(r.Affects, ", "))
		}
	}
	return nil
}

// checksFlag is `status --checks`.
func checksFlag() cli.Flag {
	return &cli.BoolFlag{Name: "checks", Value: true,
		Usage: "when no daemon runs, run the self-check from this command (as root: it attaches a loop device and mounts a tmpfs for a moment); --checks=false skips it"}
}

// statusCmd is `provisiond status`. On a node where the daemon never ran
// there is no status to read, but the self-check still tells the operator
// whether it can run: it is printed before the error.
func statusCmd(c *cli.Context) error {
	cfg := configFrom(c)
	r, closeFn, err := openReader(c.Context, cfg)
	if errors.Is(err, errNoDatabase) && c.Bool("checks") {
		rep := selfcheck.Run(c.Context, checkOptions(cfg, "cli"))
		var perr error
		if c.Bool("json") {
			perr = printJSON(c.App.Writer, struct {
				Checks *selfcheck.Report `json:"checks"`
			}{rep})
		} else {
			perr = printChecks(c.App.Writer, rep)
		}
		return errors.Join(err, perr)
	}
	if err != nil {
		return err
	}
	defer closeFn()
	return showStatus(c, r)
}
