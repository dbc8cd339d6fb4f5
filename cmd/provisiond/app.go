package main

import (
	"io"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/edgeprov/provisiond/internal/version"
	"github.com/edgeprov/provisiond/primitives/network/wghelper"
)

// withGlobal returns flags followed by a fresh copy of the global flags.
func withGlobal(flags ...cli.Flag) []cli.Flag { return append(flags, globalFlags()...) }

func newApp(stdout, stderr io.Writer) *cli.App {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	return &cli.App{
		Name:                 "provisiond",
		Usage:                "node-local provisioning daemon and its inspection tool",
		Version:              version.String(),
		Writer:               stdout,
		ErrWriter:            stderr,
		Flags:                globalFlags(),
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints the error once
		Commands: []*cli.Command{
			{
				Name:   "run",
				Usage:  "run the daemon",
				Flags:  append(runFlags(), globalFlags()...),
				Action: func(c *cli.Context) error { return run(c.Context, configFrom(c)) },
			},
			{
				Name:  "cache",
				Usage: "inspect the reservations this node holds",
				Subcommands: []*cli.Command{
					{
						Name:  "ls",
						Usage: "list reservations",
						Flags: append([]cli.Flag{
							&cli.StringFlag{Name: "state", Usage: "only this `STATE` (accepted, provisioning, deployed, error, deleting, deleted)"},
							&cli.StringFlag{Name: "type", Usage: "only this `TYPE` (network, volume, container)"},
							&cli.StringFlag{Name: "user", Usage: "only this `USER` id"},
							jsonFlag,
						}, globalFlags()...),
						Action: withReader(cacheLs),
					},
					{Name: "show", Usage: "show one reservation, its verified result and its history", ArgsUsage: "ID", Flags: withGlobal(jsonFlag), Action: withReader(cacheShow)},
					{Name: "export", Usage: "write every record as JSON lines (backups, support)", Flags: withGlobal(), Action: withReader(cacheExport)},
				},
			},
			imageCommand(jsonFlag),
			{Name: "stats", Usage: "show used vs capacity per unit and workload counts", Flags: withGlobal(jsonFlag), Action: withReader(showStats)},
			{Name: "status", Usage: "show the daemon's state, cursor, outbox depth, last poll error and self-check", Flags: withGlobal(jsonFlag, checksFlag()), Action: statusCmd},
			{
				Name:        "key",
				Usage:       "the node's identity",
				Subcommands: []*cli.Command{{Name: "show", Usage: "print the node ID and public key", Flags: withGlobal(jsonFlag), Action: keyShow}},
			},
			{
				Name:   "wireguard",
				Usage:  "run one network's userspace WireGuard device (started by the daemon inside the network's namespace)",
				Hidden: true,
				Flags:  []cli.Flag{&cli.StringFlag{Name: "interface", Usage: "interface `NAME`", Required: true}},
				Action: func(c *cli.Context) error {
					ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
					defer stop()
					signal.Ignore(syscall.SIGHUP)
					return wghelper.Run(ctx, c.String("interface"))
				},
			},
			{
				Name:  "version",
				Usage: "print the version",
				Action: func(c *cli.Context) error {
					_, err := io.WriteString(c.App.Writer, "provisiond "+version.String()+"\n")
					return err
				},
			},
		},
	}
}
