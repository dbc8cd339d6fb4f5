// Command explorerd is the reference explorer for provisiond nodes: it
// registers nodes, accepts user-signed reservations, serves the nodes by
// long-poll and stores their signed results and stats (docs/explorer-api.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp().RunContext(ctx, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "explorerd:", err)
		os.Exit(1)
	}
}
