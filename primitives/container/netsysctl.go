package container

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// nsSysctls are set in a network namespace the Network made before a
// container joins it. That namespace belongs to the node's user namespace,
// so the capabilities a container holds in its own (CAP_NET_BIND_SERVICE,
// CAP_NET_RAW) do not count there: without these a tenant could not listen
// on port 80 or ping. Ports from 0 need no capability, and ICMP echo
// datagram sockets ("ping sockets") are open to every group.
var nsSysctls = []struct{ path, value string }{
	{"/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"},
	{"/proc/sys/net/ipv4/ping_group_range", "0 2147483647"},
}

// setNetSysctls writes nsSysctls in the network namespace at nsPath. It
// runs on a thread of its own that enters the namespace and is thrown away
// afterwards (a goroutine that ends locked to its thread ends the thread).
func setNetSysctls(nsPath string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with us
		ns, err := os.Open(nsPath)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", nsPath, err)
			return
		}
		for _, s := range nsSysctls {
			if err := os.WriteFile(s.path, []byte(s.value), 0); err != nil {
				errc <- fmt.Errorf("setting %s in %s: %w", s.path, nsPath, err)
				return
			}
		}
		errc <- nil
	}()
	return <-errc
}
