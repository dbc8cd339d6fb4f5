package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeprov/provisiond/internal/harness"
	"github.com/edgeprov/provisiond/internal/testutil"
	"github.com/edgeprov/provisiond/provision"
)

func TestMain(m *testing.M) { harness.Main(m) }

const (
	within       = 2 * time.Minute
	underlayNet  = "10.99.0.0/24"
	upstreamIP   = "10.99.0.1"
	laptopIP     = "10.99.0.2"
	explorerPort = 8080
)

// nodeIP is the underlay (public) address of node i (from 1).
func nodeIP(i int) string { return fmt.Sprintf("10.99.0.%d", 10+i) }

// requiresLab skips unless the lab tests were asked for, and needs root
// and the commands the lab runs.
func requiresLab(t testing.TB) {
	t.Helper()
	if os.Getenv("PROVISIOND_LAB_TEST") == "" {
		t.Skip("skipping: builds a multi-node lab in namespaces; run `make lab-test` (sets PROVISIOND_LAB_TEST=1)")
	}
	testutil.RequiresRoot(t)
	for _, c := range []string{"unshare", "nsenter", "runc", "busybox", "sleep"} {
		testutil.RequiresCommand(t, c)
	}
}

// holder is a long-lived process holding namespaces.
type holder struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func (h *holder) pid() int { return h.cmd.Process.Pid }

// netnsPath is the path of the holder's network namespace.
func (h *holder) netnsPath() string { return fmt.Sprintf("/proc/%d/ns/net", h.pid()) }

// path returns p as the holder sees it (inside its mount namespace).
func (h *holder) path(p string) string { return fmt.Sprintf("/proc/%d/root%s", h.pid(), p) }

// startHolder starts `unshare` with args holding namespaces until the
// test ends; mountNS covers /run/netns and /run/wireguard with tmpfs in a
// private mount namespace first.
func startHolder(t testing.TB, name string, mountNS bool) *holder {
	t.Helper()
	args := []string{"--net", "sleep", "infinity"}
	if mountNS {
		script := `set -e; mkdir -p /run/netns /run/wireguard
mount -t tmpfs -o mode=0755 lab-netns /run/netns
mount -t tmpfs -o mode=0700 lab-wireguard /run/wireguard
exec sleep infinity`
		args = []string{"--net", "--mount", "--propagation", "private", "sh", "-c", script}
	}
	cmd := exec.Command("unshare", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting holder %s: %v", name, err)
	}
	h := &holder{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(h.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-h.done
	})
	// A minute: a new network namespace waits for the kernel to finish
	// destroying the ones other tests dropped.
	harness.Eventually(t, time.Minute, "holder "+name, func() error {
		select {
		case <-h.done:
			return harness.Permanent(fmt.Errorf("holder %s exited: %s", name, stderr.String()))
		default:
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.pid()))
		if err != nil || strings.TrimSpace(string(comm)) != "sleep" {
			return fmt.Errorf("not ready: %q %v", comm, err)
		}
		return nil
	})
	return h
}

