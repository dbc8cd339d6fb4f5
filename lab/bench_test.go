package lab

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeprov/provisiond/internal/fixture"
	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/provision"
)

// transfer sends size bytes from nsPath to addr and returns the rate in
// MB/s (10^6 bytes).
func transfer(t testing.TB, nsPath, addr string, size int64) float64 {
	t.Helper()
	c, err := dialIn(nsPath, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	start := time.Now()
	for sent := int64(0); sent < size; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the receiver to have read everything: it closes after EOF.
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	return float64(size) / time.Since(start).Seconds() / 1e6
}

// BenchmarkTunnelThroughput measures TCP throughput between containers on
// two lab nodes over their WireGuard network (userspace wireguard-go, in
// its helper processes), side by side with the same transfer over the
// plain underlay between the two nodes, in one run; it reports both rates
// and their ratio. Daemons and helpers are built as `make build` builds
// them (no -race).
func BenchmarkTunnelThroughput(b *testing.B) {
	requiresLab(b)
	image, digest := fixture.Busybox(b)
	l := newLab(b, 2)
	for _, nd := range l.nodes {
		nd.plain = true
		nd.start(b, l.explorerURL())
	}
	ids := []string{l.nodes[0].id(b), l.nodes[1].id(b)}
	alice := l.newUser(b)
	out, err := alice.Run(b, "network", "create", "--name", "bench", "--ip-range", "10.250.0.0/16",
		"--member", ids[0]+"=10.250.1.0/24@"+nodeIP(1), "--member", ids[1]+"=10.250.2.0/24@"+nodeIP(2),
		"--access", "10.250.254.2/32", "--duration", "1h")
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range strings.Fields(out) {
		alice.WaitResult(b, id, provision.StateOk, within)
	}
	var ns []string
	for i := range 2 {
		id := alice.Reserve(b, "container", append([]string{"--node", ids[i], "--network", "bench", "--ip", fmt.Sprintf("10.250.%d.10", i+1)}, sleeper(image, digest)...)...)
		alice.WaitResult(b, id, provision.StateOk, within)
		ns = append(ns, l.nodes[i].containerNetns(id))
	}
	serveWith(b, ns[1], "0.0.0.0:5001", "sink", func(c net.Conn) { drain(c) })
	serveWith(b, l.nodes[1].hold.netnsPath(), nodeIP(2)+":5001", "sink", func(c net.Conn) { drain(c) })
	harness.Eventually(b, 30*time.Second, "the tunnel is up", func() error {
		c, err := dialIn(ns[0], "10.250.2.10:5001", 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})

	const size = 128 << 20
	var tunnel, underlay float64
	b.ResetTimer()
	for range b.N {
		tunnel += transfer(b, ns[0], "10.250.2.10:5001", size)
		underlay += transfer(b, l.nodes[0].hold.netnsPath(), nodeIP(2)+":5001", size)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(tunnel/n, "tunnel-MB/s")
	b.ReportMetric(underlay/n, "underlay-MB/s")
	b.ReportMetric(tunnel/underlay, "tunnel/underlay")
}

// drain reads a connection to its end, then closes it.
func drain(c io.ReadWriteCloser) { _, _ = io.Copy(io.Discard, c) }

// BenchmarkNetworksRSS reserves 10, then 100 WireGuard networks on one
// lab node and reports the memory of its daemon plus its network
// helpers (one wireguard-go process per network), in MB, and per
// network: the resident set, and the proportional set, which counts the
// executable the daemon and its helpers share once.
func BenchmarkNetworksRSS(b *testing.B) {
	requiresLab(b)
	for _, count := range []int{10, 100} {
		b.Run(strconv.Itoa(count), func(b *testing.B) {
			l := newLab(b, 1)
			nd := l.nodes[0]
			nd.plain = true
			nd.start(b, l.explorerURL())
			id := nd.id(b)
			alice := l.newUser(b)
			var res []string
			var mu sync.Mutex
			var wg sync.WaitGroup
			sem := make(chan struct{}, 4)
			for i := range count {
				wg.Add(1)
				sem <- struct{}{}
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					out, err := alice.Run(b, "network", "create", "--name", fmt.Sprintf("n%d", i), "--ip-range", fmt.Sprintf("10.%d.0.0/16", 100+i),
						"--member", fmt.Sprintf("%s=10.%d.1.0/24@%s", id, 100+i, nodeIP(1)), "--port", strconv.Itoa(40000+i),
						"--access", fmt.Sprintf("10.%d.254.2/32", 100+i), "--duration", "1h")
					if err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					res = append(res, strings.TrimSpace(out))
					mu.Unlock()
				}()
			}
			wg.Wait()
			if b.Failed() {
				return
			}
			for _, r := range res {
				alice.WaitResult(b, r, provision.StateOk, within)
			}
			b.ResetTimer()
			var all, helpers mem
			for range b.N {
				d, h, n := nodeRSS(b, nd)
				if n != count {
					b.Fatalf("%d wireguard helpers, want %d", n, count)
				}
				all = all.add(d).add(h)
				helpers = helpers.add(h)
			}
			b.StopTimer()
			runs := float64(b.N)
			b.ReportMetric(all.rss/runs, "MB-rss")
			b.ReportMetric(helpers.rss/runs/float64(count), "MB-rss/helper")
			b.ReportMetric(all.pss/runs, "MB-pss")
			b.ReportMetric(helpers.pss/runs/float64(count), "MB-pss/helper")
		})
	}
}

// nodeRSS returns the memory (MB) of node nd's daemon and of its
// wireguard helpers, and the number of helpers. Each figure is a mem: the
// resident set (Rss), which counts the executable's pages in every
// process that maps them, and the proportional set (Pss), which shares
// them out, so summing it over processes gives what they use together.
func nodeRSS(t testing.TB, nd *node) (daemon, helpers mem, n int) {
	t.Helper()
	daemon = memOf(t, nd.daemon.PID())
	want, err := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", nd.hold.pid()))
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !strings.Contains(string(cmdline), "wireguard\x00--interface") {
			continue
		}
		if got, err := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err != nil || got != want {
			continue // another node's helper
		}
		helpers = helpers.add(memOf(t, pid))
		n++
	}
	return daemon, helpers, n
}

// mem is a process's resident (Rss) and proportional (Pss) set size, in
// MB.
type mem struct{ rss, pss float64 }

func (m mem) add(o mem) mem { return mem{m.rss + o.rss, m.pss + o.pss} }

// memOf reads pid's Rss and Pss from /proc/PID/smaps_rollup.
func memOf(t testing.TB, pid int) mem {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var m mem
	fields := map[string]*float64{"Rss:": &m.rss, "Pss:": &m.pss}
	seen := 0
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line) // "Rss:", "19744", "kB"
		if len(f) != 3 || fields[f[0]] == nil {
			continue
		}
		kb, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			t.Fatalf("smaps_rollup of %d: %q: %v", pid, line, err)
		}
		*fields[f[0]] = kb / 1024
		seen++
	}
	if seen != len(fields) {
		t.Fatalf("smaps_rollup of %d: no Rss or Pss:\n%s", pid, b)
	}
	return m
}

// nsIno identifies a namespace file by device and inode.
func nsIno(path string) ([2]uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return [2]uint64{}, err
	}
	return [2]uint64{st.Dev, st.Ino}, nil
}
