package main

import (
	"context"
	"io"

	"github.com/edgeprov/provisiond/internal/version"
)

// newApp builds provisiond's command line: `run` and the read commands.
func newApp(stdout io.Writer) *app {
	jsonOpt := &option{name: "json", kind: kindSwitch, usage: "print JSON for scripts"}
	return &app{
		version: version.String(),
		stdout:  stdout,
		global:  globalOptions(),
		root: &command{
			name:    "provisiond",
			usage:   "node-local provisioning daemon and its inspection tool",
			options: []*option{{name: "version", alias: "v", kind: kindSwitch, usage: "print the version"}},
			subs: []*command{
				{
					name:    "run",
					usage:   "run the daemon",
					options: runOptions(),
					action:  func(ctx context.Context, in *invocation) error { return run(ctx, runConfigFrom(in)) },
				},
				{
					name:  "cache",
					usage: "inspect the reservations this node holds",
					subs: []*command{
						{
							name:  "ls",
							usage: "list reservations",
							options: []*option{
								{name: "state", kind: kindString, meta: "STATE", usage: "only this STATE (accepted, provisioning, deployed, error, deleting, deleted)"},
								{name: "type", kind: kindString, meta: "TYPE", usage: "only this TYPE (network, volume, container)"},
								{name: "user", kind: kindString, meta: "USER", usage: "only this USER id"},
								jsonOpt,
							},
							action: withReader(cacheLs),
						},
						{name: "show", usage: "show one reservation, its verified result and its history", args: "ID", options: []*option{jsonOpt}, action: withReader(cacheShow)},
						{name: "export", usage: "write every record as JSON lines (backups, support)", action: withReader(cacheExport)},
					},
				},
				{name: "stats", usage: "show used vs capacity per unit and workload counts", options: []*option{jsonOpt}, action: withReader(showStats)},
				{name: "status", usage: "show the daemon's state, cursor, outbox depth and last poll error", options: []*option{jsonOpt}, action: withReader(showStatus)},
				{
					name:  "key",
					usage: "the node's identity",
					subs:  []*command{{name: "show", usage: "print the node ID and public key", options: []*option{jsonOpt}, action: keyShow}},
				},
				{
					name:  "version",
					usage: "print the version",
					action: func(_ context.Context, in *invocation) error {
						_, err := io.WriteString(in.stdout, "provisiond "+version.String()+"\n")
						return err
					},
				},
			},
		},
	}
}
