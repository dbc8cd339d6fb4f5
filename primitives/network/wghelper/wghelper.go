// Package wghelper runs a userspace WireGuard device (wireguard-go) in
// a process of its own: `provisiond wireguard --interface NAME`, started
// by the network manager inside a network's namespace. The device lives
// as long as that process, not the daemon's: a daemon restart or kill -9
// does not cut the network's tunnels, and the daemon re-attaches through
// the device's UAPI socket (/var/run/wireguard/NAME.sock), which wgctrl
// speaks. The process ends when its interface is deleted (the network is
// decommissioned) or on SIGTERM/SIGINT.
package wghelper

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/ipc"
	"golang.zx2c4.com/wireguard/tun"
)

// MTU is the interface's MTU: 1500 less the WireGuard and UDP/IPv4
// overhead, with room for IPv6 underlays.
const MTU = 1420

// Run creates the TUN interface name in the calling process's network
// namespace, serves its UAPI socket and forwards packets until ctx ends
// or the interface goes away.
func Run(ctx context.Context, name string) error {
	tdev, err := tun.CreateTUN(name, MTU)
	if err != nil {
		return fmt.Errorf("creating tun %s: %w", name, err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, name+": "))
	defer dev.Close()
	f, err := ipc.UAPIOpen(name)
	if err != nil {
		return fmt.Errorf("opening the uapi socket of %s: %w", name, err)
	}
	uapi, err := ipc.UAPIListen(name, f)
	if err != nil {
		return fmt.Errorf("listening on the uapi socket of %s: %w", name, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer uapi.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := uapi.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); dev.IpcHandle(c) }()
		}
	}()
	select {
	case <-ctx.Done():
		return nil
	case <-dev.Wait():
		return errors.New("device closed: its interface is gone")
	}
}