// inNetns runs fn on a locked thread inside the network namespace at
// path; sockets fn opens stay in that namespace.
func inNetns(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening %s: %w", path, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering %s: %w", path, err)
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr != nil {
			errc <- errors.Join(err, serr) // the thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// handleIn returns a netlink handle in the namespace at path.
func handleIn(t testing.TB, path string) *netlink.Handle {
	t.Helper()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// server is a TCP server in some namespace that answers every connection
// with its name and the address the connection came from, then echoes.
type server struct {
	ln   net.Listener
	wg   sync.WaitGroup
	name string

	mu     sync.Mutex
	conns  map[net.Conn]bool // open connections, closed when the test ends
	closed bool              // the test ended
}

// serve listens on addr inside the namespace at nsPath until the test
// ends.
func serve(t testing.TB, nsPath, addr, name string) *server {
	t.Helper()
	return serveWith(t, nsPath, addr, name, func(c net.Conn) {
		fmt.Fprintf(c, "%s %s\n", name, c.RemoteAddr().(*net.TCPAddr).IP)
		_, _ = io.Copy(c, c)
	})
}

// serveWith is serve with handle for each connection, which is closed
// after.
func serveWith(t testing.TB, nsPath, addr, name string, handle func(net.Conn)) *server {
	t.Helper()
	s := &server{name: name, conns: map[net.Conn]bool{}}
	err := inNetns(nsPath, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, nsPath, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				c.Close()
				return
			}
			s.conns[c] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, c)
					s.mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	// A client's close can be lost (a FIN sent while a tunnel was being
	// set up, given up after its retries): the connections still open
	// are closed, so that no handler waits for it forever.
	t.Cleanup(func() {
		s.ln.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			t.Logf("server %s: connection from %s still open at the end of the test: closed", name, c.RemoteAddr())
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// dialIn connects from the namespace at nsPath to addr.
func dialIn(nsPath, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(nsPath, func() error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	})
	return c, err
}

// hello connects from nsPath to addr and returns the server's first
// line: its name and the source address it saw.
func hello(nsPath, addr string, timeout time.Duration) (string, error) {
	c, err := dialIn(nsPath, addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	line, err := readLine(c)
	return strings.TrimSpace(line), err
}

func readLine(r io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 256 {
		if _, err := r.Read(one); err != nil {
			return string(b), err
		}
		if one[0] == '\n' {
			return string(b), nil
		}
		b = append(b, one[0])
	}
	return string(b), errors.New("line too long")
}

// mustReach waits until hello from nsPath to addr answers and returns it.
func mustReach(t testing.TB, what, nsPath, addr string) string {
	t.Helper()
	var got string
	harness.Eventually(t, 30*time.Second, what, func() error {
		var err error
		got, err = hello(nsPath, addr, 2*time.Second)
		return err
	})
	return got
}

// mustNotReach checks that a connection from nsPath to addr fails.
func mustNotReach(t testing.TB, what, nsPath, addr string) {
	t.Helper()
	if got, err := hello(nsPath, addr, 2*time.Second); err == nil {
		t.Errorf("%s: %s answered %q; want no connection", what, addr, got)
	}
}

// lab is the machine's lab: an underlay, an upstream, a laptop, nodes.
type lab struct {
	dir      string
	underlay *holder
	upstream *holder
	laptop   *holder
	nodes    []*node
	explorer *harness.Process
}

// startIn starts bin with args inside namespaces with nsenter (enter are
// its namespace flags).
func startIn(t testing.TB, name, logPath string, enter []string, bin string, args ...string) *harness.Process {
	t.Helper()
	return harness.StartProcess(t, name, logPath, "nsenter", append(append(append([]string{}, enter...), "--", bin), args...)...)
}

// node is a lab node: a holder and its provisiond.
type node struct {
	i      int
	dir    string
	hold   *holder
	daemon *harness.Process
	args   []string
	plain  bool
}

// newLab builds the underlay, upstream, laptop and n nodes, and starts
// explorerd in the upstream namespace; nodes are started by startNodes.
func newLab(t testing.TB, n int) *lab {
	t.Helper()
	l := &lab{dir: t.TempDir()}
	l.underlay = startHolder(t, "underlay", false)
	uh := handleIn(t, l.underlay.netnsPath())
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := uh.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if err := uh.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	l.upstream = startHolder(t, "upstream", false)
	l.attach(t, "up", l.upstream, upstreamIP, "")
	l.laptop = startHolder(t, "laptop", false)
	l.attach(t, "lt", l.laptop, laptopIP, upstreamIP)
	for i := 1; i <= n; i++ {
		nd := &node{i: i, dir: filepath.Join(l.dir, fmt.Sprintf("node%d", i))}
		if err := os.MkdirAll(nd.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		nd.hold = startHolder(t, fmt.Sprintf("node%d", i), true)
		l.attach(t, fmt.Sprintf("n%d", i), nd.hold, nodeIP(i), upstreamIP)
		l.nodes = append(l.nodes, nd)
		t.Cleanup(func() { nd.cleanup(t) })
	}
	l.startExplorer(t)
	return l
}

// attach links the namespace of h to the underlay bridge, as eth0 with
// ip/24 and a default route via gw (none when gw is empty).
func (l *lab) attach(t testing.TB, port string, h *holder, ip, gw string) {
	t.Helper()
	uh := handleIn(t, l.underlay.netnsPath())
	ns, err := netns.GetFromPath(h.netnsPath())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	br, err := uh.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: port, MasterIndex: br.Attrs().Index}, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns)}
	if err := uh.LinkAdd(veth); err != nil {
		t.Fatalf("adding %s: %v", port, err)
	}
	p, err := uh.LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	if err := uh.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
	hh := handleIn(t, h.netnsPath())
	for _, name := range []string{"lo", "eth0"} {
		link, err := hh.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if name == "eth0" {
			addr, err := netlink.ParseAddr(ip + "/24")
			if err != nil {
				t.Fatal(err)
			}
			if err := hh.AddrAdd(link, addr); err != nil {
				t.Fatal(err)
			}
		}
		if err := hh.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
	}
	if gw != "" {
		eth, _ := hh.LinkByName("eth0")
		if err := hh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
			t.Fatalf("default route of %s: %v", h.name, err)
		}
	}
}

func (l *lab) explorerURL() string { return fmt.Sprintf("http://%s:%d", upstreamIP, explorerPort) }

func (l *lab) startExplorer(t testing.TB) {
	t.Helper()
	l.explorer = startIn(t, "explorerd", filepath.Join(l.dir, "explorerd.log"),
		[]string{"--net=" + l.upstream.netnsPath()}, harness.Bin(t, "explorerd"),
		"--listen", fmt.Sprintf("%s:%d", upstreamIP, explorerPort), "--data-dir", filepath.Join(l.dir, "explorer"), "--log-format", "json")
	t.Cleanup(func() {
		start := time.Now()
		l.explorer.Stop(t)
		t.Logf("explorerd stopped in %s", time.Since(start).Round(time.Millisecond))
	})
	harness.Eventually(t, 30*time.Second, "explorerd listening", func() error {
		if l.explorer.Exited() {
			return harness.Permanent(fmt.Errorf("explorerd exited:\n%s", l.explorer.Log()))
		}
		c, err := dialIn(l.upstream.netnsPath(), fmt.Sprintf("%s:%d", upstreamIP, explorerPort), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

func (nd *node) global() []string {
	return []string{"--config", os.DevNull, "--data-dir", filepath.Join(nd.dir, "data"), "--socket", filepath.Join(nd.dir, "provisiond.sock")}
}

func (nd *node) bin(t testing.TB) string {
	if nd.plain {
		return harness.PlainBin(t, "provisiond")
	}
	return harness.Bin(t, "provisiond")
}

// enter is nsenter's arguments for the node's holder namespaces.
func (nd *node) enter() []string {
	return []string{"--target", strconv.Itoa(nd.hold.pid()), "--net", "--mount"}
}

// start (re)starts the node's provisiond inside its holder's namespaces
// and waits until its admin socket answers.
func (nd *node) start(t testing.TB, explorer string) {
	t.Helper()
	args := append(nd.global(), "--log-format", "json", "run", "--explorer", explorer,
		"--metrics-listen", "127.0.0.1:9109", "--poll-wait", "2s", "--resync", "2s",
		"--local-images", harness.LocalImages(), "--uplink", "eth0")
	args = append(args, nd.args...)
	nd.daemon = startIn(t, fmt.Sprintf("provisiond %d", nd.i), filepath.Join(nd.dir, "provisiond.log"), nd.enter(), nd.bin(t), args...)
	harness.Eventually(t, 60*time.Second, "provisiond admin socket", func() error {
		if nd.daemon.Exited() {
			return harness.Permanent(fmt.Errorf("provisiond %d exited:\n%s", nd.i, nd.daemon.Log()))
		}
		_, err := nd.cli(t, "status")
		return err
	})
}

// cli runs a provisiond read command against the node.
func (nd *node) cli(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return harness.Command(nd.bin(t), nil, append(nd.global(), args...)...)
}

// id returns the node ID.
func (nd *node) id(t testing.TB) string {
	t.Helper()
	return harness.NodeID(t, nd.cli)
}

// runc runs runc on the node's root inside its mount namespace.
func (nd *node) runc(args ...string) (string, error) {
	a := append(nd.enter(), "--", "runc", "--root", filepath.Join(nd.dir, "data", "runc"))
	return harness.Command("nsenter", nil, append(a, args...)...)
}

// containers returns the runc containers of the node.
func (nd *node) containers(t testing.TB) []string {
	t.Helper()
	out, err := nd.runc("list", "-q")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// netnsPath is the path of a named network namespace of the node.
func (nd *node) netnsPath(name string) string { return nd.hold.path("/run/netns/" + name) }

// containerNetns is the path of container id's network namespace.
func (nd *node) containerNetns(id string) string { return nd.netnsPath(provision.Prefix + "c-" + id) }

// cleanup stops the daemon, removes its containers and kills what else
// runs in the node's mount namespace (its wireguard helpers, which
// outlive the daemon on purpose), so the holder's namespaces die with it.
func (nd *node) cleanup(t testing.TB) {
	start := time.Now()
	nd.daemon.Stop(t)
	stopped := time.Since(start)
	defer func() {
		t.Logf("node %d: daemon stopped in %s, cleaned up in %s", nd.i, stopped.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}()
	out, _ := nd.runc("list", "-q")
	for _, c := range strings.Fields(out) {
		if _, err := nd.runc("delete", "--force", c); err != nil {
			t.Errorf("deleting container %s of node %d: %v", c, nd.i, err)
		}
	}
	for _, pid := range nd.processes(t) {
		if pid != nd.hold.pid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// processes returns the pids of the processes in the node's mount
// namespace (the holder among them).
func (nd *node) processes(t testing.TB) []int {
	t.Helper()
	want, err := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", nd.hold.pid()))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if got, err := nsIno(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && got == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// newUser returns a provctl user whose commands run in the laptop
// namespace.
func (l *lab) newUser(t testing.TB) *harness.User {
	t.Helper()
	u := harness.NewUser(t, l.explorerURL())
	u.Wrap = []string{"nsenter", "--net=" + l.laptop.netnsPath(), "--"}
	return u
}
