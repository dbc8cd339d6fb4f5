// Command provctl is the user's tool for an explorer: create a key, build,
// sign and submit reservations, list them, watch their verified results and
// sign deletes. The command line lives in package explorer/provctl.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/edgeprov/provisiond/explorer/provctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := provctl.Run(ctx, os.Args, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "provctl:", err)
		os.Exit(1)
	}
}
